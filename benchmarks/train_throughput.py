"""Speed, memory and model FLOPs utilisation of XTuner LoRA fine-tuning, per preset, measured.

    python benchmarks/train_throughput.py --model DIR [--presets tutorial 24gb] [--iters 20]
                                          [--size 1792x1344] [--peak-tflops T] [--json out.json]
                                          [--convert] [--lmdeploy] [--data-root DIR] [--set NAME=VALUE ...]

For each preset it trains ``--iters`` iterations through ``internvl_course.finetune.training`` (torchrun
and DeepSpeed ZeRO-2, bf16 on a GPU that supports it) on pictures of ``--size``, by default
1792 x 1344 px: the worst case, which InternVL2's dynamic tiling cuts into 12 tiles plus a
thumbnail (fewer where the preset caps the tiles). From XTuner's own log lines it reports seconds
per iteration (median, first 3 left out), samples/s, tokens/s (text tokens of the conversation
plus 256 image tokens per tile) and peak GPU memory (mmengine's ``memory``: torch's max
allocated). Without CUDA it runs the ``cpu-tiny`` preset on the embedded tiny model: a smoke
check of the whole path, with memory and MFU shown as n/a.

Model FLOPs utilisation (MFU) = model FLOPs per sample x samples/s / the GPU's dense bf16 peak
(``PEAK_BF16_TFLOPS``, or ``--peak-tflops``). Model FLOPs count the arithmetic the training step
needs, not what the implementation happens to do; with both encoders frozen, LoRA on the LLM and
mlp1 trained (XTuner's InternVL2 recipe), per sample of ``T`` tokens of which ``I`` are image
tokens from ``tiles`` tiles, a multiply-add being 2 FLOPs:

- InternViT, forward only (frozen, and nothing before it trains, so no gradient reaches it):
  per tile ``2 x N_vit x 1025`` (1024 patches + the class token; the patch convolution counts for the 1024 patches only)
  ``+ 4 x L_vit x d_vit x 1025^2``
  (attention scores and weighted sum, bidirectional);
- mlp1 (trained): ``6 x N_mlp1 x I`` (forward, weight and input gradients; its first layer's
  input gradient is not needed, an overcount of about 0.1 % of the total);
- LLM linear layers, frozen, the output head included, the embedding lookup not:
  ``4 x N_llm x T`` (forward, plus the input gradients that must flow back through every layer
  to the LoRA weights below and to mlp1; no weight gradients);
- LoRA (XTuner wraps every Linear of the LLM, the ``output`` head too): ``6 x N_lora x T``;
- LLM attention: ``12 x L x d x T^2`` (forward ``4 x L x d x T^2`` and twice that backward;
  no discount for the causal mask, as in PaLM's MFU, since the kit's SDPA call with an explicit
  mask computes the full square).

Not counted: norms, activations, softmax, rotary embeddings, the optimizer, and the LLM's
forward pass recomputed by activation checkpointing (XTuner turns it on; the GPU presets keep it), which
is real work (about 2 x N_llm x T more) but not model FLOPs: the hardware does more than MFU says.

``--data-root DIR`` trains on a LLaVA-format folder instead (``DIR/train_llava.json``, e.g. the
kit's data/food, where every picture has four questions). ``--set NAME=VALUE`` (repeatable) also
measures every preset with that one setting changed and prints the ratio of its seconds per
iteration to the preset's own, e.g. ``--presets cpu-tiny --data-root data/food --iters 720 --set
cache_vision_features=False``: what the vision-feature cache saves over two passes. (mmengine
sleeps 2 s at every pass over the data, and its times are means over 10 iterations: give a
generated dataset at least 32 iterations' worth of ``--samples``, or the median shows the sleep.)

With ``--convert`` the last preset's checkpoint is merged by ``internvl_course.finetune.convert`` (on the
GPU), and with ``--lmdeploy`` the merged model answers a question through LMDeploy's PyTorch
engine: a check that what was trained can be served, not a measurement.

The train env is ``$INTERNVL_COURSE_TRAIN_PYTHON`` or ``.venv-train``.
"""

from __future__ import annotations

import argparse
import ast
import json
import re
import statistics
import sys
import tempfile
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from PIL import Image
from report import Column, describe, environment, format_table, parse_size, write_json

WORST_CASE = (1792, 1344)
QUESTION = "图中的菜是什么？\nA. 宫保鸡丁\nB. 白切鸡\nC. 龙井虾仁\nD. 虾饺"

#: Dense (no sparsity) bf16 tensor-core peaks from NVIDIA's datasheets, in TFLOPS, matched in
#: order against torch.cuda.get_device_name(): the first pattern found wins, so the more specific
#: names come first ("H100 PCIe" before "H100", "A100" before "A10").
PEAK_BF16_TFLOPS: tuple[tuple[str, float], ...] = (
    (r"H100.*PCIe", 756.5),
    (r"H100 NVL", 835.5),
    (r"H100", 989.4),  # SXM5, e.g. "NVIDIA H100 80GB HBM3"
    (r"H200 NVL", 835.5),
    (r"H200", 989.4),
    (r"A100", 312.0),
    (r"L40S", 362.05),
    (r"\bL4\b", 121.0),
    (r"\bA10\b", 125.0),
    (r"RTX A6000", 154.8),
    (r"RTX 4090", 165.2),
    (r"RTX 3090", 71.0),
)

COLUMNS: list[Column] = [
    ("preset", "preset", ""), ("batch", "batch x accum", ""), ("tiles", "tiles", "d"),
    ("tokens_per_sample", "tokens/sample", ".0f"), ("seconds_per_iter", "s/iter", ".3f"),
    ("samples_per_s", "samples/s", ".2f"), ("tokens_per_s", "tokens/s", ".0f"),
    ("peak_memory_gb", "peak GB", ".2f"), ("tflop_per_sample", "TFLOP/sample", ".3g"),
    ("achieved_tflops", "TFLOPS", ".3g"), ("mfu", "MFU", ".1%"),
]


@dataclass(frozen=True)
class ModelShape:
    """The sizes training FLOPs depend on, read off the model's modules (see ``model_shape``)."""

    vit_linear: int  # InternViT's Linear weights, applied to every token of a tile
    vit_patch: int  # the patch-embedding convolution's weights, applied once per patch
    vit_layers: int
    vit_width: int
    vit_tokens: int  # tokens per tile inside InternViT: (448 / 14)^2 patches + 1 class token
    mlp1: int  # the projector's Linear weights
    llm_linear: int  # the LLM's Linear weights, output head included, embedding table not
    llm_layers: int
    llm_width: int
    lora: int  # LoRA A and B weights: r x (in + out) for every Linear XTuner wraps
    image_tokens_per_tile: int


def lora_targets(names: list[str]) -> list[str]:
    """Which of the LLM's Linear layers (dotted names) XTuner 0.2.0 wraps with LoRA when the config
    names no ``target_modules``: all of them, except those whose last name part is ``lm_head`` or
    ``output_layer``. InternLM2 calls its head ``output``, so the head gets LoRA too."""
    return [name for name in names if name.split(".")[-1] not in ("lm_head", "output_layer")]


@lru_cache(maxsize=None)
def model_shape(model_dir: Path, lora_r: int) -> ModelShape:
    """Count the weights of the model in ``model_dir`` by building it on torch's meta device: the
    real modules of the kit's model code, without allocating or loading a single weight."""
    import torch
    from torch import nn

    from internvl_course.modelcode.configuration_internvl_chat import InternVLChatConfig
    from internvl_course.modelcode.modeling_internvl_chat import InternVLChatModel
    from internvl_course.model.preprocess import tokens_per_tile

    raw = json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8"))
    config = InternVLChatConfig(**raw)
    with torch.device("meta"):
        model = InternVLChatModel(config)

    def linears(module: nn.Module) -> dict[str, nn.Linear]:
        return {name: m for name, m in module.named_modules() if isinstance(m, nn.Linear)}

    llm = linears(model.language_model)
    vision, text = config.vision_config, config.llm_config
    return ModelShape(
        vit_linear=sum(m.weight.numel() for m in linears(model.vision_model).values()),
        vit_patch=model.vision_model.embeddings.patch_embedding.weight.numel(),
        vit_layers=vision.num_hidden_layers, vit_width=vision.hidden_size,
        vit_tokens=(vision.image_size // vision.patch_size) ** 2 + 1,
        mlp1=sum(m.weight.numel() for m in linears(model.mlp1).values()),
        llm_linear=sum(m.weight.numel() for m in llm.values()),
        llm_layers=text.num_hidden_layers, llm_width=text.hidden_size,
        lora=sum(lora_r * (llm[name].in_features + llm[name].out_features) for name in lora_targets(list(llm))),
        image_tokens_per_tile=tokens_per_tile(config.force_image_size or vision.image_size, vision.patch_size,
                                              config.downsample_ratio),
    )


def training_flops(shape: ModelShape, tiles: int, text_tokens: float) -> dict[str, float]:
    """Model FLOPs of one training sample, by part, counted as the module docstring says."""
    image_tokens = tiles * shape.image_tokens_per_tile
    tokens = image_tokens + text_tokens
    parts = {
        "vit_forward": tiles * (2 * shape.vit_linear * shape.vit_tokens + 2 * shape.vit_patch * (shape.vit_tokens - 1)
                                + 4 * shape.vit_layers * shape.vit_width * shape.vit_tokens**2),
        "mlp1": 6 * shape.mlp1 * image_tokens,
        "llm_linear": 4 * shape.llm_linear * tokens,
        "lora": 6 * shape.lora * tokens,
        "llm_attention": 12 * shape.llm_layers * shape.llm_width * tokens**2,
    }
    return {**parts, "total": sum(parts.values())}


def peak_tflops(device_name: str) -> float | None:
    """The dense bf16 peak of a GPU by its name, or None when the table does not know it."""
    for pattern, tflops in PEAK_BF16_TFLOPS:
        if re.search(pattern, device_name):
            return tflops
    return None


def make_data(root: Path, samples: int, size: tuple[int, int]) -> tuple[Path, Path]:
    """``samples`` food pictures of ``size`` with one VQA turn each, in XTuner's LLaVA format."""
    from internvl_course.data.dishes import FOOD_DISHES, draw_dish

    (root / "img").mkdir(parents=True, exist_ok=True)
    items = []
    for i in range(samples):
        dish = FOOD_DISHES[i % len(FOOD_DISHES)]
        draw_dish(dish.zh, seed=i, size=max(size)).resize(size).save(root / "img" / f"{i}.jpg", quality=90)
        items.append({"image": f"{i}.jpg", "conversations": [
            {"from": "human", "value": QUESTION + "\n<image>"},
            {"from": "gpt", "value": f"{dish.zh}，图中的菜是{dish.zh}"}]})
    (root / "data.json").write_text(json.dumps(items, ensure_ascii=False), encoding="utf-8")
    return root / "data.json", root / "img"


def own_data(root: Path, parser: argparse.ArgumentParser) -> tuple[Path, Path]:
    """(data_path, image_folder) of a LLaVA-format folder such as data/food, or a usage error saying what is missing."""
    data_path = root.resolve() / "train_llava.json"
    if not data_path.is_file():
        parser.error(f"--data-root {root}: no train_llava.json there; point it at a folder like data/food")
    return data_path, root.resolve()


def text_tokens_per_sample(model: Path, data_path: Path) -> float:
    """Mean tokens of a sample's conversation text. The chat template and XTuner's system prompt (about
    30 tokens more) are not counted, as in the first measurement, so the figures stay comparable."""
    from internvl_course.model.load import load_tokenizer

    tokenizer = load_tokenizer(model)
    items = json.loads(data_path.read_text(encoding="utf-8"))
    return statistics.mean(len(tokenizer(" ".join(t["value"] for t in item["conversations"])).input_ids)
                           for item in items)


def parse_setting(text: str) -> tuple[str, Any]:
    """``NAME=VALUE`` from the command line: VALUE as a Python literal (False, 2e-3, (0.9, 0.99)) or a string."""
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"--set takes NAME=VALUE, got {text!r}")
    try:
        return name, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return name, value


def measure(preset: str, model: Path, data: tuple[Path, Path], size: tuple[int, int], iters: int, root: Path,
            peak: float | None, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train ``iters`` iterations of ``preset`` (with ``overrides``) and turn XTuner's log into one row of figures."""
    from internvl_course.finetune import presets, training
    from internvl_course.model.preprocess import num_tiles

    overrides = overrides or {}
    label = " ".join([preset, *(f"{k}={v}" for k, v in overrides.items())])
    name = re.sub(r"[^\w.-]+", "_", label)  # a file and folder name per variant
    config = presets.write_config(root / f"{name}.py", preset, model_path=model, data_path=data[0],
                                   image_folder=data[1], max_iters=iters, save_steps=iters, log_interval=1,
                                   **overrides)
    settings = presets.read_settings(config)
    shape = model_shape(model, settings["lora_r"])
    model_config = json.loads((model / "config.json").read_text(encoding="utf-8"))
    max_tiles = settings["max_dynamic_patch"] or model_config["max_dynamic_patch"]
    tiles = num_tiles(*size, min_num=model_config.get("min_dynamic_patch", 1), max_num=max_tiles,
                      use_thumbnail=model_config.get("use_thumbnail", True))
    text = text_tokens_per_sample(model, data[0])
    tokens = text + tiles * shape.image_tokens_per_tile
    if tokens > settings["max_length"]:
        raise SystemExit(f"{size[0]}x{size[1]} pictures make samples of {tokens:.0f} tokens ({tiles} tiles), above "
                         f"preset {preset!r}'s max_length {settings['max_length']}: XTuner would cut image tokens. "
                         "Use a smaller --size.")
    run = training.train(config, root / name, resume=False, echo=False)  # a measurement never resumes
    records = training.parse_logs(root / name)
    times = [r["time"] for r in records[3:]] or [r["time"] for r in records]
    seconds = statistics.median(times)
    flops = training_flops(shape, tiles, text)
    samples_per_s = settings["batch_size"] / seconds
    memory = [r["memory"] for r in records if "memory" in r]
    achieved = flops["total"] * samples_per_s / 1e12
    return {"preset": label, "settings": overrides, "iterations": len(records), "batch_size": settings["batch_size"],
            "accumulative_counts": settings["accumulative_counts"],
            "batch": f"{settings['batch_size']} x {settings['accumulative_counts']}", "max_tiles": max_tiles,
            "tiles": tiles, "seconds_per_iter": seconds, "samples_per_s": samples_per_s,
            "tokens_per_sample": tokens, "tokens_per_s": samples_per_s * tokens,
            "peak_memory_gb": max(memory) / 1024 if memory else None,
            "model_shape": asdict(shape), "flops_per_sample": flops, "tflop_per_sample": flops["total"] / 1e12,
            "achieved_tflops": achieved, "mfu": achieved / peak if peak else None,
            "loss_first": records[0].get("loss"), "loss_last": records[-1].get("loss"),
            "wall_s": round(run.seconds, 1), "checkpoint": str(run.checkpoint)}


def ask_lmdeploy(model: Path) -> str:
    """One answer from the merged model through LMDeploy's PyTorch engine."""
    from internvl_course.serve.chat import GenerationConfig, pipeline
    from internvl_course.data.drawing import Piece, Scene, render

    pipe = pipeline(model, backend="pytorch")
    picture = render(Scene(pieces=(Piece("circle", "red", 2),)), seed=3)
    reply = pipe.chat((QUESTION, picture), gen_config=GenerationConfig(max_new_tokens=16)).response.text
    pipe.close()
    return reply


def convert_and_ask(model: Path, checkpoint: Path, out: Path, lmdeploy: bool) -> dict[str, Any]:
    """Merge ``checkpoint`` into ``model`` (internvl_course.finetune.convert) and optionally ask LMDeploy."""
    import torch

    from internvl_course.finetune.convert import convert

    merged = convert(model, checkpoint, out, device="cuda" if torch.cuda.is_available() else "cpu", overwrite=True)
    result: dict[str, Any] = {
        "out": str(merged.out_dir), "lora_layers": merged.lora_modules, "dtype": merged.dtype,
        "merge_max_abs_diff": merged.merge_max_abs_diff, "max_abs_diff": merged.max_abs_diff,
        "mean_relative_diff": merged.mean_relative_diff, "top1_agreement": merged.top1_agreement,
        "tolerance": merged.tolerance}
    print(f"convert: {merged.lora_modules} LoRA layers, stored in {merged.dtype}; logits vs base + adapters: "
          f"merge {merged.merge_max_abs_diff:.3g}, written max {merged.max_abs_diff:.3g}, mean relative "
          f"{merged.mean_relative_diff:.3g}, top-1 agreement {merged.top1_agreement:.1%}", flush=True)
    if lmdeploy:
        result["lmdeploy_reply"] = ask_lmdeploy(merged.out_dir)
        print("LMDeploy (PyTorch engine) on the merged model:", repr(result["lmdeploy_reply"]), flush=True)
    return result


def main() -> int:
    import torch

    from internvl_course.finetune import presets
    from internvl_course.paths import tiny_model_dir
    from internvl_course.finetune.trainenv import train_env_versions

    cuda = torch.cuda.is_available()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(tiny_model_dir()),
                        help="the model directory to fine-tune (default: the embedded tiny model)")
    parser.add_argument("--presets", nargs="+", default=["tutorial", "24gb"] if cuda else ["cpu-tiny"],
                        choices=list(presets.PRESETS), help="default: tutorial 24gb on a GPU, cpu-tiny without one")
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--samples", type=int, default=32, help="pictures in the training data")
    parser.add_argument("--size", type=parse_size, default=WORST_CASE if cuda else (448, 448), metavar="WxH",
                        help="picture size (default on a GPU 1792x1344: 12 tiles + thumbnail, the worst case; "
                        "without one 448x448, which fits cpu-tiny's max_length)")
    parser.add_argument("--peak-tflops", type=float, help="the GPU's dense bf16 peak, for GPUs the table lacks")
    parser.add_argument("--work", help="folder for data and runs (default: a temporary one)")
    parser.add_argument("--convert", action="store_true", help="merge the last preset's checkpoint")
    parser.add_argument("--lmdeploy", action="store_true", help="ask the merged model through LMDeploy")
    parser.add_argument("--convert-only", help="skip training: merge this checkpoint (with --convert)")
    parser.add_argument("--data-root", help="train on DIR/train_llava.json with its pictures under DIR (e.g. "
                        "data/food) instead of generated ones; the picture size is then the first picture's")
    parser.add_argument("--set", type=parse_setting, action="append", default=[], metavar="NAME=VALUE",
                        help="also measure each preset with this setting changed (repeatable: one variant each)")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    gpu_presets = [p for p in args.presets if presets.PRESETS[p]["dist_backend"] == "nccl"]
    if gpu_presets and not cuda and not args.convert_only:
        parser.error(f"preset(s) {', '.join(gpu_presets)} train on a CUDA GPU (NCCL, AMP) and torch sees none "
                     "here; on a CPU use --presets cpu-tiny")

    try:  # before anything trains
        presets.check_names(name for name, _ in args.set)
    except ValueError as err:
        parser.error(f"--set: {err}")

    env = environment(("torch", "transformers"))
    env["train_env"] = train_env_versions()
    gpu = env["gpu"]
    peak = args.peak_tflops or (peak_tflops(gpu) if gpu else None)
    print(describe(env))
    print("train env: " + ", ".join(f"{k} {v}" for k, v in env["train_env"].items() if v))
    if gpu and peak is None:
        print(f"MFU: no bf16 peak known for {gpu!r}; pass --peak-tflops", flush=True)
    root = Path(args.work or tempfile.mkdtemp(prefix="train-bench-"))
    model = Path(args.model).resolve()
    size = args.size
    if args.data_root:
        data = own_data(Path(args.data_root), parser)
        with Image.open(data[1] / json.loads(data[0].read_text(encoding="utf-8"))[0]["image"]) as picture:
            size = picture.size
    results: dict[str, Any] = {"environment": env, "peak_tflops": peak, "picture": "x".join(map(str, size)),
                               "data": str(data[0]) if args.data_root else "generated", "presets": []}
    if not args.convert_only:
        if not args.data_root:
            data = make_data(root / "data", args.samples, size)
        ratios = []
        for preset in args.presets:
            rows = [measure(preset, model, data, size, args.iters, root, peak, dict([change]) if change else None)
                    for change in [None, *args.set]]
            for row in rows:
                print(f"{row['preset']}: {row['seconds_per_iter']:.3f} s/iter, loss {row['loss_first']} -> "
                      f"{row['loss_last']}", flush=True)
                row["s_per_iter_vs_preset"] = row["seconds_per_iter"] / rows[0]["seconds_per_iter"]
            ratios += [f"{row['preset']}: {row['s_per_iter_vs_preset']:.2f} x the s/iter of {preset}" for row in rows[1:]]
            results["presets"] += rows
        print(f"\n{'x'.join(map(str, size))} px pictures, {args.iters} iterations each; "
              f"MFU against {peak or 'n/a'} TFLOPS (dense bf16)")
        print(format_table(results["presets"], COLUMNS))
        print("\n".join(ratios))
    if args.convert:
        checkpoint = Path(args.convert_only or results["presets"][-1]["checkpoint"])
        results["convert"] = convert_and_ask(model, checkpoint, root / "merged", args.lmdeploy)
    if args.json:
        write_json(args.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
