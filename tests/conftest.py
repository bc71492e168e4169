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
def in_course_env() -> bool:
    return Path(sys.prefix).resolve() == (REPO / ".venv").resolve()
