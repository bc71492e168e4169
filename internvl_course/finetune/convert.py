"""XTuner checkpoint -> an official-format InternVL2 model directory that every tool loads.

XTuner saves only what it trained: the LLM's LoRA adapters and the ``mlp1`` projector, plus the
vision encoder when it was not frozen (docs/design.md, "XTuner 0.2.0"). ``convert`` folds them into the base model and writes a complete
directory (weights in the base's dtype, the kit's model code, the tokenizer, a chat template,
generation_config.json), so ``AutoModel.from_pretrained`` and LMDeploy load it as they load
OpenGVLab/InternVL2-2B. XTuner's own ``convert_to_official.py`` leaves the code files out; this
one is written from the LoRA formula, not from that script.

The LoRA merge: a LoRA layer computes ``W x + (alpha / r) * B (A x)`` (Hu et al., 2021, LoRA,
eq. 3, with peft's ``lora_alpha / r`` scaling), so the merged weight is ``W + (alpha / r) * B @ A``.

Train/serve consistency: XTuner trains InternLM2 models with its own system message (docs/design.md,
"XTuner 0.2.0"), so the converted model carries that message, in ``config.json`` (read by ``chat()``)
and as the chat template's default (read by LMDeploy), and is prompted at chat time exactly as
it was trained.

Safety: the output may not be, contain or lie inside the base model's folder or the checkpoint, and
replaces an existing folder only with ``overwrite`` and only one the kit wrote (``fileio``); both are
checked before anything is loaded. The folder is assembled beside its destination and renamed into
place (``model.write.write_model_folder``), and after writing, the written model's logits are
compared with the base-plus-adapter model's on a sample before the folder is put in place.

A checkpoint is data: it is unpickled with ``torch.load(weights_only=True)``, which builds tensors
and plain values only and calls nothing else. XTuner 0.2.0's ``iter_N.pth`` also holds mmengine's
training log (``message_hub``: HistoryBuffer objects with numpy arrays in them); convert reads only
``state_dict`` and ``meta``, so the few names that log uses (``XTUNER_LOG_GLOBALS``) are built as
inert placeholders, and a checkpoint that names anything else is refused, naming what it wanted.
"""

from __future__ import annotations

import argparse
import json
import pickle
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from internvl_course.fileio import refuse_existing, refuse_overlap
from internvl_course.tiny.internlm2_tokenizer import XTUNER_SYSTEM_MESSAGE

# The prompt format XTuner 0.2.0 trains an InternLM2 LLM with, whatever the checkpoint's own
# template: its InternVL dataset writes internlm2-chat turns (no newline after <|im_end|>), so an
# InternVL2.5 fine-tune is served with that format, as it was trained.
XTUNER_TEMPLATES = {"InternLM2ForCausalLM": "internlm2-chat"}
# XTuner's names: "model." (its wrapper) + "language_model.base_model.model." (peft's wrapper)
# + the module's path in the LLM + ".lora_A[.default].weight" / ".lora_B[...]"; and "model.mlp1.*".
LORA_KEY = re.compile(r"^model\.language_model\.base_model\.model\.(?P<module>.+)\.lora_(?P<which>[AB])(?:\.default)?\.weight$")
MLP1_KEY = re.compile(r"^model\.(?P<name>mlp1\..+)$")
# With freeze_visual_encoder=False XTuner also saves the whole vision encoder.
VISION_KEY = re.compile(r"^model\.(?P<name>vision_model\..+)$")
#: How a file torch.save wrote begins: a zip archive (since torch 1.6), or a pickle's protocol opcode.
ZIP_MAGIC, PICKLE_PROTO = b"PK\x03\x04", b"\x80"
#: What XTuner 0.2.0's iter_N.pth names besides tensors and plain values, all inside its training
#: log (``message_hub``): mmengine's HistoryBuffer, its statistics methods (looked up by getattr)
#: and its numpy arrays, spelt as numpy 2 and numpy 1 pickle them. Found by listing a real
#: checkpoint's names (``torch.serialization.get_unsafe_globals_in_checkpoint``; test_nothing_lost).
XTUNER_LOG_GLOBALS = (
    "mmengine.logging.history_buffer.HistoryBuffer", "builtins.getattr", "numpy.ndarray", "numpy.dtype",
    "numpy._core.multiarray._reconstruct", "numpy._core.multiarray.scalar",
    "numpy.core.multiarray._reconstruct", "numpy.core.multiarray.scalar",
)


@dataclass(frozen=True)
class Tolerance:
    """|a - b| <= atol + rtol * max|a|, elementwise over the sample's logits."""

    atol: float
    rtol: float

    def bound(self, reference: torch.Tensor) -> float:
        return self.atol + self.rtol * reference.abs().max().item()


# Checked in float32: the merge must equal the adapter model within EXACT, and a 16-bit model must equal
# the float32 merge rounded to its dtype bit for bit, since that rounding alone moves the logits more than a
# small LoRA update does (docs/benchmarks.md, "A merged fine-tune stored in 16 bits").
EXACT = Tolerance(1e-4, 1e-4)


@dataclass
class Adapter:
    """What an XTuner checkpoint holds: LoRA pairs by LLM module path, and whole tensors that
    replace the base's (mlp1 always; the vision encoder too when it was not frozen)."""

    lora: dict[str, tuple[torch.Tensor, torch.Tensor]]  # "model.layers.0.attention.wqkv" -> (A, B)
    whole: dict[str, torch.Tensor]  # "mlp1.1.weight" -> tensor, named as in the HF model
    scale: float  # lora_alpha / lora_r


@dataclass(frozen=True)
class Conversion:
    """What ``convert`` wrote and what its checks measured (logits on ``sample_inputs``)."""

    out_dir: Path
    lora_modules: int
    dtype: str  # of the stored weights
    merge_max_abs_diff: float  # merged (float32, before storing) vs base + adapters
    max_abs_diff: float  # the written model vs base + adapters
    mean_relative_diff: float  # mean |difference| / mean |logit|, written vs base + adapters
    top1_agreement: float  # share of positions where both predict the same next token
    tolerance: str  # what the written model was required to meet, in words


def _stored_dtype(model_dir: Path) -> torch.dtype:
    """The dtype the model directory stores its language model's weights in, read from the
    safetensors header (config.json names it "torch_dtype" or, since transformers 5, "dtype")."""
    from safetensors import safe_open

    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{model_dir} holds no .safetensors weights; convert reads safetensors models")
    names = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16}
    with safe_open(str(files[0]), "pt") as f:
        name = next((k for k in f.keys() if k.startswith("language_model.")), next(iter(f.keys())))
        return names.get(f.get_slice(name).get_dtype(), torch.float32)


def _checkpoint_file(checkpoint: Path) -> Path:
    """The file holding the weights: XTuner's ``iter_N.pth`` file, or, under DeepSpeed, the
    model-states file inside the ``iter_N.pth`` folder."""
    if checkpoint.is_file():
        return checkpoint
    if checkpoint.is_dir():
        states = sorted(checkpoint.glob("*model_states.pt"))
        if states:
            return states[0]
        raise FileNotFoundError(f"{checkpoint} is a folder without a *model_states.pt file; give an XTuner "
                                "iter_N.pth checkpoint (a file, or a DeepSpeed checkpoint folder)")
    raise FileNotFoundError(f"checkpoint {checkpoint} does not exist; give the iter_N.pth that training wrote "
                            "(see the work folder, or training.last_checkpoint(work_dir))")


def _lora_settings(meta: dict, lora_r: int | None, lora_alpha: float | None) -> tuple[int, float]:
    """LoRA rank and alpha: given, or read from the training config mmengine stores in the checkpoint."""
    if lora_r is not None and lora_alpha is not None:
        return lora_r, lora_alpha
    text = meta.get("cfg", "") if isinstance(meta, dict) else ""  # mmengine's pretty text of the config
    r, alpha = re.search(r"\br=(\d+)", text), re.search(r"\blora_alpha=(\d+(?:\.\d+)?)", text)
    if r and alpha:
        return lora_r or int(r.group(1)), lora_alpha or float(alpha.group(1))
    raise ValueError("the checkpoint does not say its LoRA rank and alpha (no training config inside it); "
                     "pass lora_r=... and lora_alpha=... as in the config you trained with")


class _Unread:
    """What each of ``XTUNER_LOG_GLOBALS`` becomes when a checkpoint is read: built from anything,
    holding nothing, calling nothing (convert never looks at the training log)."""

    def __new__(cls, *args, **kwargs):
        return super().__new__(cls)

    def __init__(self, *args, **kwargs) -> None:
        pass

    def __setstate__(self, state) -> None:
        pass


def read_checkpoint(path: str | Path) -> dict:
    """The dict a checkpoint file holds, read without running code from it (see the module's
    docstring); ``ValueError`` naming the file, and the global it wanted, for anything else."""
    path = Path(path)
    with path.open("rb") as f:
        head = f.read(4)
    if not head.startswith((ZIP_MAGIC, PICKLE_PROTO)):
        raise ValueError(f"{path} is not a PyTorch checkpoint (torch.save writes a zip archive, older versions a "
                         "pickle; this file is neither): give the iter_N.pth that XTuner wrote")
    try:
        with torch.serialization.safe_globals([(_Unread, name) for name in XTUNER_LOG_GLOBALS]):
            saved = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        wanted = re.search(r"GLOBAL (\S+)", str(err))
        raise ValueError(
            f"{path} wants {f'the global {wanted[1]}' if wanted else 'an object built by code'} when read; the "
            "kit never runs code from a data file, and an XTuner 0.2.0 checkpoint holds only tensors, plain values "
            "and its training log. Give the iter_N.pth that XTuner wrote; a checkpoint made another way must hold "
            "only {'state_dict': {name: tensor}, 'meta': {'cfg': text}}.") from None
    except (RuntimeError, EOFError) as err:  # a damaged or cut-short archive
        reason = (str(err).splitlines() or [type(err).__name__])[0]
        raise ValueError(f"{path} is not a PyTorch checkpoint torch.load can read ({reason}); give the iter_N.pth "
                         "that XTuner wrote, whole (a copy still in progress is cut short)") from None
    if not isinstance(saved, dict):
        raise ValueError(f"{path} holds a {type(saved).__name__}, not the dict of an XTuner checkpoint "
                         "({'state_dict': ..., 'meta': ...}); give the iter_N.pth that XTuner wrote")
    return saved


def load_adapter(checkpoint: str | Path, lora_r: int | None = None, lora_alpha: float | None = None) -> Adapter:
    """Read an XTuner checkpoint into LoRA pairs and whole weights, refusing anything else in it."""
    path = _checkpoint_file(Path(checkpoint))
    saved = read_checkpoint(path)
    state = saved.get("state_dict") or saved.get("module") or saved
    if not isinstance(state, dict):
        raise ValueError(f"{path}: its state_dict is a {type(state).__name__}, not a dict of tensors; give the "
                         "iter_N.pth that XTuner wrote")
    lora: dict[str, dict[str, torch.Tensor]] = {}
    whole: dict[str, torch.Tensor] = {}
    unknown = []
    for key, tensor in state.items():
        if not isinstance(tensor, torch.Tensor) or not isinstance(key, str):
            unknown.append(key)
        elif m := LORA_KEY.match(key):
            lora.setdefault(m["module"], {})[m["which"]] = tensor.float()
        elif m := (MLP1_KEY.match(key) or VISION_KEY.match(key)):
            whole[m["name"]] = tensor
        else:
            unknown.append(key)
    if unknown:
        raise ValueError(f"{path} holds entries that are neither LLM LoRA nor mlp1 or vision weights "
                         f"(e.g. {unknown[:3]}); convert handles XTuner's InternVL fine-tunes with LoRA on the LLM")
    halves = [module for module, pair in lora.items() if set(pair) != {"A", "B"}]
    if halves or not lora:
        raise ValueError(f"{path}: no complete LoRA pairs (half pairs: {halves[:3]}); is it an XTuner LoRA checkpoint?")
    r, alpha = _lora_settings(saved.get("meta", {}), lora_r, lora_alpha)
    if not any(name.startswith("mlp1.") for name in whole):
        raise ValueError(f"{path} holds no mlp1 weights; XTuner always saves them: is it an XTuner InternVL checkpoint?")
    return Adapter({m: (p["A"], p["B"]) for m, p in lora.items()}, whole, alpha / r)


@contextmanager
def adapter_attached(model, adapter: Adapter) -> Iterator[None]:
    """The model as XTuner trained it: each adapted Linear adds ``scale * B (A x)`` to its output
    (dropout is off at inference), and the whole tensors (mlp1, ...) take the trained values.
    Undone on exit."""
    llm = model.language_model
    hooks = []
    for module_path, (a, b) in adapter.lora.items():
        layer = llm.get_submodule(module_path)
        a_, b_ = a.to(layer.weight.device, torch.float32), b.to(layer.weight.device, torch.float32)

        def add_lora(module, inputs, output, a_=a_, b_=b_):
            delta = F.linear(F.linear(inputs[0].float(), a_), b_) * adapter.scale
            return output + delta.to(output.dtype)

        hooks.append(layer.register_forward_hook(add_lora))
    state = model.state_dict()
    original = {name: state[name].clone() for name in adapter.whole}
    _load_whole(model, adapter.whole)
    try:
        yield
    finally:
        for hook in hooks:
            hook.remove()
        _load_whole(model, original)


def _load_whole(model, tensors: dict[str, torch.Tensor]) -> None:
    """Copy whole tensors into the model by name; a name the model lacks is an error."""
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    if unexpected:
        raise ValueError(f"the checkpoint has tensors this model does not: {unexpected[:3]}; was it trained from "
                         "another base model?")


@torch.no_grad()
def merge_adapter(model, adapter: Adapter) -> None:
    """Fold the adapter into ``model``'s weights in place (float32 arithmetic, then the weight's dtype)."""
    llm = model.language_model
    for module_path, (a, b) in adapter.lora.items():
        weight = llm.get_submodule(module_path).weight
        merged = weight.float() + adapter.scale * (b.float() @ a.float()).to(weight.device)
        weight.copy_(merged.to(weight.dtype))
    missing = {f"mlp1.{k}" for k in model.mlp1.state_dict()} - set(adapter.whole)
    if missing:
        raise ValueError(f"the checkpoint lacks mlp1 weights {sorted(missing)}; XTuner always saves mlp1")
    _load_whole(model, adapter.whole)


def sample_inputs(model, tokenizer) -> dict[str, torch.Tensor]:
    """A fixed picture and question, prompted as ``chat()`` prompts them: what the logit check runs."""
    from internvl_course.data.drawing import Piece, Scene, render
    from internvl_course.model.preprocess import build_transform
    from internvl_course.model.prompt import build_prompt, with_image

    picture = render(Scene(pieces=(Piece("circle", "red", 2), Piece("square", "blue", 1))), seed=5)
    pixel_values = build_transform(model.config.force_image_size)(picture)[None]
    prompt = build_prompt(model.template, model.system_message, [(with_image("图中的菜是什么？"), None)], [1],
                          model.num_image_token)
    return {"pixel_values": pixel_values, "input_ids": tokenizer(prompt, return_tensors="pt").input_ids}


@torch.no_grad()
def _logits(model, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    device = next(model.parameters()).device
    dtype = model.vision_model.embeddings.patch_embedding.weight.dtype
    out = model(pixel_values=inputs["pixel_values"].to(device, dtype), input_ids=inputs["input_ids"].to(device),
                image_flags=torch.ones(1, dtype=torch.long, device=device))
    return out.logits.float().cpu()


def convert(base_dir: str | Path, checkpoint: str | Path, out_dir: str | Path, *, lora_r: int | None = None,
            lora_alpha: float | None = None, system_message: str = XTUNER_SYSTEM_MESSAGE, device: str = "cpu",
            store_dtype: str | None = None, overwrite: bool = False) -> Conversion:
    """Merge ``checkpoint`` into the model at ``base_dir`` and write an official-format model to ``out_dir``.

    ``system_message``: the one the model was trained with (XTuner's, for InternLM2 models).
    ``store_dtype`` ("float32", "bfloat16", ...): the dtype to store; default the base's. Raises
    if the merge (in float32) leaves ``EXACT`` or the written model does not match it (see
    ``EXACT``); the folder is then not put in place.
    """
    from internvl_course.model.folder import inspect_folder
    from internvl_course.model.load import load_model
    from internvl_course.model.prepare import tokenizer_config_for_kit
    from internvl_course.model.write import adopt_older_model_folder, write_model_folder
    from internvl_course.modelcode.modeling_internvl_chat import InternVLChatModel

    base, out, checkpoint = Path(base_dir), Path(out_dir), Path(checkpoint)
    folder = inspect_folder(base)  # a bad base folder is refused before the checkpoint is read
    refuse_overlap(out, {"base model": base, "checkpoint": checkpoint},
                   "Choose a new folder outside both, e.g. work_dirs/models/<name>-finetuned.")
    if overwrite:
        adopt_older_model_folder(out)  # lesson 07's earlier output, converted by an older kit
    refuse_existing(out, overwrite)  # now, not after minutes of merging
    adapter = load_adapter(checkpoint, lora_r, lora_alpha)

    # Merge and check in float32, store in the base's own dtype: the check then measures the
    # merge and the rounding of the stored weights, not the noise of bfloat16 arithmetic.
    dtype = getattr(torch, store_dtype) if store_dtype else _stored_dtype(base)
    model, tokenizer = load_model(folder.path, dtype=torch.float32, device=device)
    template = XTUNER_TEMPLATES.get(folder.llm_architecture, folder.template)
    model.system_message = system_message
    model.config.system_message = system_message
    model.config.template = template
    inputs = sample_inputs(model, tokenizer)
    with adapter_attached(model, adapter):
        expected = _logits(model, inputs)
    merge_adapter(model, adapter)
    merge_diff = (_logits(model, inputs) - expected).abs().max().item()
    merged_state = {k: v.detach().cpu() for k, v in model.state_dict().items()} if dtype != torch.float32 else {}
    if not merge_diff <= EXACT.bound(expected):
        raise RuntimeError(f"the merged model's logits differ from the adapter model's by {merge_diff:.4g} in "
                           f"float32 (allowed {EXACT.bound(expected):.4g}): the merge is wrong; nothing was written")

    results: list[Conversion] = []

    def check(staging: Path) -> None:
        """The folder as written, loaded back, against base + adapters; raising keeps it out of place."""
        model.cpu()  # the device holds only the written copy from here on
        written = InternVLChatModel.from_pretrained(staging, torch_dtype=torch.float32).to(device).eval()
        got = _logits(written, inputs)
        diff = (got - expected).abs().max().item()
        if dtype == torch.float32:
            tolerance = f"max |logit difference| <= {EXACT.bound(expected):.3g} (float32 storage)"
            problem = None if diff <= EXACT.bound(expected) else f"max |logit difference| {diff:.4g}"
        else:
            tolerance = (f"every stored tensor equals the float32 merge rounded to {str(dtype)[6:]}, bit for bit "
                         "(the logits then differ from the adapter model's only by that rounding)")
            problem = _first_mismatch(staging, merged_state, dtype)
        if problem is not None:
            raise RuntimeError(f"the written model does not match the merge ({problem}); required: {tolerance}. "
                               f"Nothing was written to {out}")
        relative = ((got - expected).abs().mean() / expected.abs().mean()).item()
        top1 = (got.argmax(-1) == expected.argmax(-1)).float().mean().item()
        results.append(Conversion(out, len(adapter.lora), str(dtype).removeprefix("torch."), merge_diff, diff,
                                  relative, top1, tolerance))

    generation = base / "generation_config.json"
    write_model_folder(model.to(dtype), tokenizer, out, tokenizer_files=folder.tokenizer_files, overwrite=overwrite,
                       tokenizer_config=tokenizer_config_for_kit(folder, system_message, template),
                       generation_config=json.loads(generation.read_text(encoding="utf-8"))
                       if generation.is_file() else None, check=check)
    return results[0]


def _first_mismatch(folder: Path, merged: dict[str, torch.Tensor], dtype: torch.dtype) -> str | None:
    """The first stored tensor that is not ``merged`` rounded to ``dtype``, or None."""
    from safetensors import safe_open

    seen = set()
    for file in sorted(folder.glob("*.safetensors")):
        with safe_open(str(file), "pt") as f:
            for name in f.keys():
                seen.add(name)
                if name in merged and not torch.equal(f.get_tensor(name), merged[name].to(dtype)):
                    return f"tensor {name} differs"
    missing = set(merged) - seen
    return f"tensors missing: {sorted(missing)[:3]}" if missing else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="internvl-course convert",
                                     description="Merge an XTuner LoRA checkpoint into its base model and write "
                                                 "an official-format InternVL2 directory.")
    parser.add_argument("base_dir", help="the model directory that was fine-tuned")
    parser.add_argument("checkpoint", help="XTuner's iter_N.pth (file, or DeepSpeed folder)")
    parser.add_argument("out_dir", help="where to write the merged model (a new folder)")
    parser.add_argument("--lora-r", type=int, help="LoRA rank, if the checkpoint does not hold its config")
    parser.add_argument("--lora-alpha", type=float, help="LoRA alpha, likewise")
    parser.add_argument("--device", default="cpu", help="where to merge and check (cpu, cuda)")
    parser.add_argument("--store-dtype", choices=["float32", "bfloat16", "float16"],
                        help="dtype of the written weights (default: the base model's)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace out_dir if it exists and the kit wrote it (an earlier conversion)")
    args = parser.parse_args(argv)
    try:
        result = convert(args.base_dir, args.checkpoint, args.out_dir, lora_r=args.lora_r,
                         lora_alpha=args.lora_alpha, device=args.device, store_dtype=args.store_dtype,
                         overwrite=args.overwrite)
    except (ValueError, FileNotFoundError, FileExistsError) as err:  # bad input: the message names it and the fix
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"wrote {result.out_dir} ({result.lora_modules} LoRA layers merged, stored in {result.dtype})")
    print(f"logits vs base + adapters: merge {result.merge_max_abs_diff:.3g}; written: max {result.max_abs_diff:.3g}, "
          f"mean relative {result.mean_relative_diff:.3g}, same next token {result.top1_agreement:.1%} "
          f"(required: {result.tolerance})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
