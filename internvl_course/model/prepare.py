"""A folder LMDeploy and XTuner can read that runs the kit's code beside a checkpoint's weights.

LMDeploy and XTuner open model folders themselves (``AutoConfig``/``AutoModel``/``AutoTokenizer``
with ``trust_remote_code=True``), so handing them a download would run the download's own Python,
which breaks under today's transformers (docs/design.md). ``prepared_folder`` gives them instead a
folder under ``work_dirs/prepared/`` that holds:

- the checkpoint's weight files, linked (symbolic links: nothing is copied, nothing changes);
- the kit's model code and, for InternLM2 families, the kit's tokenizer code;
- config.json and tokenizer_config.json as the download has them, with ``auto_map`` pointing at
  the kit's code and the chat template of the checkpoint's own ``template`` field, so that
  LMDeploy builds the same prompt ids as the kit's ``chat()``;
- the other tokenizer and generation files, linked.

It is rebuilt when the source changes (its config, tokenizer files, weight sizes and times) or the
kit's code does, reused otherwise, and announced in one line. A folder the kit wrote itself (its
code files are the kit's) is used as it is. Like every folder the kit writes, a prepared folder
carries ``fileio.MARKER``; one prepared by an older kit has only the manifest, which proves it the
kit's just as well.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

from internvl_course.fileio import atomic_directory, atomic_write_text, files_not_written, json_text, mark_as_written
from internvl_course.modelcode.configuration_internlm2 import LLM_AUTO_MAP
from internvl_course.modelcode.configuration_internvl_chat import AUTO_MAP, MODEL_CODE_FILES
from internvl_course.paths import work_dir
from internvl_course.model.folder import TOKENIZER_CODE_FILES, ModelFolder, inspect_folder
from internvl_course.paths import MODELCODE

MANIFEST = "prepared_by_internvl_course.json"
#: The kit's tokenizer classes for InternLM2 folders. The fast slot is empty: the kit's fast class
#: rebuilds only unigram models like its own, while InternLM2's released tokenizer.model is BPE,
#: so AutoTokenizer must take the slow class (as LMDeploy does with use_fast=False).
INTERNLM2_TOKENIZER_AUTO_MAP = {"AutoTokenizer": ["tokenization_internlm2.InternLM2Tokenizer", None]}


def _digest(folder: ModelFolder) -> str:
    """Changes when the checkpoint or the kit's code changes: what a prepared folder depends on."""
    h = hashlib.sha256(str(folder.path).encode())
    for file in (folder.path / "config.json", *folder.tokenizer_files):
        h.update(file.name.encode() + file.read_bytes())
    for file in folder.weight_files:
        stat = file.stat()
        h.update(f"{file.name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    for name in MODEL_CODE_FILES + TOKENIZER_CODE_FILES:
        h.update((MODELCODE / name).read_bytes())
    return h.hexdigest()


def tokenizer_config_for_kit(folder: ModelFolder, system_message: str | None = None,
                             template: str | None = None) -> dict:
    """The folder's tokenizer_config.json, pointed at the kit's tokenizer code (InternLM2) or at
    transformers' own classes (no ``auto_map``), with the chat template of ``template`` (default:
    the folder's own) and ``system_message`` (default: the config's, else the template's)."""
    from internvl_course.tiny.internlm2_tokenizer import chat_template

    config = json.loads((folder.path / "tokenizer_config.json").read_text(encoding="utf-8"))
    if folder.uses_internlm2_tokenizer:
        config["auto_map"] = INTERNLM2_TOKENIZER_AUTO_MAP
    else:
        config.pop("auto_map", None)
    system_message = system_message or folder.config.get("system_message")
    config["chat_template"] = chat_template(system_message, template or folder.template)
    return config


def config_for_kit(folder: ModelFolder) -> dict:
    """The folder's config.json with ``auto_map`` naming the kit's code files."""
    config = json.loads(json.dumps(folder.config))
    config["auto_map"] = dict(AUTO_MAP)
    if folder.uses_internlm2_tokenizer:
        config["llm_config"]["auto_map"] = dict(LLM_AUTO_MAP)
    else:
        config["llm_config"].pop("auto_map", None)
    return config


def _adopt_older(folder: Path) -> None:
    """Give a folder an older kit prepared (its manifest, no marker) the marker it would carry now."""
    if (folder / MANIFEST).is_file() and files_not_written(folder) is None:
        mark_as_written(folder)


def _remove_stale(current: Path, source: Path) -> None:
    """Delete the kit's earlier prepared folders of the same source (their manifest proves the kit
    wrote them; they hold only links and the kit's own files), unless something was added to one."""
    for other in current.parent.iterdir():
        manifest = other / MANIFEST
        if other != current and manifest.is_file():
            if json.loads(manifest.read_text(encoding="utf-8")).get("source") == str(source):
                _adopt_older(other)
                if files_not_written(other) == []:
                    shutil.rmtree(other)


def prepared_folder(model_path: str | Path, tool: str, quiet: bool = False) -> Path:
    """A folder ``tool`` (LMDeploy, XTuner) can load with the kit's code; ``model_path`` itself
    when the kit wrote it. Checked first (``inspect_folder``), so bad input fails here, early."""
    folder = inspect_folder(model_path)
    if folder.kit_written:
        return folder.path
    digest = _digest(folder)
    out = work_dir() / "prepared" / f"{folder.path.name}-{digest[:12]}"
    manifest = out / MANIFEST
    if manifest.is_file() and json.loads(manifest.read_text(encoding="utf-8")).get("digest") == digest:
        if not quiet:
            print(f"{tool} reads {out}: prepared earlier from {folder.path} (the kit's code beside its linked "
                  "weights), still up to date")
        return out
    _adopt_older(out)
    with atomic_directory(out, overwrite=manifest.is_file()) as staging:
        for file in folder.weight_files:
            os.symlink(file, staging / file.name)
        index = folder.path / "model.safetensors.index.json"
        if index.is_file():
            os.symlink(index, staging / index.name)
        for name in MODEL_CODE_FILES + (TOKENIZER_CODE_FILES if folder.uses_internlm2_tokenizer else ()):
            shutil.copyfile(MODELCODE / name, staging / name)
        for file in folder.tokenizer_files:
            if file.name != "tokenizer_config.json":
                os.symlink(file, staging / file.name)
        if (folder.path / "generation_config.json").is_file():
            os.symlink(folder.path / "generation_config.json", staging / "generation_config.json")
        atomic_write_text(staging / "config.json", json_text(config_for_kit(folder)))
        atomic_write_text(staging / "tokenizer_config.json", json_text(tokenizer_config_for_kit(folder)))
        atomic_write_text(staging / MANIFEST, json_text({"source": str(folder.path), "digest": digest,
                                                          "family": folder.family, "for": tool}))
    _remove_stale(out, folder.path)
    if not quiet:
        print(f"prepared {out} for {tool}: {folder.path}'s weights (linked, not copied) with the kit's code and "
              f"tokenizer files, so that the folder's own Python ({', '.join(folder.code_files) or 'none'}) "
              "never runs")
    return out
