"""The embedded tiny InternVL2: official files, deterministic bytes, loads and chats in both envs."""

from __future__ import annotations

import hashlib
import json
import subprocess

import pytest

from conftest import MODEL_FILES, TRAIN_PYTHON
from internvl_course.tiny.build import build_tiny_model, lay_out_as_download

# Run in either env: load with AutoModel/AutoTokenizer (slow and fast), chat two turns on a picture.
LOAD_AND_CHAT = r"""
import json, sys
import torch
import torchvision.transforms as T
from transformers import AutoModel, AutoTokenizer
from transformers.dynamic_module_utils import get_class_from_dynamic_module
from internvl_course.data.drawing import Piece, Scene, render
path = sys.argv[1]
model = AutoModel.from_pretrained(path, trust_remote_code=True).eval()
auto_slow = AutoTokenizer.from_pretrained(path, trust_remote_code=True, use_fast=False)
fast = AutoTokenizer.from_pretrained(path, trust_remote_code=True, use_fast=True)
# transformers 5 no longer hands out slow tokenizers through AutoTokenizer; load the class itself.
slow = get_class_from_dynamic_module("tokenization_internlm2.InternLM2Tokenizer", path).from_pretrained(path)
image = render(Scene(pieces=(Piece("square", "blue", 3),)), seed=3)
to_tensor = T.Compose([T.Resize((448, 448), interpolation=T.InterpolationMode.BICUBIC), T.ToTensor(),
                       T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])
pixel_values = to_tensor(image)[None]
config = dict(max_new_tokens=12, do_sample=False)
with torch.no_grad():
    first, history = model.chat(slow, pixel_values, "请描述这张图片。", config, history=None, return_history=True)
    second, history = model.chat(slow, pixel_values, "What colour are the squares?", config, history=history,
                                 return_history=True)
text = "图中的菜是宫保鸡丁。<img><IMG_CONTEXT></img>"
print(json.dumps({"first": first, "second": second, "turns": len(history),
                  "slow": type(slow).__name__, "fast": type(fast).__name__, "auto_slow": type(auto_slow).__name__,
                  "same_ids": slow(text).input_ids == fast(text).input_ids,
                  "vocab": model.config.llm_config.vocab_size, "tokenizer_len": len(slow)}))
"""


def test_model_directory_has_the_official_files(tiny_model):
    assert {p.name for p in tiny_model.iterdir()} == MODEL_FILES
    config = json.loads((tiny_model / "config.json").read_text())
    assert config["architectures"] == ["InternVLChatModel"]
    assert config["auto_map"]["AutoModel"] == "modeling_internvl_chat.InternVLChatModel"
    assert config["llm_config"]["architectures"] == ["InternLM2ForCausalLM"]
    # The real geometry: 448 px tiles, patch 14, pixel shuffle 0.5, thumbnail on.
    assert (config["force_image_size"], config["vision_config"]["patch_size"], config["downsample_ratio"]) == (448, 14, 0.5)
    assert config["use_thumbnail"] and config["dynamic_image_size"] and config["ps_version"] == "v2"
    assert config["template"] == "internlm2-chat"
    # The kit's folders name the id of <IMG_CONTEXT>, so the model knows it without a tokenizer.
    from internvl_course.modelcode.tokenization_internlm2 import InternLM2Tokenizer

    assert config["img_context_token_id"] == InternLM2Tokenizer.from_pretrained(tiny_model).convert_tokens_to_ids(
        "<IMG_CONTEXT>")


def test_a_download_names_no_image_token_id_and_loading_fills_it_from_the_tokenizer(tmp_path, tiny_model):
    from internvl_course.model.folder import ModelFolderError
    from internvl_course.model.load import load_model

    download = lay_out_as_download(tiny_model, tmp_path / "download")
    config = json.loads((download / "config.json").read_text())
    assert "img_context_token_id" not in config  # OpenGVLab's configs have no such field
    kit_config = json.loads((tiny_model / "config.json").read_text())
    assert config == {k: v for k, v in kit_config.items() if k != "img_context_token_id"}
    model, tokenizer = load_model(download)
    assert model.img_context_token_id == kit_config["img_context_token_id"]
    # A config whose id is not the tokenizer's is named, with the way out.
    (download / "config.json").write_text(json.dumps({**config, "img_context_token_id": 3}))
    with pytest.raises(ModelFolderError, match=r"config.json: img_context_token_id is 3, but the tokenizer "
                                               "gives <IMG_CONTEXT> the id .*remove the field"):
        load_model(download)


def _digests(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()}


def test_same_seed_same_bytes(tmp_path, tiny_model):
    again = build_tiny_model(tmp_path / "again", seed=0)
    assert _digests(again) == _digests(tiny_model)


def test_never_overwrites_an_existing_directory(tmp_path):
    target = tmp_path / "somebodys-model"
    target.mkdir()
    (target / "config.json").write_text("{}")
    with pytest.raises(FileExistsError, match="does not overwrite"):
        build_tiny_model(target)
    assert (target / "config.json").read_text() == "{}"
    assert [p.name for p in tmp_path.iterdir()] == ["somebodys-model"]  # no staging folder left


@pytest.mark.parametrize("env", ["course", "train"])
def test_loads_and_chats_in_both_envs(tiny_model, env, repo):
    python = repo / ".venv" / "bin" / "python" if env == "course" else TRAIN_PYTHON
    result = subprocess.run([str(python), "-c", LOAD_AND_CHAT, str(tiny_model)], capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert isinstance(out["first"], str) and isinstance(out["second"], str)
    assert out["turns"] == 2  # multi-turn history kept both exchanges
    assert (out["slow"], out["fast"]) == ("InternLM2Tokenizer", "InternLM2TokenizerFast")
    # transformers 4.48 (train env) honours use_fast=False; 5.x (course env) gives the fast class.
    assert out["auto_slow"] == ("InternLM2Tokenizer" if env == "train" else "InternLM2TokenizerFast")
    assert out["same_ids"]
    assert out["vocab"] == out["tokenizer_len"]
    assert "flash_attn is not installed" in result.stderr  # XTuner-style flash request fell back cleanly


def test_fullsize_refuses_an_existing_folder_before_building_anything(tmp_path, monkeypatch):
    """A full-size model takes minutes to initialise on a CPU: an existing folder is named first."""
    from internvl_course.tiny import fullsize

    built = []
    monkeypatch.setattr(fullsize, "family_tokenizer", lambda family: built.append(family))
    (tmp_path / "full").mkdir()
    with pytest.raises(FileExistsError, match="full already exists"):
        fullsize.build_full_size_model(tmp_path / "full", device="cpu")
    assert built == [] and list((tmp_path / "full").iterdir()) == []
