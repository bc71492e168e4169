"""``internvl-course doctor`` tells the truth about this machine and says how to fix what is missing."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
import torch

from conftest import REPO
from internvl_course.course import doctor
from test_locks import LOCKS, read_lock

pytest.importorskip("jupyter_client")
CLI = REPO / ".venv" / "bin" / "internvl-course"


def run_doctor(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(CLI), "doctor", *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})})


@pytest.fixture(scope="module")
def report() -> dict[str, dict]:
    result = run_doctor("--json")
    assert result.returncode in (0, 1), result.stderr
    return {row["name"]: row for row in json.loads(result.stdout)}


def test_both_envs_report_their_pinned_versions(report):
    train = read_lock(LOCKS["train"])
    course = read_lock(LOCKS["course"])
    train_row = report["train env (.venv-train)"]
    assert train_row["status"] == doctor.OK
    for name in ("xtuner", "transformers", "deepspeed", "mmengine", "peft", "bitsandbytes", "torch"):
        assert f"{name} {train[name]}" in train_row["detail"]
    course_row = next(row for name, row in report.items() if name.startswith("course env"))
    assert course_row["status"] == doctor.OK
    for name in ("lmdeploy", "transformers", "gradio", "torch"):
        assert f"{name} {course[name]}" in course_row["detail"]


def test_hardware_and_backends_match_this_machine(report):
    assert torch.__version__ in report["torch"]["detail"]
    backends = {n: r for n, r in report.items() if n.startswith("chat: ")}
    assert set(backends) == {"chat: transformers", "chat: lmdeploy pytorch", "chat: lmdeploy turbomind"}
    assert backends["chat: transformers"]["status"] == doctor.OK
    if not torch.cuda.is_available():
        assert report["GPU"]["status"] == doctor.INFO and "no CUDA GPU" in report["GPU"]["detail"]
        for name in ("chat: lmdeploy pytorch", "chat: lmdeploy turbomind"):
            assert backends[name]["status"] == doctor.NO
            assert "no CUDA GPU" in backends[name]["detail"]
    else:
        assert torch.cuda.get_device_name(0) in report["GPU"]["detail"]


def test_kernel_disk_and_artifacts_are_reported(report):
    assert report["jupyter kernel"]["status"] == doctor.OK
    assert str(REPO / ".venv" / "bin" / "python") in report["jupyter kernel"]["detail"]
    assert report["free disk"]["status"] == doctor.OK
    assert {"embedded model", "food dataset", "flash-attn"} <= set(report)


def test_healthy_machine_exits_0_with_a_table():
    result = run_doctor()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Everything the course needs is here." in result.stdout
    assert result.stdout.splitlines()[0].split() == ["check", "status", "detail"]


def test_missing_train_env_exits_1_with_one_fix(tmp_path):
    result = run_doctor(env={"INTERNVL_COURSE_TRAIN_PYTHON": str(tmp_path / "nowhere" / "python")})
    assert result.returncode == 1
    assert "1 problem(s). To fix:" in result.stdout
    fixes = [line for line in result.stdout.splitlines() if line.startswith("  - ")]
    assert fixes == ["  - train env (.venv-train): run `make setup` (installs requirements/train.lock into .venv-train/)"]


def test_table_lists_one_fix_per_problem():
    table = doctor.format_table([
        doctor.Check("a", doctor.OK, "fine"),
        doctor.Check("b", doctor.MISSING, "gone", "do b"),
        doctor.Check("c", doctor.NO, "no GPU"),
        doctor.Check("d", doctor.MISSING, "gone too", "do d"),
    ])
    assert "2 problem(s). To fix:\n  - b: do b\n  - d: do d" in table
    assert "problem" not in doctor.format_table([doctor.Check("c", doctor.NO, "no GPU")])
