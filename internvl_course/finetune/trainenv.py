"""The bridge from the notebook kernel to the XTuner island (``.venv-train``).

XTuner 0.2.0 pins transformers 4.48.0 while LMDeploy 0.18.0 needs transformers >= 4.56
(docs/design.md, "Two environments"), so XTuner lives in its own environment and notebooks reach it only
through subprocesses started here, never by importing xtuner in the kernel.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
from pathlib import Path
from typing import Sequence

from internvl_course.paths import TRAIN_ENV_NAME, env_python

# Printed by the probe below; read with importlib.metadata so that nothing heavy is imported.
TRAIN_ENV_PACKAGES = ("xtuner", "torch", "torchvision", "transformers", "deepspeed", "mmengine",
                      "peft", "bitsandbytes", "internvl-course")

_PROBE = """
import json, platform, importlib.metadata as md
out = {"python": platform.python_version()}
for name in %r:
    try:
        out[name] = md.version(name)
    except md.PackageNotFoundError:
        out[name] = None
print(json.dumps(out))
""" % (TRAIN_ENV_PACKAGES,)


class TrainEnvMissing(RuntimeError):
    """The train env has not been created (or was deleted)."""


def train_python() -> Path:
    """The train env's interpreter, or a clear error that says how to create it."""
    python = env_python(TRAIN_ENV_NAME)
    if not python.exists():
        raise TrainEnvMissing(
            f"The train env is missing: {python} does not exist. "
            "Create it with `make setup` (it installs requirements/train.lock into .venv-train/)."
        )
    # OSErrors, as starting it would raise, but before anything starts and with the fix in the message.
    if python.is_dir():
        raise IsADirectoryError(errno.EISDIR, "is a folder, not the train env's Python: point "
                                "INTERNVL_COURSE_TRAIN_PYTHON at the interpreter itself, or unset it and recreate "
                                "the env with `make setup`", str(python))
    if not os.access(python, os.X_OK):
        raise PermissionError(errno.EACCES, f"is not executable: make it executable (chmod +x {python}), point "
                              "INTERNVL_COURSE_TRAIN_PYTHON at a working one, or recreate the env with "
                              "`make setup`", str(python))
    return python


def train_env_versions(timeout: float = 60) -> dict[str, str | None]:
    """Python and key package versions inside the train env (a subprocess, nothing imported)."""
    result = subprocess.run([str(train_python()), "-c", _PROBE], capture_output=True, text=True,
                            timeout=timeout, check=False)
    if result.returncode != 0:
        raise TrainEnvMissing(f"The train env at {train_python()} does not start:\n{result.stderr.strip()}")
    return json.loads(result.stdout)


def run_in_train_env(args: Sequence[str], cwd: Path | None = None, env: dict[str, str] | None = None,
                     timeout: float | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``python <args>`` in the train env and return the real exit status.

    ``xtuner train`` drops the exit status of the script it runs (docs/design.md, "XTuner 0.2.0"), so the kit
    always calls ``python -m xtuner.tools.train`` itself through this function.
    """
    return subprocess.run([str(train_python()), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout, check=False)
