"""XTuner fine-tuning configs for InternVL2, rendered from presets.

A preset is a dict of settings; ``render_config`` turns settings into the Python config file
that ``xtuner.tools.train`` reads. Every setting can be overridden, and unknown names are
rejected with the list of known ones, so a typo never silently trains with a default.

Presets:

- ``tutorial``: the original tutorial's run (InternVL2-2B on a GPU, DeepSpeed ZeRO-2). It differs
  from XTuner's upstream ``internvl_v2_internlm2_2b_lora_finetune.py`` in batch size 4 (8),
  10 epochs (1), lr 3e-5 (1e-6), checkpoints every 64 steps (1000) and keeping them all
  (docs/design.md, "The original tutorial and FoodieQA").
- ``24gb``: the tutorial's run on a 24 GB GPU: batch 1 with 8 accumulated steps, at most 6 tiles
  a picture (see the preset for what was measured).
- ``cpu-tiny``: the embedded tiny model on a CPU. XTuner runs there with a plain
  ``OptimWrapper`` (its AMP wrapper asserts a GPU), gloo and no dataloader workers (docs/design.md,
  "XTuner 0.2.0"); ``internvl_course.finetune.launch`` sets up the rest.

Every schedule warms up for at least two iterations: mmengine's LinearLR is chained, so a
one-iteration warm-up leaves the learning rate at ``start_factor x lr`` for the whole run (seen
on the GPU machine: lr 3e-10 instead of 3e-5; docs/design.md, "XTuner 0.2.0").
"""

from __future__ import annotations

import ast
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from internvl_course.fileio import atomic_write_text

# Settings shared by every preset: XTuner's InternVL2-2B LoRA recipe (docs/design.md, "The original
# tutorial and FoodieQA").
_BASE: dict[str, Any] = {
    "model_path": None,
    "data_path": None,
    "image_folder": None,
    "max_length": 8192,
    "batch_size": 4,
    "accumulative_counts": 2,
    "dataloader_num_workers": 4,
    "max_epochs": 1,
    "max_iters": None,  # default: max_epochs x ceil(samples / batch_size), from the dataset
    "lr": 1e-6,
    "betas": (0.9, 0.999),
    "weight_decay": 0.05,
    "max_norm": 1.0,
    "warmup_ratio": 0.03,
    # None: cosine decay after the warm-up (XTuner's recipe). A share r of the steps: hold the peak
    # and decay linearly over the last r of them (warm-up-stable-decay, MiniCPM, Hu et al. 2024).
    # cpu-tiny uses r=0.2 (measured there: see its comment and docs/benchmarks.md).
    "decay_ratio": None,
    "save_steps": 1000,
    "save_total_limit": 1,
    "save_optimizer": False,  # True: a resumed run continues AdamW's moments too (bigger checkpoints)
    "max_dynamic_patch": None,  # tiles per picture at most (plus a thumbnail); None: the model's config (12)
    "group_by_length": True,  # XTuner's LengthGroupedSampler: batches of similar length, less padding
    "lora_r": 128,
    "lora_alpha": 256,
    "lora_dropout": 0.05,
    "freeze_llm": True,
    "freeze_visual_encoder": True,
    "cache_vision_features": False,  # a frozen ViT's features computed once per picture (small datasets)
    "quantization_llm": False,
    "activation_checkpointing": True,  # XTuner's own choice: recompute the LLM's activations
    "trainable_fp32": False,  # mlp1 in float32 (DeepSpeed keeps float32 master weights itself)
    "amp": True,  # fp16 AMP on a GPU; a CPU trains in the model's dtype
    "dist_backend": "nccl",
    "gpus": None,  # GPUs per node; None: 1 with CUDA, else the CPU (training.default_gpus)
    "seed": 0,
    "log_interval": 10,
}

PRESETS: dict[str, dict[str, Any]] = {
    "tutorial": {**_BASE, "batch_size": 4, "max_epochs": 10, "lr": 3e-5, "save_steps": 64,
                 "save_total_limit": -1},
    # A 24 GB GPU: one sample a step (8 accumulated, the tutorial's 4 x 2), at most 6 tiles a
    # picture instead of 12. Both encoders frozen and LoRA as in the tutorial; XTuner always
    # checkpoints the LLM's activations. Set quantization_llm=True (QLoRA, bitsandbytes) for
    # smaller cards.
    "24gb": {**_BASE, "batch_size": 1, "accumulative_counts": 8, "max_dynamic_patch": 6, "max_epochs": 10,
             "lr": 3e-5, "save_steps": 256, "save_total_limit": 2},
    # The embedded tiny model on a CPU, within lesson 06's five minutes: shuffled batches of 8, a rank-32 LoRA
    # at 2e-3 without dropout, float32 mlp1 without recomputation, 3.5 passes over cached ViT features, betas
    # 0.9/0.99 and warm-up-stable-decay (measured: docs/benchmarks.md, "How the cpu-tiny preset's settings were chosen").
    "cpu-tiny": {**_BASE, "max_length": 2048, "batch_size": 8, "accumulative_counts": 1, "group_by_length": False,
                 "dataloader_num_workers": 0, "max_epochs": 3.5, "lr": 2e-3, "betas": (0.9, 0.99),
                 "decay_ratio": 0.2, "cache_vision_features": True,
                 "save_steps": 40, "save_total_limit": 2, "save_optimizer": True, "lora_r": 32, "lora_alpha": 64,
                 "lora_dropout": 0.0, "activation_checkpointing": False, "trainable_fp32": True, "amp": False,
                 "dist_backend": "gloo", "log_interval": 1},
}

# What each setting does, for the table lesson 06 shows (docs/design.md, "XTuner 0.2.0" and "The
# original tutorial and FoodieQA").
EXPLAIN: dict[str, str] = {
    "model_path": "the model to fine-tune (a folder with config.json and the model code)",
    "data_path": "the LLaVA-format training file (image + conversations per item)",
    "image_folder": "the folder the items' image paths are relative to",
    "max_length": "longest sample in tokens (the picture's 256 tokens per tile included); longer ones are cut",
    "batch_size": "samples per step and GPU",
    "accumulative_counts": "steps whose gradients add up before one optimizer update",
    "dataloader_num_workers": "processes that load pictures in parallel (0: in the training process)",
    "max_epochs": "passes over the data (3.5: three and a half)",
    "max_iters": "training steps in all (epochs x samples / batch size unless given)",
    "lr": "peak learning rate of AdamW",
    "betas": "AdamW's moment decay rates",
    "weight_decay": "AdamW's decoupled weight decay",
    "max_norm": "gradients are clipped to this norm",
    "warmup_ratio": "share of the steps spent raising the learning rate from ~0 (at least 2 steps)",
    "decay_ratio": "None: cosine decay after the warm-up; a share r of the steps: hold the peak, "
                   "then decay linearly over the last r",
    "save_steps": "a checkpoint every this many steps",
    "save_total_limit": "checkpoints kept (-1: all)",
    "save_optimizer": "keep AdamW's state in checkpoints, so that a resumed run continues it exactly",
    "max_dynamic_patch": "tiles per picture at most, plus a thumbnail (None: the model's own limit)",
    "group_by_length": "batch samples of similar length together (less padding); False: a plain shuffle",
    "lora_r": "LoRA rank: the width of the low-rank update of each linear layer of the LLM",
    "lora_alpha": "LoRA scale numerator: the update is multiplied by lora_alpha / lora_r",
    "lora_dropout": "dropout on the LoRA branch while training",
    "freeze_llm": "keep the LLM's own weights fixed (LoRA and mlp1 still train)",
    "freeze_visual_encoder": "keep InternViT fixed",
    "cache_vision_features": "frozen InternViT: compute each picture's features once and reuse them "
                             "(exact; memory grows with the pictures, so for small datasets)",
    "quantization_llm": "load the LLM in 4 bits (QLoRA, bitsandbytes): less memory, slower steps",
    "activation_checkpointing": "recompute the LLM's activations in the backward pass: less memory, slower steps",
    "trainable_fp32": "train mlp1 in float32 rather than bfloat16 (a plain optimizer rounds small bf16 updates away)",
    "amp": "fp16 mixed precision on a GPU (DeepSpeed runs use its own bf16/fp16 setting)",
    "dist_backend": "how processes talk: nccl on GPUs, gloo on a CPU",
    "gpus": "GPUs per node that training.train starts (ZeRO-2 data parallel: the effective batch is "
            "batch_size x accumulative_counts x gpus); several nodes: NNODES, NODE_RANK, ADDR, PORT",
    "seed": "random seed of the run",
    "log_interval": "a log line (loss, learning rate, time) every this many steps",
}
assert set(EXPLAIN) == set(_BASE), "every setting needs its explanation"


def settings_table(preset: str, **overrides: Any) -> str:
    """A plain-text table of the settings a config will use, each with what it does and, where
    the preset or an override changed it, XTuner's upstream value."""
    settings = settings_for(preset, **overrides)
    width = max(map(len, settings)) + 2  # the longest name, activation_checkpointing, and a gap
    lines = [f"{'setting':<{width}}{'value':<28}what it does"]
    for name, value in settings.items():
        shown = value if not isinstance(value, str) or len(value) <= 26 else "..." + value[-23:]
        note = EXPLAIN[name]
        if name in _BASE and _BASE[name] is not None and value != _BASE[name]:
            note += f" (XTuner's recipe: {_BASE[name]})"
        lines.append(f"{name:<{width}}{str(shown):<28}{note}")
    return "\n".join(lines)


_TEMPLATE = '''\
# XTuner config written by internvl_course.finetune.presets (preset {preset!r}). Edit the settings through
# internvl_course.finetune.presets.render_config(...) rather than here, so notebooks and tests agree.
import torch
from mmengine.dataset import DefaultSampler
from mmengine.hooks import CheckpointHook, DistSamplerSeedHook, IterTimerHook, LoggerHook, ParamSchedulerHook
from mmengine.optim import AmpOptimWrapper, CosineAnnealingLR, LinearLR, OptimWrapper
from peft import LoraConfig
from torch.optim import AdamW
from internvl_course.finetune.launch import internvl_dataset, internvl_model
from xtuner.dataset.collate_fns import default_collate_fn
from xtuner.dataset.samplers import LengthGroupedSampler
from xtuner.engine.runner import TrainLoop
from xtuner.utils import PROMPT_TEMPLATE

settings = {settings!r}
path = settings["model_path"]
prompt_template = PROMPT_TEMPLATE.internlm2_chat

model = dict(
    type=internvl_model,
    model_path=path,
    activation_checkpointing=settings["activation_checkpointing"],
    trainable_fp32=settings["trainable_fp32"],
    freeze_llm=settings["freeze_llm"],
    freeze_visual_encoder=settings["freeze_visual_encoder"],
    cache_vision=settings["cache_vision_features"],
    quantization_llm=settings["quantization_llm"],
    llm_lora=dict(type=LoraConfig, r=settings["lora_r"], lora_alpha=settings["lora_alpha"],
                  lora_dropout=settings["lora_dropout"], target_modules=None, task_type="CAUSAL_LM"),
)

llava_dataset = dict(type=internvl_dataset, model_path=path, data_paths=settings["data_path"],
                     image_folders=settings["image_folder"], template=prompt_template,
                     max_length=settings["max_length"], max_dynamic_patch=settings["max_dynamic_patch"])
train_dataloader = dict(
    batch_size=settings["batch_size"],
    num_workers=settings["dataloader_num_workers"],
    dataset=llava_dataset,
    sampler=(dict(type=LengthGroupedSampler, length_property="modality_length",
                  per_device_batch_size=settings["batch_size"] * settings["accumulative_counts"])
             if settings["group_by_length"] else dict(type=DefaultSampler, shuffle=True)),
    collate_fn=dict(type=default_collate_fn),
)

optim_wrapper = dict(
    type=AmpOptimWrapper if settings["amp"] else OptimWrapper,
    optimizer=dict(type=AdamW, lr=settings["lr"], betas=settings["betas"], weight_decay=settings["weight_decay"]),
    clip_grad=dict(max_norm=settings["max_norm"], error_if_nonfinite=False),
    accumulative_counts=settings["accumulative_counts"],
    **(dict(loss_scale="dynamic", dtype="float16") if settings["amp"] else {{}}),
)

# Warm-up for warmup_ratio of the run (at least 2 iterations: a 1-iteration LinearLR never lets
# the chained lr back up), then cosine decay to 0, or, with a decay_ratio, the peak held until the
# last decay_ratio of the run decays linearly to ~0 (mmengine chains the factors, so 1.0 starts
# the decay from the peak). Counted in iterations (dataloader steps):
# max_iters = epochs x ceil(samples / batch size).
warmup = max(2, int(settings["warmup_ratio"] * settings["max_iters"]))
if settings["decay_ratio"] is None:
    decay = dict(type=CosineAnnealingLR, eta_min=0.0, by_epoch=False, begin=warmup,
                 end=max(settings["max_iters"], warmup + 1))
else:
    # at least 2 decaying iterations: the first of them is still at the peak
    decay_begin = max(warmup, min(round(settings["max_iters"] * (1 - settings["decay_ratio"])),
                                  settings["max_iters"] - 2))
    decay = dict(type=LinearLR, start_factor=1.0, end_factor=1e-4, by_epoch=False, begin=decay_begin,
                 end=max(settings["max_iters"], decay_begin + 1))
param_scheduler = [dict(type=LinearLR, start_factor=1e-5, by_epoch=False, begin=0, end=warmup), decay]
train_cfg = dict(type=TrainLoop, max_iters=settings["max_iters"])

default_hooks = dict(
    timer=dict(type=IterTimerHook),
    logger=dict(type=LoggerHook, log_metric_by_epoch=False, interval=settings["log_interval"]),
    param_scheduler=dict(type=ParamSchedulerHook),
    checkpoint=dict(type=CheckpointHook, save_optimizer=settings["save_optimizer"], by_epoch=False,
                    interval=settings["save_steps"], max_keep_ckpts=settings["save_total_limit"]),
    sampler_seed=dict(type=DistSamplerSeedHook),
)
env_cfg = dict(cudnn_benchmark=False, mp_cfg=dict(mp_start_method="fork", opencv_num_threads=0),
               dist_cfg=dict(backend=settings["dist_backend"]))
visualizer = None
log_level = "INFO"
load_from = None
resume = False
randomness = dict(seed=settings["seed"], deterministic=False)
log_processor = dict(by_epoch=False)
'''


#: The LLMs XTuner 0.2.0's InternVL dataset accepts (it raises NotImplementedError for others).
XTUNER_LLMS = ("InternLM2ForCausalLM", "Phi3ForCausalLM")


def model_folder_for_xtuner(model_path: str | Path) -> Path:
    """The folder XTuner should load: checked, refused early if XTuner cannot train its LLM, and
    prepared with the kit's code when it is a download (``model.prepare``)."""
    from internvl_course.model.folder import ModelFolderError, inspect_folder
    from internvl_course.model.prepare import prepared_folder

    folder = inspect_folder(model_path)
    if folder.llm_architecture not in XTUNER_LLMS:
        raise ModelFolderError(f"{folder.path} is {folder.family} ({folder.llm_architecture}): XTuner 0.2.0 "
                               "fine-tunes InternVL models whose LLM "
                               f"is {' or '.join(XTUNER_LLMS)} only (its InternVL dataset raises NotImplementedError "
                               "for others). Fine-tune an InternLM2-based model such as InternVL2-2B instead.")
    return prepared_folder(folder.path, "XTuner")


def check_names(names: Any) -> None:
    """Refuse setting names no preset has (a misspelt name is an error, never a silent default)."""
    unknown = sorted(set(names) - set(_BASE))
    if unknown:
        raise ValueError(f"unknown setting(s) {', '.join(unknown)}; known settings: {', '.join(sorted(_BASE))}")


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _flag(value: Any) -> bool:
    return isinstance(value, bool)


#: What each setting other than the three paths must be, as (test, the words a refusal uses).
#: XTuner takes any of these without a word and fails minutes later, or trains on nonsense: a
#: negative lr climbs the loss, lora_r=0 builds no adapter, a float batch size breaks the sampler.
_VALID: dict[str, tuple[Callable[[Any], bool], str]] = {
    "max_length": (lambda v: _whole(v) and v >= 1, "a whole number >= 1"),
    "batch_size": (lambda v: _whole(v) and v >= 1, "a whole number >= 1"),
    "accumulative_counts": (lambda v: _whole(v) and v >= 1, "a whole number >= 1"),
    "dataloader_num_workers": (lambda v: _whole(v) and v >= 0, "a whole number >= 0"),
    "max_epochs": (lambda v: _number(v) and v > 0, "a number > 0"),
    "max_iters": (lambda v: v is None or (_whole(v) and v >= 1),
                  "at least 1 (a whole number), or None to count it from max_epochs"),
    "lr": (lambda v: _number(v) and v > 0, "a number > 0"),
    "betas": (lambda v: isinstance(v, (tuple, list)) and len(v) == 2 and all(_number(b) and 0 <= b < 1 for b in v),
              "two numbers in [0, 1)"),
    "weight_decay": (lambda v: _number(v) and v >= 0, "a number >= 0"),
    "max_norm": (lambda v: _number(v) and v > 0, "a number > 0"),
    "warmup_ratio": (lambda v: _number(v) and 0 <= v < 1, "a number in [0, 1)"),
    "decay_ratio": (lambda v: v is None or (_number(v) and 0 < v <= 1),
                    "None (cosine decay) or a share of the steps in (0, 1]"),
    "save_steps": (lambda v: _whole(v) and v >= 1, "a whole number >= 1"),
    "save_total_limit": (lambda v: _whole(v) and (v == -1 or v >= 1), "-1 (keep all) or a whole number >= 1"),
    "save_optimizer": (_flag, "True or False"),
    "max_dynamic_patch": (lambda v: v is None or (_whole(v) and v >= 1),
                          "None (the model's own) or a whole number >= 1"),
    "group_by_length": (_flag, "True or False"),
    "lora_r": (lambda v: _whole(v) and v >= 1, "a whole number >= 1"),
    "lora_alpha": (lambda v: _number(v) and v > 0, "a number > 0"),
    "lora_dropout": (lambda v: _number(v) and 0 <= v < 1, "a number in [0, 1)"),
    "freeze_llm": (_flag, "True or False"),
    "freeze_visual_encoder": (_flag, "True or False"),
    "cache_vision_features": (_flag, "True or False"),
    "quantization_llm": (_flag, "True or False"),
    "activation_checkpointing": (_flag, "True or False"),
    "trainable_fp32": (_flag, "True or False"),
    "amp": (_flag, "True or False"),
    "dist_backend": (lambda v: v in ("nccl", "gloo"), "'nccl' (GPUs) or 'gloo' (CPU)"),
    "gpus": (lambda v: v is None or (_whole(v) and v >= 0),
             "None (1 with CUDA, else the CPU), 0 (the CPU) or a number of GPUs"),
    "seed": (_whole, "a whole number"),
    "log_interval": (lambda v: _whole(v) and v >= 1, "a whole number >= 1"),
}
_PATHS = ("model_path", "data_path", "image_folder")
assert set(_VALID) == set(_BASE) - set(_PATHS), "every setting needs its check"

#: Pictures of the training data decoded while the settings are checked (every one is looked up):
#: enough to catch a folder of broken files, and a second at most however large the dataset.
PICTURES_DECODED = 32


def check_values(settings: dict[str, Any]) -> None:
    """Refuse the first setting out of its range, naming it, the allowed values and what was given."""
    for name, (valid, allowed) in _VALID.items():
        if not valid(settings[name]):
            raise ValueError(f"{name} must be {allowed}, got {settings[name]!r}")
    if settings["cache_vision_features"] and not settings["freeze_visual_encoder"]:
        raise ValueError("cache_vision_features=True needs freeze_visual_encoder=True: a ViT that trains changes "
                         "its features every step, so there is nothing to reuse")


def check_data(data_path: Path, image_folder: Path) -> int:
    """The number of samples of a training file that XTuner can read, or the kit's error.

    Before a config is written: the file is there and is LLaVA data in UTF-8 (``validate``), and
    the image folder holds the pictures it names. XTuner itself skips an item whose picture is
    missing, and a wrong ``image_folder`` ends in an AttributeError about None ten seconds later.
    """
    from internvl_course.data.validate import DatasetError, check_file, read_items

    if not image_folder.is_dir():
        raise FileNotFoundError(f"image_folder {image_folder} is not a folder: point it at the folder the items' "
                                "image paths are relative to")
    if not data_path.is_file():
        raise FileNotFoundError(f"data_path {data_path} does not exist: point it at the LLaVA-format .json/.jsonl file")
    if data_path.suffix not in (".json", ".jsonl"):
        raise ValueError(f"data_path {data_path}: XTuner reads a .json file holding a list, or a .jsonl file")
    problems = check_file(data_path, image_folder, training=True, decode_limit=PICTURES_DECODED)
    if problems:
        raise DatasetError(str(data_path), problems)
    items, _ = read_items(data_path)
    if not items:
        raise ValueError(f"data_path {data_path} holds no samples")
    return len(items)


def settings_for(preset: str, **overrides: Any) -> dict[str, Any]:
    """The preset's settings with ``overrides`` applied, every one checked: unknown presets or
    names, values out of range, the model folder, the data file and its pictures are refused here,
    before a config is written or XTuner starts."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    check_names(overrides)
    settings = {**PRESETS[preset], **overrides}
    check_values(settings)
    for key in _PATHS:
        if not settings[key]:
            raise ValueError(f"{key} is required: pass {key}=... (a path)")
        settings[key] = str(Path(settings[key]).resolve())
    settings["model_path"] = str(model_folder_for_xtuner(settings["model_path"]))
    samples = check_data(Path(settings["data_path"]), Path(settings["image_folder"]))
    if settings["max_iters"] is None:
        # Fractional epochs are fine: XTuner counts iterations, and 3.5 passes end mid-epoch.
        settings["max_iters"] = math.ceil(settings["max_epochs"] * math.ceil(samples / settings["batch_size"]))
    return settings


def read_settings(config: str | Path) -> dict[str, Any]:
    """The settings a config written by ``write_config`` holds (its ``settings = {...}`` line);
    an empty dict for a config written some other way."""
    for line in Path(config).read_text(encoding="utf-8").splitlines():
        if line.startswith("settings = "):
            return ast.literal_eval(line.removeprefix("settings = "))
    return {}


def render_config(preset: str, **overrides: Any) -> str:
    """The text of an XTuner config file for ``preset`` with ``overrides``."""
    return _TEMPLATE.format(preset=preset, settings=settings_for(preset, **overrides))


#: The first line of every config the kit writes: how write_config knows a file is its own.
CONFIG_MARK = "# XTuner config written by internvl_course.finetune.presets"


def write_config(path: str | Path, preset: str, **overrides: Any) -> Path:
    """Render and write the config atomically; returns its path.

    An existing file is replaced only when the kit wrote it (its first line is ``CONFIG_MARK``):
    a config of your own at that path is never overwritten.
    """
    path = Path(path)
    if path.exists():
        first = path.read_text(encoding="utf-8", errors="replace").split("\n", 1)[0] if path.is_file() else ""
        if not first.startswith(CONFIG_MARK):
            raise FileExistsError(f"{path} exists and was not written by the kit; write the config to another path "
                                  "or move that file away first")
    return atomic_write_text(path, render_config(preset, **overrides))
