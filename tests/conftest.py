"""Shared test setup: the ``gpu`` marker skips itself, with a reason, where there is no CUDA."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
COURSE_PYTHON = REPO / ".venv" / "bin" / "python"
TRAIN_PYTHON = REPO / ".venv-train" / "bin" / "python"

# What OpenGVLab/InternVL2-2B carries besides its README and examples, plus the fast tokenizer.
MODEL_FILES = {
    "config.json", "generation_config.json", "model.safetensors",
    "configuration_intern_vit.py", "configuration_internlm2.py", "configuration_internvl_chat.py",
    "modeling_intern_vit.py", "modeling_internlm2.py", "modeling_internvl_chat.py", "conversation.py",
    "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json",
    "tokenization_internlm2.py", "tokenization_internlm2_fast.py",
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU, and torch sees none here (run it on a GPU machine)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One embedded tiny InternVL2 per test session, built from scratch (seed 0)."""
    from internvl_course.tiny.build import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("models") / "internvl2-tiny")


@pytest.fixture(scope="session")
def tiny_llava_data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Four pictures and a LLaVA-format JSON about them: (data_path, image_folder)."""
    import json

    from internvl_course.data.drawing import Piece, Scene, render

    root = tmp_path_factory.mktemp("llava")
    (root / "images").mkdir()
    items = []
    for i in range(4):
        render(Scene(pieces=(Piece("circle", "red", count=i + 1),)), seed=i).save(root / "images" / f"{i}.jpg")
        items.append({"image": f"{i}.jpg", "conversations": [
            {"from": "human", "value": "<image>\n盘子里有几个圆形？"},
            {"from": "gpt", "value": f"盘子里有{i + 1}个红色的圆形。"}]})
    (root / "data.json").write_text(json.dumps(items, ensure_ascii=False), encoding="utf-8")
    return root / "data.json", root / "images"


@pytest.fixture(scope="session")
def in_course_env() -> bool:
    return Path(sys.prefix).resolve() == (REPO / ".venv").resolve()


def lmdeploy_prompt(model_dir: Path, image, question: str) -> tuple[list[int], torch.Tensor]:
    """The token ids LMDeploy's InternVL path builds for a text+image turn, and its pixel_values."""
    from lmdeploy.model import get_chat_template
    from lmdeploy.tokenizer import Tokenizer
    from lmdeploy.vl.model.internvl import InternVLVisionModel
    from transformers import AutoConfig

    path = str(model_dir)
    vision = InternVLVisionModel(path, hf_config=AutoConfig.from_pretrained(path, trust_remote_code=True),
                                 trust_remote_code=True)
    vision.build_preprocessor()
    # Image first, as InternVL's chat() puts it (pipe.chat((image, text)) does the same).
    messages = vision.preprocess([{"role": "user", "content": [{"type": "image", "data": image},
                                                                {"type": "text", "text": question}]}])
    ids = vision.to_pytorch(messages, get_chat_template(path, trust_remote_code=True),
                            Tokenizer(path, trust_remote_code=True))["input_ids"]
    return ids, messages[-1]["content"][0]["pixel_values"].float()


def chat_prompt(model_dir: Path, pixel_values: torch.Tensor, question: str) -> list[int]:
    """The token ids ``model.chat()`` hands to generate() for ``question`` about ``pixel_values``."""
    from transformers import AutoModel, AutoTokenizer

    model = AutoModel.from_pretrained(model_dir, trust_remote_code=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=True)
    seen: dict[str, list[int]] = {}

    def record(pixel_values=None, input_ids=None, **kwargs):
        seen["ids"] = input_ids[0].tolist()
        return torch.tensor([[tokenizer.eos_token_id]])

    model.generate = record
    model.chat(tokenizer, pixel_values, question, dict(max_new_tokens=1, do_sample=False))
    return seen["ids"]


@pytest.fixture(scope="session")
def xtuner_run(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path, tiny_llava_data: tuple[Path, Path]):
    """Four real XTuner iterations (cpu-tiny, a high learning rate so the adapter matters) on the
    tiny model: (config, work_dir, TrainRun)."""
    from internvl_course.finetune import presets, training

    data_path, image_folder = tiny_llava_data
    root = tmp_path_factory.mktemp("xtuner")
    config = presets.write_config(root / "cfg.py", "cpu-tiny", model_path=tiny_model, data_path=data_path,
                                   image_folder=image_folder, max_iters=4, save_steps=2, lr=2e-3)
    return config, root / "work", training.train(config, root / "work", progress=False)


@pytest.fixture(scope="session")
def converted_model(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path, xtuner_run):
    """The ``xtuner_run`` checkpoint merged by convert.py: (Conversion, checkpoint path)."""
    from internvl_course.finetune.convert import convert

    run = xtuner_run[2]
    return convert(tiny_model, run.checkpoint, tmp_path_factory.mktemp("converted") / "tiny-finetuned"), run.checkpoint
