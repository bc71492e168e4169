"""Where the kit keeps things.

Everything the kit generates (models, checkpoints, runs, caches) lives under ``work_dirs/`` so
that a source model, checkpoint or dataset is never touched and ``git status`` stays clean.
Each location can be moved with an environment variable, which is how tests and shared lab
machines point the kit somewhere else.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

#: The names of the two environments the Makefile creates (see README, "Two environments").
COURSE_ENV_NAME = ".venv"
TRAIN_ENV_NAME = ".venv-train"
#: The Jupyter kernel every notebook runs in.
KERNEL_NAME = "internvl-course"
#: The kit's own InternVL2 code, copied into (or linked from) every model folder it writes.
MODELCODE = Path(__file__).resolve().parent / "modelcode"
#: The tiny model's talking base, shipped in the repo (``internvl-course base`` rebuilds it).
BASE_WEIGHTS = Path(__file__).resolve().parent.parent / "data" / "tiny_base" / "model.safetensors"


def repo_root() -> Path:
    """The checkout that holds ``pyproject.toml`` (the package is installed editable)."""
    override = os.environ.get("INTERNVL_COURSE_ROOT")
    return Path(override).resolve() if override else Path(__file__).resolve().parent.parent


def work_dir() -> Path:
    """Root of everything generated: ``work_dirs/`` unless ``INTERNVL_COURSE_WORK_DIRS`` is set."""
    override = os.environ.get("INTERNVL_COURSE_WORK_DIRS")
    return Path(override).resolve() if override else repo_root() / "work_dirs"


def env_python(env_name: str) -> Path:
    """The interpreter of one of the kit's virtual environments (it may not exist yet)."""
    if env_name == TRAIN_ENV_NAME and os.environ.get("INTERNVL_COURSE_TRAIN_PYTHON"):
        return Path(os.environ["INTERNVL_COURSE_TRAIN_PYTHON"])
    return repo_root() / env_name / "bin" / "python"


def notebooks_dir() -> Path:
    return repo_root() / "notebooks"


def tiny_model_dir() -> Path:
    """The embedded tiny InternVL2 that setup builds (the CPU default for every lesson)."""
    return work_dir() / "models" / "internvl2-tiny"


def food_data_dir() -> Path:
    """The kit's own food VQA dataset."""
    return repo_root() / "data" / "food"


def finetune_dir(preset: str) -> Path:
    """Where lesson 06 trains with ``preset`` (config, checkpoints, logs) and lesson 07 looks."""
    return work_dir() / "finetune" / preset


def finetuned_model_dir(preset: str) -> Path:
    """Where lesson 07 writes the converted model of lesson 06's run (outside the run's folder:
    convert.py never writes into a checkpoint's folder)."""
    return work_dir() / "models" / f"internvl2-finetuned-{preset}"


@contextmanager
def environment(**values: str | None) -> Iterator[None]:
    """Set (or, with None, remove) environment variables for a block, then put back what was there.

    For the few places where a child process or a library reads its settings from the environment
    (papermill's kernels, LMDeploy's workers): the caller's environment is the same afterwards.
    """
    before = {name: os.environ.get(name) for name in values}

    def apply(settings: dict[str, str | None]) -> None:
        for name, value in settings.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value

    apply(values)
    try:
        yield
    finally:
        apply(before)
