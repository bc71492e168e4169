"""Write a model folder in OpenGVLab's layout: the one writer of the tiny, full-size and converted models.

Every folder the kit makes must load the way an InternVL2 download does, with
``AutoModel.from_pretrained(folder, trust_remote_code=True)``, in LMDeploy and in XTuner. So each
holds the same things: config.json (which also names the id of ``<IMG_CONTEXT>``) and safetensors
weights, the kit's model code (and, for InternLM2 LLMs, its tokenizer code), the tokenizer files,
and generation_config.json with the ids generation stops at. The folder is assembled beside its
destination and renamed into place (``fileio.atomic_directory``, which leaves its marker in it, so
the kit may replace the folder later and no other); a ``check`` that raises leaves nothing behind.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from internvl_course.fileio import MARKER, atomic_directory, json_text, mark_as_written
from internvl_course.model.folder import TOKENIZER_CODE_FILES
from internvl_course.modelcode.configuration_internvl_chat import MODEL_CODE_FILES, llm_architecture
from internvl_course.modelcode.conversation import IMG_CONTEXT_TOKEN
from internvl_course.paths import MODELCODE, work_dir


#: Every name ``write_model_folder`` has put in a folder: config, generation settings, weights (one
#: file or shards), the kit's code, and the tokenizer files of both tokenizer kinds.
WRITTEN_NAMES = frozenset({
    "config.json", "generation_config.json", "model.safetensors.index.json", *MODEL_CODE_FILES,
    *TOKENIZER_CODE_FILES, "tokenizer.model", "tokenizer.json", "vocab.json", "merges.txt",
    "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
})
WEIGHT_FILE = re.compile(r"model(-\d{5}-of-\d{5})?\.safetensors")


def adopt_older_model_folder(folder: Path) -> None:
    """Give the marker to a model folder an older kit wrote, before folders carried
    ``fileio.MARKER``, at the kit's own place: directly under work_dirs/models/ (the tiny model,
    lesson 07's conversions), holding config.json and nothing but what ``write_model_folder``
    writes. So ``overwrite`` keeps replacing it; anywhere else such a folder stays refused.
    Raises ``FileExistsError`` naming what else such a folder holds."""
    folder = Path(folder)
    if (folder.is_symlink() or not (folder / "config.json").is_file() or (folder / MARKER).exists()
            or folder.parent.resolve() != (work_dir() / "models").resolve()):
        return
    foreign = sorted(path.name for path in folder.iterdir() if path.is_symlink() or not path.is_file()
                     or not (path.name in WRITTEN_NAMES or WEIGHT_FILE.fullmatch(path.name)))
    if foreign:
        raise FileExistsError(f"{folder} holds {', '.join(foreign)}, which the kit never writes in a model folder, "
                              f"and no {MARKER}; the kit does not overwrite it. Move them out of it (the kit "
                              "rebuilds the rest), or remove the folder yourself.")
    mark_as_written(folder)


def code_files(model) -> tuple[str, ...]:
    """The kit's code files a folder of ``model`` carries: the model code, plus the tokenizer code
    that InternLM2 checkpoints load their tokenizer with."""
    internlm2 = llm_architecture(model.config.llm_config) == "InternLM2ForCausalLM"
    return MODEL_CODE_FILES + (TOKENIZER_CODE_FILES if internlm2 else ())


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
    ``overwrite``, and only if the kit wrote it (``fileio.refuse_existing``, ``adopt_older_model_folder``).
    """
    out = Path(out_dir)
    if overwrite:
        adopt_older_model_folder(out)
    model.config.img_context_token_id = tokenizer.convert_tokens_to_ids(IMG_CONTEXT_TOKEN)
    with atomic_directory(out, overwrite) as staging:
        model.save_pretrained(staging, safe_serialization=True)
        for file in tokenizer_files:
            shutil.copyfile(file, staging / Path(file).name)
        for name in code_files(model):
            shutil.copyfile(MODELCODE / name, staging / name)
        if tokenizer_config is not None:
            (staging / "tokenizer_config.json").write_text(json_text(tokenizer_config),
                                                           encoding="utf-8")
        if generation_config is not None:
            (staging / "generation_config.json").write_text(json_text(generation_config, ensure_ascii=True), encoding="utf-8")
        if check is not None:
            check(staging)
    return out
