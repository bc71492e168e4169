"""Speed and memory of XTuner fine-tuning per preset, measured, plus convert and LMDeploy on the result.

    python benchmarks/finetune_presets.py --model DIR [--presets tutorial 24gb] [--iters 20]
                                          [--convert] [--lmdeploy] [--json out.json]

For each preset it trains ``--iters`` iterations through ``internvl_course.training`` (torchrun
and DeepSpeed ZeRO-2 on a GPU) on worst-case pictures: 1792 x 1344 px, which InternVL2's dynamic
tiling cuts into 12 tiles plus a thumbnail (fewer where the preset caps the tiles). From XTuner's
own log lines it reports seconds per iteration (median, first 3 left out), samples/s, tokens/s
(text tokens plus 256 image tokens per tile, counted the way the dataset builds each sample) and
peak GPU memory (mmengine's ``memory``: torch's max allocated, in MB). With ``--convert`` the
last preset's checkpoint is merged by ``internvl_course.convert`` (on the GPU), and with
``--lmdeploy`` the merged model answers a question through LMDeploy's PyTorch engine.

The train env is ``$INTERNVL_COURSE_TRAIN_PYTHON`` or ``.venv-train``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

SIZE = (1792, 1344)
QUESTION = "图中的菜是什么？\nA. 宫保鸡丁\nB. 白切鸡\nC. 龙井虾仁\nD. 虾饺"


def make_data(root: Path, samples: int) -> tuple[Path, Path]:
    """``samples`` large food pictures with one VQA turn each, in XTuner's LLaVA format."""
    from internvl_course.food import FOOD_DISHES, draw_dish

    (root / "img").mkdir(parents=True, exist_ok=True)
    items = []
    for i in range(samples):
        dish = FOOD_DISHES[i % len(FOOD_DISHES)]
        draw_dish(dish.zh, seed=i, size=SIZE[1]).resize(SIZE).save(root / "img" / f"{i}.jpg", quality=90)
        items.append({"image": f"{i}.jpg", "conversations": [
            {"from": "human", "value": QUESTION + "\n<image>"},
            {"from": "gpt", "value": f"{dish.zh}，图中的菜是{dish.zh}"}]})
    (root / "data.json").write_text(json.dumps(items, ensure_ascii=False), encoding="utf-8")
    return root / "data.json", root / "img"


def tokens_per_sample(model: Path, data_path: Path, max_tiles: int) -> float:
    """Mean tokens of a sample: the prompt and answer text, plus 256 per tile (thumbnail included)."""
    from transformers import AutoTokenizer

    from internvl_course.preprocess import num_tiles

    tokenizer = AutoTokenizer.from_pretrained(model, trust_remote_code=True)
    items = json.loads(data_path.read_text(encoding="utf-8"))
    tiles = num_tiles(*SIZE, max_num=max_tiles)
    counts = [len(tokenizer(" ".join(t["value"] for t in item["conversations"])).input_ids) + 256 * tiles
              for item in items]
    return statistics.mean(counts)


def measure(preset: str, model: Path, data: tuple[Path, Path], iters: int, root: Path) -> dict:
    from internvl_course import finetune, training

    config = finetune.write_config(root / f"{preset}.py", preset, model_path=model, data_path=data[0],
                                   image_folder=data[1], max_iters=iters, save_steps=iters, log_interval=1)
    settings = finetune.settings_for(preset, model_path=model, data_path=data[0], image_folder=data[1],
                                     max_iters=iters)
    run = training.train(config, root / preset, echo=False)
    records = training.parse_logs(root / preset)
    times = [r["time"] for r in records[3:]] or [r["time"] for r in records]
    seconds = statistics.median(times)
    max_tiles = settings["max_dynamic_patch"] or json.loads((model / "config.json").read_text())["max_dynamic_patch"]
    tokens = tokens_per_sample(model, data[0], max_tiles)
    samples_per_s = settings["batch_size"] / seconds
    return {"preset": preset, "iterations": len(records), "batch_size": settings["batch_size"],
            "accumulative_counts": settings["accumulative_counts"], "max_tiles": max_tiles,
            "seconds_per_iter": round(seconds, 3), "samples_per_s": round(samples_per_s, 2),
            "tokens_per_sample": round(tokens), "tokens_per_s": round(samples_per_s * tokens),
            "peak_memory_gb": round(max(r.get("memory", 0) for r in records) / 1024, 2),
            "loss_first": records[0].get("loss"), "loss_last": records[-1].get("loss"),
            "wall_s": round(run.seconds, 1), "checkpoint": str(run.checkpoint)}


def ask_lmdeploy(model: Path) -> str:
    from internvl_course.chat import GenerationConfig, pipeline
    from internvl_course.scenes import Piece, Scene, render

    pipe = pipeline(model, backend="pytorch")
    picture = render(Scene(pieces=(Piece("circle", "red", 2),)), seed=3)
    reply = pipe.chat((QUESTION, picture), gen_config=GenerationConfig(max_new_tokens=16)).response.text
    pipe.close()
    return reply


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="the model directory to fine-tune (e.g. InternVL2-2B)")
    parser.add_argument("--presets", nargs="*", default=["tutorial", "24gb"])
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--work", help="folder for data and runs (default: a temporary one)")
    parser.add_argument("--convert", action="store_true", help="merge the last preset's checkpoint")
    parser.add_argument("--lmdeploy", action="store_true", help="ask the merged model through LMDeploy")
    parser.add_argument("--convert-only", help="skip training: merge this checkpoint (with --convert)")
    parser.add_argument("--json")
    args = parser.parse_args()
    root = Path(args.work or tempfile.mkdtemp(prefix="ft-bench-"))
    model = Path(args.model).resolve()
    data = make_data(root / "data", args.samples)
    results: dict = {"presets": []}
    for preset in args.presets:
        row = measure(preset, model, data, args.iters, root)
        results["presets"].append(row)
        print(f"{preset:<9} {row['seconds_per_iter']:.3f} s/iter, {row['samples_per_s']} samples/s, "
              f"{row['tokens_per_s']} tokens/s ({row['tokens_per_sample']} tokens/sample, {row['max_tiles']}+1 tiles), "
              f"peak {row['peak_memory_gb']} GB, loss {row['loss_first']} -> {row['loss_last']}", flush=True)
    if args.convert:
        from internvl_course.convert import convert

        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
        checkpoint = Path(args.convert_only or results["presets"][-1]["checkpoint"])
        merged = convert(model, checkpoint, root / "merged", device=device, overwrite=True)
        results["convert"] = {"out": str(merged.out_dir), "lora_layers": merged.lora_modules, "dtype": merged.dtype,
                              "merge_max_abs_diff": merged.merge_max_abs_diff, "max_abs_diff": merged.max_abs_diff,
                              "mean_relative_diff": merged.mean_relative_diff, "top1_agreement": merged.top1_agreement,
                              "tolerance": merged.tolerance}
        print(f"convert: {merged.lora_modules} LoRA layers, stored in {merged.dtype}; logits vs base + adapters: "
              f"merge {merged.merge_max_abs_diff:.3g}, written max {merged.max_abs_diff:.3g}, mean relative "
              f"{merged.mean_relative_diff:.3g}, top-1 agreement {merged.top1_agreement:.1%}", flush=True)
        if args.lmdeploy:
            results["lmdeploy_reply"] = ask_lmdeploy(merged.out_dir)
            print("LMDeploy (PyTorch engine) on the merged model:", repr(results["lmdeploy_reply"]), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, ensure_ascii=False), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
