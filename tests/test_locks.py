"""The two lock files are complete, agree with pyproject.toml and environment.yml, and are what
is actually installed."""

from __future__ import annotations

import json
import re
import subprocess
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from conftest import REPO, TRAIN_PYTHON

yaml = pytest.importorskip("yaml")

LOCKS = {"course": REPO / "requirements" / "course.lock", "train": REPO / "requirements" / "train.lock"}


def read_lock(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = re.fullmatch(r"([A-Za-z0-9_.\-]+)==([^\s;]+)", line)
        assert match, f"{path.name}: {line!r} is not pinned as name==version"
        pins[canonicalize_name(match[1])] = match[2]
    return pins


def project() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def makefile_var(name: str) -> str:
    match = re.search(rf"^{name} := (.+)$", (REPO / "Makefile").read_text(), re.M)
    assert match, f"Makefile has no {name}"
    return match[1].strip()


@pytest.mark.parametrize("extra", ["course", "train"])
def test_lock_satisfies_pyproject(extra):
    pins = read_lock(LOCKS[extra])
    wanted = [Requirement(r) for r in project()["dependencies"] + project()["optional-dependencies"][extra]]
    for req in wanted:
        name = canonicalize_name(req.name)
        assert name in pins, f"{extra}.lock lacks {req.name}, which pyproject.toml asks for"
        assert req.specifier.contains(pins[name], prereleases=True), \
            f"{extra}.lock pins {req.name}=={pins[name]}, but pyproject.toml asks for {req}"


@pytest.mark.parametrize("extra", ["course", "train"])
def test_lock_was_made_by_the_documented_command(extra):
    header = LOCKS[extra].read_text().splitlines()[1]
    assert f"uv pip compile pyproject.toml --extra {extra}" in header
    assert f"--exclude-newer {makefile_var('LOCK_DATE')}" in header
    assert f"--python-version {makefile_var('PYTHON_VERSION')}" in header


def test_the_two_envs_stay_apart():
    course, train = read_lock(LOCKS["course"]), read_lock(LOCKS["train"])
    assert "xtuner" not in course and "lmdeploy" not in train
    assert train["transformers"] == "4.48.0" and course["lmdeploy"] == "0.18.0"


def test_environment_yml_uses_the_course_lock():
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    assert env["name"] == "internvl-course"
    assert f"python={makefile_var('PYTHON_VERSION')}" in env["dependencies"]
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert "-r requirements/course.lock" in pip and "-e ." in pip
    assert "requirements/train.lock" in (REPO / "environment.yml").read_text()  # says how the train env is made


def test_course_env_is_exactly_the_lock():
    import importlib.metadata as md

    for name, version in read_lock(LOCKS["course"]).items():
        assert md.version(name) == version, f"course env has {name} {md.version(name)}, lock says {version}"


def test_train_env_is_exactly_the_lock():
    probe = ("import json, importlib.metadata as md; "
             "print(json.dumps({d.metadata['Name']: d.version for d in md.distributions()}))")
    out = subprocess.run([str(TRAIN_PYTHON), "-c", probe], capture_output=True, text=True, check=True).stdout
    installed = {canonicalize_name(k): v for k, v in json.loads(out).items()}
    for name, version in read_lock(LOCKS["train"]).items():
        assert installed.get(name) == version, f"train env has {name} {installed.get(name)}, lock says {version}"
