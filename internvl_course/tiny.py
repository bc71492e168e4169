"""The embedded tiny InternVL2: the official architecture and files, with tiny widths.

``build_tiny_model(out_dir)`` writes a model directory with the same files as
OpenGVLab/InternVL2-2B (config.json with auto_map, the code files, safetensors weights,
tokenizer files, generation_config.json), so every tool that loads the real model (transformers
``AutoModel``, XTuner, LMDeploy) loads this one the same way, offline, on a CPU.

The geometry is the real one (448 px tiles, patch 14, pixel shuffle 0.5: 256 tokens a tile,
dynamic tiling with a thumbnail); only the widths and depths are small, so that one tile goes
through the whole model in a fraction of a second on a laptop CPU.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from .modelcode.configuration_internvl_chat import MODEL_CODE_FILES, InternVLChatConfig
from .fileio import atomic_directory
from .modelcode.official_configs import INTERNVL2_2B_CONFIG
from .paths import tiny_model_dir
from .tokenizer_build import build_tokenizer

MODELCODE = Path(__file__).resolve().parent / "modelcode"
# The talking base (internvl_course.pretrain): trained weights shipped with the kit's source, so
# they sit beside the package, not under a movable work folder.
BASE_WEIGHTS = Path(__file__).resolve().parent.parent / "data" / "tiny_base" / "model.safetensors"
BASE_TOKENIZER = BASE_WEIGHTS.with_name("tokenizer.model")

# InternViT-300M's settings (layer norm, qkv bias, layer scale, no q/k norm) at a tiny width.
TINY_VISION = dict(hidden_size=64, num_attention_heads=4, intermediate_size=256, num_hidden_layers=2)
# InternLM2's settings (GQA with 2 query heads per KV head, rope theta 1e6, dynamic rope
# scaling) at a tiny width.
TINY_LLM = dict(hidden_size=128, num_attention_heads=4, num_key_value_heads=2, intermediate_size=384,
                num_hidden_layers=3, max_position_embeddings=8192)


def tiny_config(tokenizer) -> InternVLChatConfig:
    """InternVL2-2B's configuration with tiny widths and the kit tokenizer's vocabulary and ids."""
    official = json.loads(json.dumps(INTERNVL2_2B_CONFIG))  # a deep copy
    vision = {**official.pop("vision_config"), **TINY_VISION}
    llm = {**official.pop("llm_config"), **TINY_LLM,
           "vocab_size": len(tokenizer), "bos_token_id": tokenizer.bos_token_id,
           "eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id,
           "torch_dtype": "float32"}
    official["torch_dtype"] = "float32"
    return InternVLChatConfig(vision_config=vision, llm_config=llm, **official)


def generation_config(tokenizer) -> dict:
    """Stop on </s> or <|im_end|>, as InternVL2-2B's generation_config.json does."""
    return {"bos_token_id": tokenizer.bos_token_id, "pad_token_id": tokenizer.pad_token_id,
            "eos_token_id": [tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<|im_end|>")]}


def _weights_file(weights: str | Path | None) -> Path | None:
    """The safetensors file ``weights`` names, or None for the seeded random initialisation."""
    if weights is None or weights == "random":
        return None
    if weights == "base":
        return BASE_WEIGHTS if BASE_WEIGHTS.is_file() else None
    path = Path(weights)
    if not path.is_file():
        raise FileNotFoundError(f"weights={str(weights)!r}: no such file. Give a safetensors file of trained tiny "
                                "weights, \"base\" for the kit's talking base or \"random\" for the seeded initialisation.")
    return path


def _tokenizer_for(weights_file: Path | None) -> bytes | None:
    """The sentencepiece model trained weights came with (``tokenizer.model`` beside them), if any."""
    if weights_file is None:
        return None
    shipped = weights_file.with_name("tokenizer.model")
    return shipped.read_bytes() if shipped.is_file() else None


def build_tiny_model(out_dir: str | Path | None = None, seed: int = 0, weights: str | Path | None = "base",
                     overwrite: bool = False) -> Path:
    """Write the tiny InternVL2 to ``out_dir`` (default ``work_dirs/models/internvl2-tiny``).

    Same seed, same bytes. ``weights``:

    - ``"base"`` (default): the kit's talking base, ``data/tiny_base/model.safetensors``, so that
      every lesson starts from a model that answers in sentences; the seeded random
      initialisation while that file does not exist (before ``python -m internvl_course.pretrain``);
    - ``"random"`` (or None): the seeded random initialisation, what the base is trained from;
    - a path: a safetensors file of trained weights for this architecture.

    Trained weights come with the ``tokenizer.model`` they were trained with, beside them; the
    random initialisation gets a freshly trained tokenizer.

    The directory is assembled in a temporary folder beside ``out_dir`` and renamed into place,
    so a crash never leaves half a model behind.
    """
    from safetensors.torch import load_file
    from transformers import AutoTokenizer

    from .modelcode.modeling_internvl_chat import InternVLChatModel

    out = Path(out_dir) if out_dir is not None else tiny_model_dir()
    if out.is_dir() and not any(out.iterdir()):
        out.rmdir()  # an empty folder holds nothing to lose
    weights_file = _weights_file(weights)
    with atomic_directory(out, overwrite) as staging:
        build_tokenizer(staging, model=_tokenizer_for(weights_file))
        tokenizer = AutoTokenizer.from_pretrained(staging, trust_remote_code=True, use_fast=False)
        config = tiny_config(tokenizer)
        torch.manual_seed(seed)
        model = InternVLChatModel(config).eval()
        if weights_file is not None:
            state = load_file(str(weights_file))
            missing, unexpected = model.load_state_dict(state, strict=False)
            if missing or unexpected:
                raise ValueError(f"{weights_file} does not fit the tiny model: missing {missing[:5]}, "
                                 f"unexpected {unexpected[:5]}. Rebuild it with python -m internvl_course.pretrain.")
        model.save_pretrained(staging, safe_serialization=True)
        for name in MODEL_CODE_FILES:
            shutil.copyfile(MODELCODE / name, staging / name)
        (staging / "generation_config.json").write_text(
            json.dumps(generation_config(tokenizer), indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return out
