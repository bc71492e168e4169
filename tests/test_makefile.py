"""``make test``: ARGS reaches both pytest runs, and their statuses decide make's.

The two interpreters are replaced by stand-ins that record their arguments and exit with a chosen
status, and ``-o setup`` keeps make from setting anything up, so this runs make's own recipe in
a second.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import REPO

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make (apt-get install make)")


def _stand_in(path: Path, status: int) -> Path:
    path.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > "$0.args"\nexit {status}\n', encoding="utf-8")
    path.chmod(0o755)
    return path


def _make_test(tmp_path: Path, train_status: int, course_status: int, args: str) -> tuple[int, list[str], list[str]]:
    train, course = _stand_in(tmp_path / "train", train_status), _stand_in(tmp_path / "course", course_status)
    result = subprocess.run(["make", "--no-print-directory", "-o", "setup", "test", f"TRAIN_PY={train}",
                             f"COURSE_PY={course}", f"ARGS={args}"], cwd=REPO, capture_output=True, text=True,
                            timeout=60)

    def recorded(stand_in: Path) -> list[str]:
        args_file = stand_in.with_name(stand_in.name + ".args")
        return args_file.read_text().splitlines() if args_file.exists() else []

    return result.returncode, recorded(train), recorded(course)


def test_args_reach_both_pytest_runs_and_the_train_env_keeps_its_marker(tmp_path):
    status, train, course = _make_test(tmp_path, 0, 0, "-k 'chat or demo' -m 'not slow' --maxfail=1")
    assert status == 0
    assert course == ["-m", "pytest", "-k", "chat or demo", "-m", "not slow", "--maxfail=1"]
    # The train env's own -m comes last, so it wins: that env cannot run the course env's tests.
    assert train == ["-m", "pytest", "-q", "-k", "chat or demo", "-m", "not slow", "--maxfail=1",
                     "-m", "train_env", "-p", "no:cacheprovider"]


@pytest.mark.parametrize("train_status, course_status, fails, course_ran", [
    (5, 0, False, True),  # ARGS picked no train-env test: fine, the course env runs
    (1, 0, True, False),  # a failing train-env test stops make before the course env
    (0, 1, True, True),
    (0, 5, True, True),  # nothing selected at all is an error
])
def test_the_statuses_of_the_two_runs(tmp_path, train_status, course_status, fails, course_ran):
    status, _, course = _make_test(tmp_path, train_status, course_status, "-k chat")
    assert (status != 0) == fails and bool(course) == course_ran
