"""Offline wheel bundles of the two environments, for machines without internet (``make wheelhouse``).

A university cluster's GPU node often reaches no package index. This module downloads, on a
machine that does, everything ``make setup`` installs, as files a node installs from with
``--no-index --find-links``:

``full`` (``make wheelhouse``): every pin of ``requirements/course.lock`` and
``requirements/train.lock`` as a manylinux x86_64 wheel for CPython 3.11 (the locks' platform),
into ``<out>/course`` and ``<out>/train``; the two published only as source archives (DeepSpeed,
transformers-stream-generator) are built here into pure-Python wheels with the train env's Python
(DeepSpeed's build imports torch; without the train env the sdists are kept and the node builds
them); uv and the kit's build backend go to ``<out>/tools``. Then ``make setup OFFLINE=<out>`` on the node.

``node`` (``make wheelhouse-node``): only what a node that brings its own Python, torch and CUDA
stack lacks, read from that node's ``pip list --format=freeze``: ``<out>/course`` holds the
course lock's packages the node does not have at all, with LMDeploy's 364 MB TurboMind library
cut out of its wheel (the PyTorch engine does not use it); ``<out>/train`` holds the train lock's
missing packages plus those whose pinned version must replace the node's (``replacements``),
source-only packages as sdists for the node to build (DeepSpeed against the node's own torch).
Installed with ``pip install --no-deps --target DIR`` and put first on ``PYTHONPATH``, so the
node's own packages are never touched. Where the way to the node takes only so much,
``--max-mib`` fails a bundle above that size and names its largest files, before anyone carries
it.

Runs with any Python 3.11+ and pip (the Makefile uses ``work_dirs/tools``); only the standard
library is imported.
"""

from __future__ import annotations

import argparse
import fnmatch
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

from internvl_course.paths import TRAIN_ENV_NAME, env_python, repo_root

ENVS = ("course", "train")
#: The locks' packages published only as source archives (docs/design.md, "Two environments"; both
#: are what `make setup` builds from source, as uv's cache shows): downloaded as sdists, then built.
SDIST_ONLY = frozenset({"deepspeed", "transformers-stream-generator"})
#: What a GPU node brings itself and a bundle must not replace: its torch build and the CUDA
#: libraries that belong to it. bitsandbytes 0.45.0 (the train lock's) imports ``triton.ops``,
#: gone since triton 3.2, and then breaks peft's LoRA injection (docs/design.md, "Two
#: environments"): with a node's newer torch it is left out, which only loses QLoRA
#: (``quantization_llm``).
NODE_PROVIDED = ("torch", "torchvision", "torchaudio", "triton", "nvidia-*", "bitsandbytes")
#: Beyond an env's ``==`` pins in pyproject.toml, versions that must come with them: transformers
#: 4.48.0 (XTuner's pin) needs tokenizers < 0.22 and huggingface-hub < 1.0.
COUPLED = {"course": frozenset(), "train": frozenset({"tokenizers", "huggingface-hub"})}
#: Files cut from LMDeploy's wheel in a node bundle: the TurboMind engine's compiled library.
TURBOMIND_LIBRARY = ("lmdeploy/turbomind/_turbomind*.so",)
MIB = 2**20

_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?\s*==\s*([^\s;#]+)")


def normalize(name: str) -> str:
    """A distribution name the way indexes compare them (PEP 503): ``Typing_Extensions`` -> ``typing-extensions``."""
    return re.sub(r"[-_.]+", "-", name).lower()


def read_pins(text: str) -> dict[str, str]:
    """``name==version`` lines (a uv lock, a pip freeze) -> {normalised name: version}; comments,
    ``# via`` lines, options and unpinned lines are skipped."""
    pins = {}
    for line in text.splitlines():
        match = _PIN.match(line.strip())
        if match:
            pins[normalize(match[1])] = match[2]
    return pins


def lock_pins(env: str) -> dict[str, str]:
    """The pins of ``requirements/<env>.lock``."""
    return read_pins((repo_root() / "requirements" / f"{env}.lock").read_text(encoding="utf-8"))


def replacements(env: str, pyproject: str) -> frozenset[str]:
    """Packages whose locked version must replace a node's: the env extra's ``==`` pins, plus ``COUPLED``."""
    extras = tomllib.loads(pyproject)["project"]["optional-dependencies"][env]
    return frozenset(read_pins("\n".join(extras))) | COUPLED[env]


def node_provided(name: str) -> bool:
    return any(fnmatch.fnmatch(name, pattern) for pattern in NODE_PROVIDED)


def node_subset(lock: dict[str, str], have: dict[str, str], replace: frozenset[str]) -> dict[str, str]:
    """The pins of ``lock`` a node with packages ``have`` must be given: those it lacks, and those in
    ``replace`` it has in another version, never what ``NODE_PROVIDED`` names."""
    return {name: version for name, version in lock.items() if not node_provided(name)
            and (name not in have or (name in replace and have[name] != version))}


def platform_tags(glibc: str = "2.28", arch: str = "x86_64") -> list[str]:
    """Every manylinux tag a node with ``glibc`` can run, newest first, the legacy aliases included.

    pip's ``--platform`` takes tags literally: given only ``manylinux_2_28_x86_64`` it refuses a
    ``manylinux2014`` (= 2.17) wheel that such a node runs fine.
    """
    major, minor = (int(part) for part in glibc.split("."))
    if major != 2 or minor < 5:
        raise ValueError(f"glibc must be 2.5 or newer, as MAJOR.MINOR (e.g. 2.28); got {glibc!r}")
    tags = [f"manylinux_2_{m}_{arch}" for m in range(minor, 4, -1)]
    legacy = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}
    return tags + [f"{alias}_{arch}" for m, alias in legacy.items() if m <= minor]


def download_commands(pins: dict[str, str], dest: Path, python_version: str, glibc: str,
                      python: str = sys.executable) -> list[list[str]]:
    """pip commands that fetch ``pins`` into ``dest``: binary wheels for the target Python and
    platform, and source archives (into ``dest/sdist``) for what ``SDIST_ONLY`` names. No
    dependency resolution: a lock is already complete."""
    wheels = sorted(f"{n}=={v}" for n, v in pins.items() if n not in SDIST_ONLY)
    sdists = sorted(f"{n}=={v}" for n, v in pins.items() if n in SDIST_ONLY)
    base = [python, "-m", "pip", "download", "--disable-pip-version-check", "--quiet", "--no-deps"]
    commands = []
    if wheels:
        platforms = [arg for tag in platform_tags(glibc) for arg in ("--platform", tag)]
        commands.append([*base, "--only-binary=:all:", *platforms, "--python-version", python_version,
                         "--implementation", "cp", "--dest", str(dest), *wheels])
    if sdists:
        commands.append([*base, "--no-binary=:all:", "--dest", str(dest / "sdist"), *sdists])
    return commands


def strip_wheel(wheel: Path, patterns: tuple[str, ...]) -> int:
    """Rewrite ``wheel`` without the members matching ``patterns`` (and their RECORD lines, so pip
    still verifies it); returns the uncompressed bytes removed (0: nothing matched, file untouched)."""
    with zipfile.ZipFile(wheel) as source:
        members = source.infolist()
        cut = [m for m in members if any(fnmatch.fnmatch(m.filename, p) for p in patterns)]
        if not cut:
            return 0
        cut_names = {m.filename for m in cut}
        record = next(m for m in members if m.filename.endswith(".dist-info/RECORD"))
        partial = wheel.with_suffix(".partial")
        with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED) as target:
            for member in members:
                if member.filename in cut_names:
                    continue
                data = source.read(member)
                if member is record:
                    lines = [line for line in data.decode("utf-8").splitlines()
                             if line.split(",", 1)[0] not in cut_names]
                    data = ("\n".join(lines) + "\n").encode("utf-8")
                target.writestr(member, data)
    partial.replace(wheel)
    return sum(m.file_size for m in cut)


def _run(command: list[str], dry_run: bool) -> None:
    print("$ " + shlex.join(command), flush=True)
    if not dry_run:
        subprocess.run(command, check=True)


def _folder_size(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def _only(pins: dict[str, str], only: list[str] | None) -> dict[str, str]:
    """Restrict ``pins`` to the names in ``only`` (a small trial run), or keep them all."""
    if not only:
        return pins
    wanted = {normalize(name) for name in only}
    return {n: v for n, v in pins.items() if n in wanted}


def build_full(out: Path, python_version: str, glibc: str, uv: str, uv_version: str, build_python: Path,
               only: list[str] | None, dry_run: bool) -> None:
    """Every pin of both locks, the sdists built where possible, plus uv and setuptools in ``tools``."""
    locks = {env: lock_pins(env) for env in ENVS}
    tools = {"uv": uv_version, "setuptools": locks["train"]["setuptools"]}  # setuptools: the kit's build backend
    for folder, pins in [*((env, locks[env]) for env in ENVS), ("tools", tools)]:
        pins = _only(pins, only)
        print(f"{folder}: {len(pins)} packages -> {out / folder}", flush=True)
        for command in download_commands(pins, out / folder, python_version, glibc):
            _run(command, dry_run)
        for sdist in sorted((out / folder / "sdist").glob("*.tar.gz")) if not dry_run else []:
            if build_python.exists():
                _run([uv, "build", "--quiet", "--wheel", "--no-build-isolation", "--python", str(build_python),
                      "--out-dir", str(out / folder), str(sdist)], dry_run)
            else:
                shutil.copy2(sdist, out / folder)
                print(f"{build_python} is missing, so {sdist.name} stays a source archive: the node builds it "
                      "(it needs torch installed first)", flush=True)
    if not dry_run:
        for folder in (*ENVS, "tools"):
            print(f"{out / folder}: {_folder_size(out / folder) / MIB:.1f} MiB")


def check_bundle_size(out: Path, max_mib: float | None) -> None:
    """Print the size of ``out``'s env folders; above ``max_mib`` MiB (what the way to the node
    takes), stop with the largest files, so the bundle is split or trimmed here rather than found
    too big on the way."""
    files = sorted((f for env in ENVS for f in (out / env).rglob("*") if f.is_file()),
                   key=lambda f: f.stat().st_size, reverse=True)
    size = sum(f.stat().st_size for f in files)
    print(f"{out}: {size / MIB:.1f} MiB", flush=True)
    if max_mib is not None and size > max_mib * MIB:
        largest = ", ".join(f"{f.relative_to(out)} ({f.stat().st_size / MIB:.1f} MiB)" for f in files[:3])
        raise SystemExit(f"{out} holds {size / MIB:.1f} MiB, more than --max-mib {max_mib:g}; largest: {largest}. "
                         "Carry it in parts (--only NAME ... with a separate --out each) or raise --max-mib.")


def build_node(out: Path, have_file: Path, python_version: str, glibc: str, only: list[str] | None,
               dry_run: bool, max_mib: float | None = None) -> None:
    """What a node with its own Python, torch and CUDA lacks, per env; TurboMind cut from LMDeploy;
    at most ``max_mib`` MiB in all (None: no limit)."""
    have = read_pins(have_file.read_text(encoding="utf-8"))
    if not have:
        raise SystemExit(f"{have_file} lists no packages: give the output of `python -m pip list --format=freeze` "
                         "run with the node's Python")
    pyproject = (repo_root() / "pyproject.toml").read_text(encoding="utf-8")
    for env in ENVS:
        pins = _only(node_subset(lock_pins(env), have, replacements(env, pyproject)), only)
        print(f"{env}: {len(pins)} packages the node lacks -> {out / env}: "
              + " ".join(f"{n}=={v}" for n, v in sorted(pins.items())), flush=True)
        for command in download_commands(pins, out / env, python_version, glibc):
            _run(command, dry_run)
        if dry_run:
            continue
        for sdist in (out / env / "sdist").glob("*.tar.gz"):
            shutil.move(str(sdist), out / env / sdist.name)  # the node builds it against its own torch
        for wheel in (out / env).glob("lmdeploy-*.whl"):
            removed = strip_wheel(wheel, TURBOMIND_LIBRARY)
            print(f"{wheel.name}: TurboMind library cut ({removed / MIB:.0f} MiB unpacked)")
    if not dry_run:
        check_bundle_size(out, max_mib)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="internvl-course wheelhouse", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="kind", required=True)
    for kind, default_python in (("full", "3.11"), ("node", "3.12")):
        p = sub.add_parser(kind, help="both envs, every pin" if kind == "full" else "what a GPU node lacks")
        p.add_argument("--out", type=Path, required=True)
        p.add_argument("--python-version", default=default_python, help="the target's CPython (e.g. 3.11)")
        p.add_argument("--glibc", default="2.28", help="the target's glibc, MAJOR.MINOR (the locks assume 2.28)")
        p.add_argument("--only", nargs="+", metavar="NAME", help="only these packages: a small trial run")
        p.add_argument("--dry-run", action="store_true", help="print the package lists and commands, download nothing")
    sub.choices["full"].add_argument("--uv", default="uv", help="the uv that builds sdists")
    sub.choices["full"].add_argument("--uv-version", required=True, help="the uv to bundle (the Makefile's)")
    sub.choices["full"].add_argument("--build-python", type=Path,
                                     default=env_python(TRAIN_ENV_NAME),
                                     help="Python whose torch builds DeepSpeed's wheel (default: the train env)")
    sub.choices["node"].add_argument("--have", type=Path, required=True,
                                     help="the node's `python -m pip list --format=freeze` output")
    sub.choices["node"].add_argument("--max-mib", type=float, metavar="MIB",
                                     help="fail if the bundle is larger than this many MiB, e.g. what a "
                                          "transfer to the node takes (default: no limit)")
    args = parser.parse_args(argv)
    if args.kind == "node" and args.max_mib is not None and args.max_mib <= 0:
        parser.error(f"--max-mib must be a positive number of MiB, got {args.max_mib:g}")
    if args.kind == "full":
        build_full(args.out, args.python_version, args.glibc, args.uv, args.uv_version, args.build_python.absolute(),
                   args.only, args.dry_run)
    else:
        build_node(args.out, args.have, args.python_version, args.glibc, args.only, args.dry_run, args.max_mib)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
