"""Load any InternVL2 / InternVL2.5 folder with the kit's own code: the one loading path.

Chat, the demo, evaluation, conversion, pretraining and the lessons all load models here.
``load_model`` checks the folder first (``folder.inspect_folder``: family, template, files,
complete weights), then builds the model from the kit's ``modelcode`` classes and the tokenizer
from the kit's InternLM2 tokenizer or transformers' own classes. A download's own Python files
are never imported: under today's transformers OpenGVLab's remote code loses ``generate``, leaves
its rotary buffers uninitialised and its fast tokenizer maps words to ``<unk>`` (docs/design.md),
while the kit's code gives the same logits as OpenGVLab's where both run. Only
``trust_remote_code=True`` runs the folder's code instead, and says so.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

from internvl_course.model.folder import ModelFolder, ModelFolderError, inspect_folder
from internvl_course.modelcode.conversation import IMG_CONTEXT_TOKEN


def _dtype_argument(dtype: Any) -> dict[str, Any]:
    """``dtype=`` for transformers 5, ``torch_dtype=`` for 4.x (XTuner's pin)."""
    import transformers

    return {"dtype" if int(transformers.__version__.split(".")[0]) >= 5 else "torch_dtype": dtype}


def load_tokenizer(model_path: str | Path, folder: ModelFolder | None = None):
    """The tokenizer of a checked folder, from the kit's or transformers' own code.

    InternLM2 families: the kit's sentencepiece ``InternLM2Tokenizer`` (the slow class, as LMDeploy
    loads it: it reads any sentencepiece model, where the fast rebuild covers only the kit's own).
    Qwen2, Phi-3 and Llama families: transformers' own class that tokenizer_config.json names
    (its fast twin where there is one), taken directly rather than through ``AutoTokenizer``, which
    would read config.json as a config of its own and warn that the model type does not match.
    """
    import transformers

    folder = folder or inspect_folder(model_path)
    if folder.uses_internlm2_tokenizer:
        from internvl_course.modelcode.tokenization_internlm2 import InternLM2Tokenizer

        return InternLM2Tokenizer.from_pretrained(str(folder.path))
    config_file = folder.path / "tokenizer_config.json"
    name = str(json.loads(config_file.read_text(encoding="utf-8")).get("tokenizer_class") or "").removesuffix("Fast")
    tokenizer_class = getattr(transformers, f"{name}Fast", None) or getattr(transformers, name, None) if name else None
    if tokenizer_class is None:
        raise ModelFolderError(f"{config_file}: tokenizer_class {name or None!r} is not a tokenizer class of "
                               f"transformers {transformers.__version__}; {folder.family} checkpoints name one "
                               "(Qwen2Tokenizer, LlamaTokenizer, ...). Download tokenizer_config.json again.")
    return tokenizer_class.from_pretrained(str(folder.path))


def load_model(model_path: str | Path, dtype: Any = None, device: Any = "cpu", trust_remote_code: bool = False):
    """(model, tokenizer) for ``model_path``, in eval mode on ``device``.

    ``dtype``: a torch dtype (default float32, what a CPU computes in). The model knows the id of
    ``<IMG_CONTEXT>`` at once, so forward and generate work: the kit's folders name it in
    config.json, and for an official config, which names none, it is filled here from the tokenizer.
    ``trust_remote_code=True`` skips the kit's code and runs the folder's own Python files, with a
    warning; use it only for a folder you trust that the kit does not recognise.
    """
    import torch

    dtype = dtype or torch.float32
    if trust_remote_code:
        from transformers import AutoModel, AutoTokenizer

        code = sorted(p.name for p in Path(model_path).glob("*.py"))
        warnings.warn(f"trust_remote_code=True: running {Path(model_path)}'s own Python code "
                      f"({', '.join(code) or 'no .py files'}), not the kit's", stacklevel=2)
        model = AutoModel.from_pretrained(model_path, trust_remote_code=True, **_dtype_argument(dtype))
        tokenizer = AutoTokenizer.from_pretrained(model_path, trust_remote_code=True, use_fast=False)
        model.img_context_token_id = tokenizer.convert_tokens_to_ids(IMG_CONTEXT_TOKEN)  # a plain attribute there
        return model.to(device).eval(), tokenizer

    from internvl_course.modelcode.modeling_internvl_chat import InternVLChatModel

    folder = inspect_folder(model_path)
    tokenizer = load_tokenizer(model_path, folder)
    model = InternVLChatModel.from_pretrained(str(folder.path), **_dtype_argument(dtype))
    try:
        model.adopt_image_token_id(tokenizer)
    except ValueError as error:
        raise ModelFolderError(f"{folder.path / 'config.json'}: {error}, or remove the field from config.json "
                               "(the kit then takes the tokenizer's)") from None
    return model.to(device).eval(), tokenizer
    try:
        model.adopt_image_token_id(tokenizer)
    except ValueError as error:
        raise ModelFolderError(f"{Path(model_path) / 'config.json'}: {error}, or remove the field from config.json "
                               "(the kit then takes the tokenizer's)") from None
    return model, tokenizer
