"""Does LMDeploy serve our InternVL2 the way our own code runs it? (GPU only)

For one model directory, a fixed picture and a fixed question, this runs greedy decoding twice:
with the kit's transformers implementation (the directory's own code) and with LMDeploy's
PyTorch engine (LMDeploy's own InternVL implementation, which reads only config.json and the
weights). It prints both token sequences, whether they are equal, and what loading cost: wall
time and GPU memory. Each side runs in its own process so that memory figures do not mix.

    python benchmarks/lmdeploy_parity.py --model work_dirs/models/internvl2-tiny
    python benchmarks/lmdeploy_parity.py --model DIR --json out.json

LMDeploy's engine spawns processes, hence the ``__main__`` guard.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from report import ChildFailed, emit_result, run_child

QUESTION = "请描述这张图片。"


def picture():
    from internvl_course.data.drawing import Piece, Scene, render

    return render(Scene(pieces=(Piece("circle", "red", 3), Piece("triangle", "yellow", 2)), plate_colour="white",
                        tableware=("pair of chopsticks",)), seed=7)


def run_ours(model: str, dtype: str, tokens: int) -> dict:
    import torch
    import torchvision.transforms as T

    from internvl_course.model.load import load_model

    torch_dtype = getattr(torch, dtype)
    torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    net, tokenizer = load_model(model, dtype=torch_dtype, device="cuda")
    torch.cuda.synchronize()
    load_s = time.perf_counter() - start
    weights_gb = torch.cuda.memory_allocated() / 2**30
    # One 448 px tile, as InternVL's dynamic tiling gives for a square 448 px picture.
    transform = T.Compose([T.Resize((448, 448), interpolation=T.InterpolationMode.BICUBIC), T.ToTensor(),
                           T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])
    pixel_values = transform(picture())[None].to("cuda", torch_dtype)
    generated = {}
    original = net.generate

    def recording_generate(*args, **kwargs):
        out = original(*args, **kwargs)
        generated["ids"] = out[0].tolist()
        return out

    net.generate = recording_generate
    start = time.perf_counter()
    with torch.no_grad():
        text = net.chat(tokenizer, pixel_values, QUESTION, dict(max_new_tokens=tokens, do_sample=False))
    torch.cuda.synchronize()
    # generate() keeps the stop token it ended on; LMDeploy's token_ids leave it out.
    stops = net.generation_config.eos_token_id
    stops = set(stops if isinstance(stops, list) else [stops])
    ids = generated["ids"]
    while ids and ids[-1] in stops:
        ids = ids[:-1]
    return {"engine": "transformers (the model's own code)", "ids": ids, "text": text,
            "load_s": round(load_s, 2), "weights_gib": round(weights_gb, 3),
            "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 3),
            "generate_s": round(time.perf_counter() - start, 3)}


def run_lmdeploy(model: str, dtype: str, tokens: int) -> dict:
    import torch
    from lmdeploy import GenerationConfig, PytorchEngineConfig, pipeline

    free_before, total = torch.cuda.mem_get_info()
    start = time.perf_counter()
    # A small KV-cache share, so that the memory figure says what the weights need.
    from internvl_course.model.prepare import prepared_folder

    pipe = pipeline(str(prepared_folder(model, "LMDeploy")), backend_config=PytorchEngineConfig(dtype=dtype, session_len=4096, cache_max_entry_count=0.05),
                    trust_remote_code=True, log_level="ERROR")
    load_s = time.perf_counter() - start
    free_after, _ = torch.cuda.mem_get_info()
    start = time.perf_counter()
    # Picture first, question second: the order InternVL's chat() uses.
    response = pipe((picture(), QUESTION), gen_config=GenerationConfig(max_new_tokens=tokens, do_sample=False))
    result = {"engine": "lmdeploy pytorch engine", "ids": list(response.token_ids), "text": response.text,
              "load_s": round(load_s, 2), "gpu_used_gib": round((free_before - free_after) / 2**30, 3),
              "generate_s": round(time.perf_counter() - start, 3)}
    pipe.close()
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="work_dirs/models/internvl2-tiny")
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16"])
    parser.add_argument("--tokens", type=int, default=32, help="new tokens to generate greedily")
    parser.add_argument("--stage", choices=["ours", "lmdeploy"], help=argparse.SUPPRESS)
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()

    import torch

    if not torch.cuda.is_available():
        print("This check needs a CUDA GPU (LMDeploy's engines do); none is visible here.", file=sys.stderr)
        return 2
    if args.stage:
        run = run_ours if args.stage == "ours" else run_lmdeploy
        emit_result(run(args.model, args.dtype, args.tokens))
        return 0

    results = {}
    for stage in ("ours", "lmdeploy"):
        cmd = [sys.executable, __file__, "--model", args.model, "--dtype", args.dtype, "--tokens", str(args.tokens),
               "--stage", stage]
        try:
            results[stage] = run_child(cmd)
        except ChildFailed as err:
            print(f"{stage} failed: {err}", file=sys.stderr)
            return 1
    ours, lmd = results["ours"]["ids"], results["lmdeploy"]["ids"]
    n = min(len(ours), len(lmd))
    agree = next((i for i in range(n) if ours[i] != lmd[i]), n)
    summary = {"model": str(Path(args.model)), "dtype": args.dtype, "gpu": torch.cuda.get_device_name(0),
               "torch": torch.__version__, "equal": ours == lmd, "agreeing_prefix": agree, **results}
    for stage, r in results.items():
        print(f"{r['engine']:<36} load {r['load_s']:>6.2f} s  generate {r['generate_s']:>6.3f} s  "
              f"{len(r['ids'])} tokens: {r['ids']}")
        print(f"{'':<36} text: {r['text']!r}")
    print(f"memory: ours weights {results['ours']['weights_gib']} GiB (peak {results['ours']['peak_gib']} GiB); "
          f"lmdeploy process used {results['lmdeploy']['gpu_used_gib']} GiB incl. its KV cache")
    print(f"greedy tokens equal: {ours == lmd} (first {agree} agree)")
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
