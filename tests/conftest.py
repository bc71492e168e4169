"""Shared test setup: the ``gpu`` marker skips itself, with a reason, where there is no CUDA."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
COURSE_PYTHON = REPO / ".venv" / "bin" / "python"
TRAIN_PYTHON = REPO / ".venv-train" / "bin" / "python"


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
    from internvl_course.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("models") / "internvl2-tiny")


@pytest.fixture(scope="session")
def tiny_llava_data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Four pictures and a LLaVA-format JSON about them: (data_path, image_folder)."""
    import json

    from internvl_course.scenes import Piece, Scene, render

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
