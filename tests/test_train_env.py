"""The train env imports its whole stack; the course env never imports XTuner."""

from __future__ import annotations

import importlib.util
import subprocess

import pytest

from conftest import TRAIN_PYTHON
from internvl_course.finetune import trainenv


def test_train_env_imports_everything_it_needs():
    # The acceptance line of the foundation issue, verbatim.
    code = "import xtuner, deepspeed, mmengine, peft, bitsandbytes, torch, torchvision, transformers, internvl_course"
    result = subprocess.run([str(TRAIN_PYTHON), "-c", code], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert "Error" not in result.stderr.replace("ds_accelerator", "")


def test_versions_come_from_the_train_env():
    versions = trainenv.train_env_versions()
    assert versions["xtuner"] == "0.2.0" and versions["transformers"] == "4.48.0"


def test_course_env_has_no_xtuner(in_course_env):
    if not in_course_env:
        pytest.skip("checks the course env")
    assert importlib.util.find_spec("xtuner") is None


def test_missing_train_env_says_how_to_make_it(monkeypatch, tmp_path):
    monkeypatch.setenv("INTERNVL_COURSE_TRAIN_PYTHON", str(tmp_path / "python"))
    with pytest.raises(trainenv.TrainEnvMissing, match=r"make setup"):
        trainenv.train_python()


def test_course_env_imports_everything_it_needs(repo):
    # The course-env acceptance line of the foundation issue, verbatim, in a fresh interpreter.
    code = "import lmdeploy, gradio, papermill, nbval, torch, transformers, internvl_course"
    result = subprocess.run([str(repo / ".venv" / "bin" / "python"), "-c", code], capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr
