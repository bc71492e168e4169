"""``internvl-course doctor``: is this machine ready for the course, and if not, what to do.

One table covers both environments, the hardware, which chat backends can run here and why
not, and the kit's generated artefacts. Every missing piece gets exactly one fix hint and
makes the exit status 1, so an instructor can run it before class and a script can trust it.
A check that cannot run is a row too, with the reason and the fix: the doctor is run on broken
machines, so it must never be the thing that crashes.
"""

from __future__ import annotations

import importlib.metadata as md
import json
import os
import platform
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from internvl_course.paths import KERNEL_NAME, TRAIN_ENV_NAME, env_python, food_data_dir, repo_root, tiny_model_dir
from internvl_course.finetune.trainenv import TrainEnvMissing, train_env_versions

COURSE_ENV_PACKAGES = ("torch", "transformers", "lmdeploy", "gradio", "timm", "papermill", "nbval",
                       "jupyterlab", "internvl-course")
#: Below this much free disk the course cannot build its models and runs.
MIN_FREE_GB = 5.0

OK, MISSING, NO, INFO = "ok", "MISSING", "no", "info"


@dataclass
class Check:
    name: str
    status: str  # OK, MISSING (a problem: exit 1), NO (cannot run here, not a problem), INFO
    detail: str
    fix: str = ""


def _version(name: str) -> str | None:
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None


def _versions_text(versions: dict[str, str | None]) -> str:
    return ", ".join(f"{k} {v}" for k, v in versions.items() if v)


def check_course_env() -> Check:
    versions = {"python": platform.python_version(), **{p: _version(p) for p in COURSE_ENV_PACKAGES}}
    absent = [p for p in COURSE_ENV_PACKAGES if versions[p] is None]
    where = Path(sys.prefix)
    if absent:
        return Check(f"course env ({where.name})", MISSING, f"missing: {', '.join(absent)}",
                     "run `make setup` (installs requirements/course.lock into .venv/)")
    return Check(f"course env ({where.name})", OK, _versions_text(versions))


#: Names the train env's Python instead of .venv-train/bin/python (``paths.env_python``).
TRAIN_PYTHON_ENV = "INTERNVL_COURSE_TRAIN_PYTHON"


def _train_python_unrunnable(err: OSError) -> Check:
    """The row for a train env Python that exists but cannot be started (``err`` from starting it)."""
    python = env_python(TRAIN_ENV_NAME)
    if python.is_dir():
        why = f"{python} is a folder, not a Python interpreter"
    elif isinstance(err, PermissionError):
        why = f"{python} is not executable (permission denied)"
    else:
        why = f"{python} cannot be started: {err.strerror or err}"
    if os.environ.get(TRAIN_PYTHON_ENV):
        fix = (f"point {TRAIN_PYTHON_ENV} (now {python}) at the train env's bin/python, or unset it to use "
               f"{TRAIN_ENV_NAME}/")
    else:
        fix = f"run `make setup` to create {TRAIN_ENV_NAME}/ again (installs requirements/train.lock)"
    if isinstance(err, PermissionError) and python.is_file():
        fix = f"make it executable (`chmod +x {python}`), or {fix}"
    return Check(f"train env ({TRAIN_ENV_NAME})", MISSING, why, fix)


def check_train_env() -> Check:
    name = f"train env ({TRAIN_ENV_NAME})"
    try:
        versions = train_env_versions()
    except (TrainEnvMissing, subprocess.TimeoutExpired, json.JSONDecodeError) as err:
        return Check(name, MISSING, str(err).splitlines()[0],
                     "run `make setup` (installs requirements/train.lock into .venv-train/)")
    except OSError as err:  # there, but not something this machine can run
        return _train_python_unrunnable(err)
    absent = [k for k, v in versions.items() if v is None]
    if absent:
        return Check(name, MISSING, f"missing: {', '.join(absent)}",
                     "run `make setup` to reinstall .venv-train/ from requirements/train.lock")
    return Check(name, OK, _versions_text(versions))


def check_kernel() -> Check:
    try:
        from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel
    except ImportError:
        return Check("jupyter kernel", MISSING, "jupyter_client is not installed", "run `make setup`")
    manager = KernelSpecManager()
    try:
        spec = manager.get_kernel_spec(KERNEL_NAME)
    except NoSuchKernel:
        return Check("jupyter kernel", MISSING, f"no kernel named {KERNEL_NAME!r}",
                     "run `make setup` (registers .venv as the kernel internvl-course)")
    except (ValueError, OSError) as err:  # a kernel.json that is not JSON, or cannot be read
        where = manager.find_kernel_specs().get(KERNEL_NAME, KERNEL_NAME)
        return Check("jupyter kernel", MISSING, f"the kernel spec {where}/kernel.json cannot be read: {err}",
                     f"delete or repair {where}/kernel.json, then run `make setup` to register the kernel again")
    kernel_python = Path(spec.argv[0])
    if not kernel_python.exists():
        return Check("jupyter kernel", MISSING, f"{KERNEL_NAME} points at {kernel_python}, which is gone",
                     "run `make setup` to register the kernel again")
    return Check("jupyter kernel", OK, f"{KERNEL_NAME} -> {kernel_python}")


def check_torch() -> tuple[Check, Check, bool]:
    """torch itself, the GPU, and whether CUDA can be used."""
    import torch

    cuda_build = torch.version.cuda or "none"
    if not torch.cuda.is_available():
        return (Check("torch", OK, f"{torch.__version__} (built for CUDA {cuda_build})"),
                Check("GPU", INFO, "no CUDA GPU: lessons run on the CPU with the embedded tiny model"),
                False)
    props = torch.cuda.get_device_properties(0)
    gpu = f"{torch.cuda.device_count()} x {props.name}, {props.total_memory / 2**30:.1f} GiB, compute {props.major}.{props.minor}"
    return (Check("torch", OK, f"{torch.__version__} (CUDA {cuda_build})"), Check("GPU", OK, gpu), True)


def check_backends(cuda: bool) -> list[Check]:
    rows = [Check("chat: transformers", OK, "runs here (" + ("CUDA" if cuda else "CPU") + "), the model's own code")]
    if _version("lmdeploy") is None:
        rows.append(Check("chat: lmdeploy", MISSING, "lmdeploy is not installed", "run `make setup`"))
        return rows
    if not cuda:
        reason = "no CUDA GPU here (LMDeploy needs one); the kit uses the transformers backend instead"
        rows.append(Check("chat: lmdeploy pytorch", NO, reason))
        rows.append(Check("chat: lmdeploy turbomind", NO, reason))
        return rows
    if _version("triton") is None:
        rows.append(Check("chat: lmdeploy pytorch", NO, "triton is not installed (the PyTorch engine needs it)"))
    else:
        rows.append(Check("chat: lmdeploy pytorch", OK, "runs here"))
    from internvl_course.serve.chat import turbomind_loads  # the check the chat backend choice makes

    loads, why = turbomind_loads()
    rows.append(Check("chat: lmdeploy turbomind", OK if loads else NO,
                      "runs here" if loads else f"TurboMind {why}; the PyTorch engine is used instead"))
    return rows


def check_flash_attn() -> Check:
    version = _version("flash-attn") or _version("flash_attn")
    if version:
        return Check("flash-attn", OK, version)
    return Check("flash-attn", INFO, "not installed (optional: the model falls back to SDPA attention)")


def check_disk() -> Check:
    free_gb = shutil.disk_usage(repo_root()).free / 1e9
    if free_gb < MIN_FREE_GB:
        return Check("free disk", MISSING, f"{free_gb:.1f} GB free at {repo_root()}",
                     f"free at least {MIN_FREE_GB:.0f} GB (models and runs go to work_dirs/)")
    return Check("free disk", OK, f"{free_gb:.0f} GB free at {repo_root()}")


def check_artifact(name: str, path: Path, marker: str) -> Check:
    """A generated artefact: built, or missing (with the command that builds it)."""
    if (path / marker).exists():
        return Check(name, OK, str(path))
    return Check(name, MISSING, f"not built: {path / marker} is missing", "run `make setup` to build it")


def check_model(model_path: str | Path) -> list[Check]:
    """A model folder a student brings: its family, template, files and what will run, or the
    problem that stops it, with the fix (``model.folder.inspect_folder``)."""
    from internvl_course.model.folder import ModelFolderError, inspect_folder

    try:
        folder = inspect_folder(model_path)
    except ModelFolderError as err:
        return [Check("model", MISSING, f"{model_path} cannot be used", str(err))]
    rows = [Check(f"model {name}", OK if name == "folder" else INFO, value) for name, value in folder.describe()]
    if not folder.kit_written:
        rows.append(Check("model for tools", INFO, "LMDeploy and XTuner get a folder under work_dirs/prepared/ "
                                                   "holding the kit's code beside these weights (linked)"))
    return rows


def _guarded(name: str, check: Callable[[], Check | list[Check]]) -> list[Check]:
    """The rows of ``check``, or one row named ``name`` saying why the check could not run."""
    try:
        rows = check()
    except Exception as err:  # any failure becomes a row, never a crash
        return [Check(name, MISSING, f"could not be checked: {type(err).__name__}: {err}",
                      "fix what the error names, or run `make setup` to reinstall both environments; "
                      "then run `internvl-course doctor` again")]
    return rows if isinstance(rows, list) else [rows]


def run_checks(model_path: str | Path | None = None) -> list[Check]:
    cuda = False

    def hardware() -> list[Check]:
        nonlocal cuda
        torch_row, gpu_row, cuda = check_torch()
        return [torch_row, gpu_row]

    checks: list[tuple[str, Callable[[], Check | list[Check]]]] = [
        ("course env", check_course_env),
        (f"train env ({TRAIN_ENV_NAME})", check_train_env),
        ("jupyter kernel", check_kernel),
        ("torch", hardware),
        ("chat backends", lambda: check_backends(cuda)),
        ("flash-attn", check_flash_attn),
        ("free disk", check_disk),
        ("embedded model", lambda: check_artifact("embedded model", tiny_model_dir(), "config.json")),
        ("food dataset", lambda: check_artifact("food dataset", food_data_dir(), "train.json")),
    ]
    if model_path:
        checks.append(("model", lambda: check_model(model_path)))
    return [row for name, check in checks for row in _guarded(name, check)]


def format_table(checks: list[Check]) -> str:
    width = max(len(c.name) for c in checks)
    lines = [f"{'check':<{width}}  {'status':<7}  detail", f"{'-' * width}  {'-' * 7}  {'-' * 40}"]
    lines += [f"{c.name:<{width}}  {c.status:<7}  {c.detail}" for c in checks]
    problems = [c for c in checks if c.status == MISSING]
    if problems:
        lines.append("")
        lines.append(f"{len(problems)} problem(s). To fix:")
        lines += [f"  - {c.name}: {c.fix}" for c in problems]
    else:
        lines.append("")
        lines.append("Everything the course needs is here.")
    return "\n".join(lines)


def main(as_json: bool = False, model_path: str | Path | None = None) -> int:
    """Print the table (or JSON) and return 1 when anything is missing; ``model_path`` adds the
    rows of a model folder (``make doctor MODEL=path``)."""
    checks = run_checks(model_path)
    if as_json:
        print(json.dumps([asdict(c) for c in checks], indent=2, ensure_ascii=False))
    else:
        print(format_table(checks))
    return 1 if any(c.status == MISSING for c in checks) else 0
