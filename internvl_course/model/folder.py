"""What a model folder holds, checked before anything loads: family, template, files, weights.

A student points the kit at a folder: the embedded tiny model, a fine-tune the kit converted, or
a download of OpenGVLab/InternVL2-* or InternVL2_5-*. ``inspect_folder`` reads its config.json
and names what it is (the LLM family and the chat template the checkpoint asks for), and refuses,
with the file or field at fault and the way out, anything the kit's own code cannot run: a plain
LLM, an LLM architecture or template the kit does not know, a config from a newer InternVL,
missing weights or tokenizer files, a half-downloaded safetensors file. It reads only
config.json, tokenizer_config.json and the safetensors headers, so it answers in milliseconds,
before any long work starts.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from internvl_course.modelcode.configuration_internvl_chat import LLM_ARCHITECTURES, MODEL_CODE_FILES
from internvl_course.modelcode.conversation import get_conv_template
from internvl_course.paths import MODELCODE, tiny_model_dir

#: The architecture name of every InternVL2 / InternVL2.5 checkpoint (OpenGVLab's model class).
INTERNVL_ARCHITECTURE = "InternVLChatModel"
#: The kit's own tokenizer code, copied into every folder it writes for an InternLM2 family.
TOKENIZER_CODE_FILES = ("tokenization_internlm2.py", "tokenization_internlm2_fast.py")

#: The LLM families of OpenGVLab's InternVL2 and InternVL2.5 releases, by LLM class: a readable
#: name, the checkpoints that use it, and the tokenizer files a download of it carries.
FAMILIES: dict[str, dict[str, Any]] = {
    "InternLM2ForCausalLM": {
        "llm": "InternLM2 / InternLM2.5",
        "examples": "InternVL2-2B, -8B, -26B; InternVL2.5-2B, -8B, -26B",
        "tokenizer_files": ("tokenizer.model",),
    },
    "Qwen2ForCausalLM": {
        "llm": "Qwen2 / Qwen2.5",
        "examples": "InternVL2-1B; InternVL2.5-1B, -4B, -38B, -78B",
        "tokenizer_files": ("vocab.json", "merges.txt"),
    },
    "Phi3ForCausalLM": {
        "llm": "Phi-3",
        "examples": "InternVL2-4B",
        "tokenizer_files": ("tokenizer.model",),
    },
    "LlamaForCausalLM": {
        "llm": "Llama",
        "examples": "InternVL2-40B, -76B",
        "tokenizer_files": ("tokenizer.json",),
    },
}
assert set(FAMILIES) == set(LLM_ARCHITECTURES), "every LLM the model code builds needs a family entry"

#: What to do when a folder is not one the kit's code runs.
REMOTE_CODE_WAY_OUT = ("If you trust this folder's own Python files, pass trust_remote_code=True to run them "
                       "instead of the kit's code (the kit then warns that the folder's code runs).")


class ModelFolderError(ValueError):
    """A model folder the kit cannot load: the message names the file or field and the fix."""


@dataclass(frozen=True)
class ModelFolder:
    """A checked model folder: what it is, and which files the kit will read from it."""

    path: Path
    config: dict[str, Any] = field(repr=False)
    llm_architecture: str
    template: str
    weight_files: tuple[Path, ...]
    tokenizer_files: tuple[Path, ...]
    code_files: tuple[str, ...]  # the folder's own *.py files (never run unless asked)
    kit_written: bool  # its code files are the kit's own, byte for byte

    @property
    def family(self) -> str:
        """A readable name: ``InternVL2.5 · InternLM2 / InternLM2.5 LLM · template internvl2_5``."""
        generation = "InternVL2.5" if self.template == "internvl2_5" else "InternVL2"
        return f"{generation} · {FAMILIES[self.llm_architecture]['llm']} LLM · template {self.template}"

    @property
    def uses_internlm2_tokenizer(self) -> bool:
        """InternLM2 families keep a sentencepiece model that the kit's own tokenizer class reads;
        the others use transformers' own tokenizer classes."""
        return self.llm_architecture == "InternLM2ForCausalLM"

    @property
    def weights_bytes(self) -> int:
        return sum(f.stat().st_size for f in self.weight_files)

    def describe(self) -> list[tuple[str, str]]:
        """(what, value) rows for a table: ``make doctor MODEL=...`` prints them."""
        vision = self.config.get("vision_config", {})
        llm = self.config.get("llm_config", {})
        runs = ("the kit's own code (its files are the kit's)" if self.kit_written else
                "the kit's own code, not the folder's " + (", ".join(self.code_files) or "(none)"))
        return [
            ("folder", str(self.path)),
            ("family", self.family),
            ("checkpoints like it", FAMILIES[self.llm_architecture]["examples"]),
            ("vision", f"InternViT, width {vision.get('hidden_size')}, {vision.get('num_hidden_layers')} layers"),
            ("LLM", f"{self.llm_architecture}, width {llm.get('hidden_size')}, {llm.get('num_hidden_layers')} layers, "
                    f"vocabulary {llm.get('vocab_size')}"),
            ("weights", f"{len(self.weight_files)} safetensors file(s), {self.weights_bytes / 1e9:.2f} GB, complete"),
            ("tokenizer", ", ".join(f.name for f in self.tokenizer_files)),
            ("what runs", runs),
        ]


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise ModelFolderError(f"{path} is not UTF-8 text ({err.reason} at byte {err.start}); {what} must be the "
                               "JSON file of the download: download it again.") from None
    except json.JSONDecodeError as err:
        raise ModelFolderError(f"{path} is not valid JSON ({err.msg}, line {err.lineno} column {err.colno}); "
                               f"{what} is damaged: download it again.") from None
    if not isinstance(data, dict):
        raise ModelFolderError(f"{path} holds a JSON {type(data).__name__}, not an object; download it again.")
    return data


def _check_architecture(path: Path, config: dict[str, Any]) -> str:
    """The LLM class of an InternVL2/2.5 config; anything else is refused with what was found."""
    config_file = path / "config.json"
    architectures = config.get("architectures") or []
    found = f"architectures {architectures}, model_type {config.get('model_type')!r}"
    if architectures[:1] != [INTERNVL_ARCHITECTURE]:
        if "llm_config" not in config and "vision_config" not in config:
            raise ModelFolderError(
                f"{config_file}: {found}: this is a plain language model, not an InternVL vision-language model. "
                "Point model_path at an InternVL2 or InternVL2.5 download (OpenGVLab/InternVL2-2B, ...), whose "
                "config.json names InternVLChatModel.")
        raise ModelFolderError(
            f"{config_file}: {found}: not an InternVL2 / InternVL2.5 checkpoint in OpenGVLab's layout (those name "
            f"{INTERNVL_ARCHITECTURE}); it may come from a newer InternVL or a converted format the kit does not "
            f"know. Use an OpenGVLab/InternVL2-* or InternVL2_5-* download. {REMOTE_CODE_WAY_OUT}")
    llm_config = config.get("llm_config")
    if not isinstance(llm_config, dict) or not isinstance(config.get("vision_config"), dict):
        raise ModelFolderError(f"{config_file}: an InternVLChatModel config needs the objects vision_config and "
                               "llm_config; this one is incomplete. Download config.json again.")
    llm = (llm_config.get("architectures") or ["InternLM2ForCausalLM"])[0]
    if llm not in LLM_ARCHITECTURES:
        raise ModelFolderError(
            f"{config_file}: llm_config.architectures[0] is {llm!r}, an LLM the kit's code does not build (it "
            f"builds {', '.join(LLM_ARCHITECTURES)}: every InternVL2 and InternVL2.5 release). "
            f"{REMOTE_CODE_WAY_OUT}")
    return llm


def _check_template(path: Path, config: dict[str, Any]) -> str:
    template = config.get("template")
    try:
        get_conv_template(template)
    except KeyError:
        from internvl_course.modelcode.conversation import _TEMPLATES

        raise ModelFolderError(
            f"{path / 'config.json'}: template {template!r} is not a chat template the kit knows "
            f"({', '.join(sorted(_TEMPLATES))}); the checkpoint may come from a newer InternVL. "
            f"{REMOTE_CODE_WAY_OUT}") from None
    return template


#: Bytes per element of each safetensors dtype, by the format's own names.
SAFETENSORS_DTYPE_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "U16": 2, "I16": 2, "F16": 2,
                           "BF16": 2, "U32": 4, "I32": 4, "F32": 4, "U64": 8, "I64": 8, "F64": 8}
#: The header length above which a file is not safetensors (the safetensors library's own cap).
_MAX_HEADER_BYTES = 100_000_000


def _tensor_entry_problem(entry: Any) -> str | None:
    """Why one tensor's header entry is unusable: missing fields, or a byte range that does not
    hold ``shape`` elements of ``dtype`` (the safetensors library refuses such a file on load)."""
    if not isinstance(entry, dict):
        return f"its entry is a JSON {type(entry).__name__}, not an object"
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if dtype not in SAFETENSORS_DTYPE_BYTES:
        return f"dtype {dtype!r} is not a safetensors dtype"
    if not isinstance(shape, list) or not all(isinstance(n, int) and n >= 0 for n in shape):
        return f"shape {shape!r} is not a list of sizes"
    if (not isinstance(offsets, list) or len(offsets) != 2 or not all(isinstance(n, int) for n in offsets)
            or not 0 <= offsets[0] <= offsets[1]):
        return f"data_offsets {offsets!r} is not a [begin, end] byte range"
    expected = math.prod(shape) * SAFETENSORS_DTYPE_BYTES[dtype]
    if offsets[1] - offsets[0] != expected:
        return f"shape {shape} of {dtype} is {expected} bytes, but its data_offsets span {offsets[1] - offsets[0]}"
    return None


def safetensors_problem(file: Path) -> str | None:
    """Why a safetensors file is unusable, or None when its header describes exactly its bytes.

    The format: 8 bytes of header length, a JSON header giving each tensor's dtype, shape and byte
    range, then the data, with no gap and nothing after it. A download cut short is shorter than
    the header says, a Git LFS pointer or an error page saved in its place has no header, and a
    damaged header disagrees with itself; reading the header alone finds each of them, in
    milliseconds, where the safetensors library would stop deep inside loading.
    """
    size = file.stat().st_size
    with open(file, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            return f"{file.name} is {size} bytes, too short to be a safetensors file"
        if head.startswith(b"version "):
            return f"{file.name} is a Git LFS pointer ({size} bytes), not the weights: run `git lfs pull` in the folder"
        (header_len,) = struct.unpack("<Q", head)
        if header_len > _MAX_HEADER_BYTES:
            return f"{file.name} does not start with a safetensors header (header length {header_len})"
        if header_len > size - 8:
            return (f"{file.name} is incomplete: it ends inside its header ({size} bytes; the header alone "
                    f"takes {8 + header_len})")
        try:
            header = json.loads(f.read(header_len))
        except ValueError:
            return f"{file.name} has a damaged safetensors header (not JSON)"
    if not isinstance(header, dict):
        return f"{file.name} has a damaged safetensors header (a JSON {type(header).__name__}, not an object)"
    ranges = []
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        problem = _tensor_entry_problem(entry)
        if problem:
            return f"{file.name} has a damaged safetensors header: tensor {name}: {problem}"
        ranges.append(entry["data_offsets"])
    ranges.sort()
    if any(begin != previous_end for (begin, _), (_, previous_end) in zip(ranges[1:], ranges)) or \
            (ranges and ranges[0][0] != 0):
        return f"{file.name} has a damaged safetensors header: its tensors' byte ranges overlap or leave gaps"
    expected = 8 + header_len + (ranges[-1][1] if ranges else 0)
    if size < expected:
        return (f"{file.name} is incomplete: {size / 1e9:.3f} GB of {expected / 1e9:.3f} GB "
                "(a download that stopped part way)")
    if size > expected:
        return f"{file.name} holds {size - expected} bytes more than its header describes (damaged or overwritten)"
    return None


def _weight_files(path: Path) -> tuple[Path, ...]:
    index = path / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(_read_json(index, "the weight index").get("weight_map", {}).values()))
        missing = [name for name in shards if not (path / name).is_file()]
        if missing:
            raise ModelFolderError(f"{index} lists {len(shards)} weight files, but {', '.join(missing[:3])} "
                                   f"{'is' if len(missing) == 1 else 'are'} missing from {path}: the download "
                                   "is incomplete. Download the missing files again.")
        files = tuple(path / name for name in shards)
    else:
        files = tuple(sorted(path.glob("*.safetensors")))
    if not files:
        others = sorted(p.name for p in path.glob("*.bin")) + sorted(p.name for p in path.glob("*.pth"))
        hint = (f" It has {', '.join(others[:3])}: the kit reads only safetensors, which cannot run code when "
                "loaded." if others else "")
        raise ModelFolderError(f"{path} holds no model weights (*.safetensors).{hint} Download the whole model "
                               "repository, e.g. `huggingface-cli download OpenGVLab/InternVL2-2B --local-dir "
                               f"{path}`.")
    for file in files:
        problem = safetensors_problem(file)
        if problem:
            raise ModelFolderError(f"{path}: {problem}. Download it again (huggingface-cli download resumes "
                                   "and checks each file).")
    return files


def _tokenizer_files(path: Path, llm: str) -> tuple[Path, ...]:
    wanted = ("tokenizer_config.json", *FAMILIES[llm]["tokenizer_files"])
    if llm != "InternLM2ForCausalLM" and (path / "tokenizer.json").is_file():
        wanted = ("tokenizer_config.json", "tokenizer.json")  # a fast tokenizer file is enough on its own
    missing = [name for name in wanted if not (path / name).is_file()]
    if missing:
        raise ModelFolderError(f"{path} lacks the tokenizer file(s) {', '.join(missing)} that a "
                               f"{FAMILIES[llm]['llm']} checkpoint carries: download them from the same model "
                               "repository into this folder.")
    tokenizer_config = _read_json(path / "tokenizer_config.json", "tokenizer_config.json")
    del tokenizer_config  # read only to refuse a damaged file now rather than deep inside transformers
    extra = [p for p in (path / "special_tokens_map.json", path / "added_tokens.json") if p.is_file()]
    return tuple(path / name for name in wanted) + tuple(extra)


def _kit_written(path: Path, code_files: tuple[str, ...], uses_internlm2_tokenizer: bool) -> bool:
    """True when the folder's code is exactly the kit's, so tools may load the folder itself."""
    needed = MODEL_CODE_FILES + (TOKENIZER_CODE_FILES if uses_internlm2_tokenizer else ())
    if set(code_files) != set(needed):
        return False
    return all((path / name).read_bytes() == (MODELCODE / name).read_bytes() for name in needed)


def inspect_folder(model_path: str | Path) -> ModelFolder:
    """Check ``model_path`` and say what it is; raises ``ModelFolderError`` with the fix if the kit
    cannot run it. Fast: reads JSON files and safetensors headers only."""
    path = Path(model_path).expanduser()
    if not path.is_dir():
        raise ModelFolderError(f"model_path {str(model_path)!r} is not a folder. Give the folder of a downloaded "
                               "InternVL2 model (the one holding config.json), or the embedded tiny model's "
                               f"({tiny_model_dir()}; chat and the lessons take it when model_path is None).")
    if not (path / "config.json").is_file():
        raise ModelFolderError(f"{path} holds no config.json, so it is not a model folder. Point model_path at the "
                               "folder that holds config.json and the *.safetensors files.")
    path = path.resolve()
    config = _read_json(path / "config.json", "config.json")
    llm = _check_architecture(path, config)
    template = _check_template(path, config)
    tokenizer_files = _tokenizer_files(path, llm)
    weight_files = _weight_files(path)
    code_files = tuple(sorted(p.name for p in path.glob("*.py")))
    return ModelFolder(path, config, llm, template, weight_files, tokenizer_files, code_files,
                       _kit_written(path, code_files, llm == "InternLM2ForCausalLM"))
