"""Write a model folder in OpenGVLab's layout: the one writer of the tiny, full-size and converted models.

Every folder the kit makes must load the way an InternVL2 download does, with
``AutoModel.from_pretrained(folder, trust_remote_code=True)``, in LMDeploy and in XTuner. So each
holds the same things: config.json (which also names the id of ``<IMG_CONTEXT>``) and safetensors
weights, the kit's model code (and, for InternLM2 LLMs, its tokenizer code), the tokenizer files,
and generation_config.json with the ids generation stops at. The folder is assembled beside its
destination and renamed into place (``fileio.atomic_directory``); a ``check`` that raises leaves
nothing behind.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from internvl_course.fileio import atomic_directory
from internvl_course.model.folder import TOKENIZER_CODE_FILES
from internvl_course.modelcode.configuration_internvl_chat import MODEL_CODE_FILES, llm_architecture
from internvl_course.modelcode.conversation import IMG_CONTEXT_TOKEN
from internvl_course.paths import MODELCODE


def code_files(model) -> tuple[str, ...]:
    """The kit's code files a folder of ``model`` carries: the model code, plus the tokenizer code
    that InternLM2 checkpoints load their tokenizer with."""
    internlm2 = llm_architecture(model.config.llm_config) == "InternLM2ForCausalLM"
    return MODEL_CODE_FILES + (TOKENIZER_CODE_FILES if internlm2 else ())


def _json_text(data: dict[str, Any], ensure_ascii: bool = True) -> str:
    return json.dumps(data, indent=2, sort_keys=True, ensure_ascii=ensure_ascii) + "\n"


def write_model_folder(model, tokenizer, out_dir: str | Path, *, tokenizer_files: Iterable[Path],
                       generation_config: dict[str, Any] | None, tokenizer_config: dict[str, Any] | None = None,
                       overwrite: bool = False, check: Callable[[Path], None] | None = None) -> Path:
    """Write ``model`` with its tokenizer to ``out_dir`` and return it.

    ``tokenizer_files``: the files of the tokenizer's vocabulary and settings, copied (links
    followed); ``tokenizer_config``, when given, is written as tokenizer_config.json instead of the
    copied one (convert's chat template and system message). ``generation_config``: the
    generate() settings of the family (its stop and pad ids), or None for a folder without one.
    The model's config learns the tokenizer's id of ``<IMG_CONTEXT>`` before it is saved.
    ``check(staging)`` runs on the written folder before it is put in place; if it raises, the
    folder is removed and ``out_dir`` is untouched. An existing ``out_dir`` is replaced only with
    ``overwrite``.
    """
    out = Path(out_dir)
    model.config.img_context_token_id = tokenizer.convert_tokens_to_ids(IMG_CONTEXT_TOKEN)
    with atomic_directory(out, overwrite) as staging:
        model.save_pretrained(staging, safe_serialization=True)
        for file in tokenizer_files:
            shutil.copyfile(file, staging / Path(file).name)
        for name in code_files(model):
            shutil.copyfile(MODELCODE / name, staging / name)
        if tokenizer_config is not None:
            (staging / "tokenizer_config.json").write_text(_json_text(tokenizer_config, ensure_ascii=False),
                                                           encoding="utf-8")
        if generation_config is not None:
            (staging / "generation_config.json").write_text(_json_text(generation_config), encoding="utf-8")
        if check is not None:
            check(staging)
    return out
