"""The embedded tiny InternVL2: the official architecture and files, with tiny widths.

``build_tiny_model(out_dir)`` writes a model directory with the same files as
OpenGVLab/InternVL2-2B (config.json with auto_map, the code files, safetensors weights,
tokenizer files, generation_config.json), so every tool that loads the real model (transformers
``AutoModel``, XTuner, LMDeploy) loads this one the same way, offline, on a CPU.

The geometry is the real one (448 px tiles, patch 14, pixel shuffle 0.5: 256 tokens a tile,
dynamic tiling with a thumbnail); only the widths and depths are small, so that one tile goes
through the whole model in a fraction of a second on a laptop CPU.

``family`` picks which release the stand-in copies, each in the official config schema with that
family's settings at tiny widths (``TINY_FAMILIES``): ``"internvl2-2b"`` (the embedded model:
InternLM2 and the kit's talking base), ``"internvl2-1b"`` (a Qwen2 LLM, a byte-level BPE tokenizer,
the Hermes-2 template) and ``"internvl2_5-2b"`` (InternLM2.5, InternVL2.5's template and system
message). ``lay_out_as_download`` turns any of them into a folder laid out as a download from the
hub, whose own code files fail loudly if anything imports them: the kit's tests walk the road a
student with real weights walks, and prove the folder's code never runs.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from internvl_course.fileio import atomic_directory
from internvl_course.model.write import write_model_folder
from internvl_course.modelcode.configuration_internvl_chat import InternVLChatConfig
from internvl_course.modelcode.official_configs import INTERNVL2_1B_CONFIG, INTERNVL2_2B_CONFIG, INTERNVL2_5_2B_CONFIG
from internvl_course.paths import BASE_WEIGHTS, tiny_model_dir
from internvl_course.tiny.internlm2_tokenizer import build_tokenizer

# The talking base (internvl_course.tiny.pretrain): trained weights shipped with the kit's source, so
# they sit beside the package, not under a movable work folder.
BASE_TOKENIZER = BASE_WEIGHTS.with_name("tokenizer.model")

# InternViT-300M's settings (layer norm, qkv bias, layer scale, no q/k norm) at a tiny width.
TINY_VISION = dict(hidden_size=64, num_attention_heads=4, intermediate_size=256, num_hidden_layers=2)
# InternLM2's settings (GQA with 2 query heads per KV head, rope theta 1e6, dynamic rope
# scaling) at a tiny width.
TINY_LLM = dict(hidden_size=128, num_attention_heads=4, num_key_value_heads=2, intermediate_size=384,
                num_hidden_layers=3, max_position_embeddings=8192)

#: The releases a stand-in can copy: the official config it follows, the tokenizer it carries
#: ("internlm2": the kit's sentencepiece model; "qwen2": a byte-level BPE) and the weights
#: ``weights="base"`` means (the talking base fits only the InternLM2 shapes; else random).
TINY_FAMILIES: dict[str, dict] = {
    "internvl2-2b": {"config": INTERNVL2_2B_CONFIG, "tokenizer": "internlm2", "base": True},
    "internvl2-1b": {"config": INTERNVL2_1B_CONFIG, "tokenizer": "qwen2", "base": False},
    "internvl2_5-2b": {"config": INTERNVL2_5_2B_CONFIG, "tokenizer": "internlm2", "base": True},
}


def tiny_config(tokenizer, family: str = "internvl2-2b") -> InternVLChatConfig:
    """The family's official configuration with tiny widths and the tokenizer's vocabulary and ids."""
    official = json.loads(json.dumps(_family(family)["config"]))  # a deep copy
    vision = {**official.pop("vision_config"), **TINY_VISION}
    llm = {**official.pop("llm_config"), **TINY_LLM,
           "vocab_size": len(tokenizer), "bos_token_id": tokenizer.bos_token_id,
           "eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id,
           "torch_dtype": "float32"}
    if llm["architectures"] == ["Qwen2ForCausalLM"]:
        llm["max_window_layers"] = TINY_LLM["num_hidden_layers"]
    official["torch_dtype"] = "float32"
    return InternVLChatConfig(vision_config=vision, llm_config=llm, **official)


def _family(family: str) -> dict:
    if family not in TINY_FAMILIES:
        raise ValueError(f"family={family!r} is not a stand-in the kit builds; choose one of "
                         f"{', '.join(TINY_FAMILIES)}")
    return TINY_FAMILIES[family]


def generation_config(tokenizer, family: str = "internvl2-2b") -> dict:
    """Stop on </s> or <|im_end|>, as InternVL2-2B's generation_config.json does (Qwen2: on
    <|im_end|> or <|endoftext|>)."""
    if _family(family)["tokenizer"] == "qwen2":
        from internvl_course.tiny.qwen2_tokenizer import qwen2_generation_config

        return qwen2_generation_config(tokenizer)
    return {"bos_token_id": tokenizer.bos_token_id, "pad_token_id": tokenizer.pad_token_id,
            "eos_token_id": [tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<|im_end|>")]}


def _weights_file(weights: str | Path | None, family: str = "internvl2-2b") -> Path | None:
    """The safetensors file ``weights`` names, or None for the seeded random initialisation."""
    if weights is None or weights == "random":
        return None
    if weights == "base":
        return BASE_WEIGHTS if BASE_WEIGHTS.is_file() and _family(family)["base"] else None
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


@contextmanager
def family_tokenizer(family: str, model: bytes | None = None) -> Iterator[tuple[Any, list[Path]]]:
    """(tokenizer, its files) for ``family``, written to a temporary folder that is removed on exit.

    InternLM2 families get the kit's sentencepiece tokenizer (``model``: a trained sentencepiece
    model to reuse, else a fresh one), the Qwen2 family the kit's byte-level BPE.
    """
    with tempfile.TemporaryDirectory(prefix="tokenizer-") as tmp:
        folder = Path(tmp)
        if _family(family)["tokenizer"] == "qwen2":
            from transformers import AutoTokenizer

            from internvl_course.tiny.qwen2_tokenizer import build_qwen2_tokenizer

            build_qwen2_tokenizer(folder)
            tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=False)
        else:
            from internvl_course.modelcode.tokenization_internlm2 import InternLM2Tokenizer

            build_tokenizer(folder, model=model, template=_family(family)["config"]["template"])
            tokenizer = InternLM2Tokenizer.from_pretrained(folder)
        yield tokenizer, sorted(folder.iterdir())


def build_tiny_model(out_dir: str | Path | None = None, seed: int = 0, weights: str | Path | None = "base",
                     overwrite: bool = False, family: str = "internvl2-2b") -> Path:
    """Write the tiny InternVL2 to ``out_dir`` (default ``work_dirs/models/internvl2-tiny``).

    ``family``: which release it stands in for (``TINY_FAMILIES``; see the module docstring).

    Same seed, same bytes. ``weights``:

    - ``"base"`` (default): the kit's talking base, ``data/tiny_base/model.safetensors``, so that
      every lesson starts from a model that answers in sentences; the seeded random
      initialisation while that file does not exist (before ``internvl-course base``);
    - ``"random"`` (or None): the seeded random initialisation, what the base is trained from;
    - a path: a safetensors file of trained weights for this architecture.

    Trained weights come with the ``tokenizer.model`` they were trained with, beside them; the
    random initialisation gets a freshly trained tokenizer.

    The directory is written by ``model.write.write_model_folder``: assembled beside ``out_dir``
    and renamed into place, so a crash never leaves half a model behind.
    """
    from safetensors.torch import load_file

    from internvl_course.modelcode.modeling_internvl_chat import InternVLChatModel

    out = Path(out_dir) if out_dir is not None else tiny_model_dir()
    if out.is_dir() and not any(out.iterdir()):
        out.rmdir()  # an empty folder holds nothing to lose
    weights_file = _weights_file(weights, family)
    with family_tokenizer(family, _tokenizer_for(weights_file)) as (tokenizer, tokenizer_files):
        config = tiny_config(tokenizer, family)
        torch.manual_seed(seed)
        model = InternVLChatModel(config).eval()
        if weights_file is not None:
            state = load_file(str(weights_file))
            missing, unexpected = model.load_state_dict(state, strict=False)
            if missing or unexpected:
                raise ValueError(f"{weights_file} does not fit the tiny model: missing {missing[:5]}, "
                                 f"unexpected {unexpected[:5]}. Rebuild it with internvl-course base.")
        return write_model_folder(model, tokenizer, out, tokenizer_files=tokenizer_files, overwrite=overwrite,
                                  generation_config=generation_config(tokenizer, family))


#: What each code file of a folder laid out by ``lay_out_as_download`` does when imported.
TRIPWIRE = ('raise RuntimeError("{name} of a downloaded model folder was imported: the kit promised never to run '
            'a folder\'s own code unless trust_remote_code=True")\n')


def lay_out_as_download(model_dir: str | Path, out_dir: str | Path, code_dir: str | Path | None = None) -> Path:
    """Copy a kit-built folder into ``out_dir`` laid out as a hub download of the same release.

    Tokenizer files and weights stay as they are, and so does the config (the kit writes
    OpenGVLab's schema and ``auto_map`` names) but for ``img_context_token_id``, which only the
    kit's folders carry; every ``*.py`` file is replaced: by the file of that name in ``code_dir``
    (OpenGVLab's own code, for a comparison run beside the kit's) or, by default, by a tripwire that
    raises if anything imports it. ``out_dir`` must not exist yet.
    """
    src, out = Path(model_dir), Path(out_dir)
    with atomic_directory(out) as staging:
        for file in sorted(src.iterdir()):
            if file.name == "config.json":
                config = json.loads(file.read_text(encoding="utf-8"))
                config.pop("img_context_token_id", None)
                (staging / file.name).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
            elif file.suffix != ".py":
                shutil.copyfile(file, staging / file.name)
            elif code_dir is not None:
                shutil.copyfile(Path(code_dir) / file.name, staging / file.name)
            else:
                (staging / file.name).write_text(TRIPWIRE.format(name=file.name), encoding="utf-8")
    return out
