"""What every benchmark script shares: a result passed between processes, a table, a provenance record.

A figure in ``docs/benchmarks.md`` is only worth something with its date, hardware, versions and
the exact command that produced it, so every script writes ``environment()`` into its JSON and
prints its first lines. Engines that must not share a process (LMDeploy spawns workers and keeps
GPU memory until exit; a transformers copy of the same model would skew memory and timing) run
in a child process that prints one ``RESULT {json}`` line, read back by ``run_child``.

Imported as ``report`` by the scripts beside it (``python benchmarks/x.py`` puts this folder on
``sys.path``) and by ``tests/test_benchmarks.py``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.metadata as md
import json
import os
import platform
import shlex
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

RESULT_PREFIX = "RESULT "

#: A table column: (key in each row, header, format spec for numbers such as ".2f").
Column = tuple[str, str, str]


class ChildFailed(RuntimeError):
    """A measurement's child process exited non-zero or printed no RESULT line; the message has its log tail."""


def emit_result(result: Mapping[str, Any]) -> None:
    """Print the one line ``run_child`` reads back (everything else a child prints is log)."""
    print(RESULT_PREFIX + json.dumps(result, ensure_ascii=False), flush=True)


def run_child(cmd: Sequence[str], timeout: float | None = None) -> dict[str, Any]:
    """Run ``cmd`` and return the dict of its last RESULT line, or raise ChildFailed with its log tail
    (also when it runs past ``timeout`` seconds and is killed)."""

    def tail(*outputs: str | bytes | None) -> str:
        text = "\n".join(o.decode(errors="replace") if isinstance(o, bytes) else (o or "") for o in outputs)
        return "\n".join(text.strip().splitlines()[-25:])

    try:
        proc = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as err:
        raise ChildFailed(f"`{shlex.join(cmd)}` ran past {timeout:.0f} s and was stopped:\n"
                          f"{tail(err.stdout, err.stderr)}") from None
    lines = [line for line in proc.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    if proc.returncode != 0 or not lines:
        raise ChildFailed(f"`{shlex.join(cmd)}` exited with status {proc.returncode}"
                          f"{' and printed no result' if not lines else ''}:\n{tail(proc.stdout, proc.stderr)}")
    return json.loads(lines[-1][len(RESULT_PREFIX):])


def parse_size(text: str) -> tuple[int, int]:
    """``"800x600"`` -> (800, 600), with an error that shows the expected form."""
    try:
        width, height = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"a size is WIDTHxHEIGHT in pixels, e.g. 800x600; got {text!r}") from None
    if width < 1 or height < 1:
        raise argparse.ArgumentTypeError(f"a size needs positive width and height, got {text!r}")
    return width, height


def format_value(value: Any, spec: str = "") -> str:
    """``None`` (not measured here, e.g. MFU without a GPU) reads "n/a"; numbers follow ``spec``."""
    if value is None:
        return "n/a"
    if isinstance(value, (int, float)) and not isinstance(value, bool) and spec:
        return format(value, spec)
    return str(value)


def format_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[Column]) -> str:
    """A plain-text table, numbers right-aligned, text left-aligned, that reads the same in a log and in markdown."""
    cells = [[format_value(row.get(key), spec) for key, _, spec in columns] for row in rows]
    numeric = [all(isinstance(row.get(key), (int, float)) or row.get(key) is None for row in rows)
               for key, _, _ in columns]
    widths = [max([len(header)] + [len(line[i]) for line in cells]) for i, (_, header, _) in enumerate(columns)]

    def line(values: Sequence[str]) -> str:
        return "| " + " | ".join(v.rjust(w) if num else v.ljust(w)
                                 for v, w, num in zip(values, widths, numeric)) + " |"

    rule = "|" + "|".join(("-" * (w + 1) + ":") if num else ("-" * (w + 2)) for w, num in zip(widths, numeric)) + "|"
    return "\n".join([line([header for _, header, _ in columns]), rule, *(line(c) for c in cells)])


def _cpu_model() -> str:
    try:
        for text in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if text.startswith("model name"):
                return text.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(name: str) -> str | None:
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None


def environment(packages: Sequence[str] = ("torch", "transformers", "lmdeploy")) -> dict[str, Any]:
    """When, on what and with which versions a figure was measured, and the command that measured it."""
    import torch

    cuda = torch.cuda.is_available()
    env: dict[str, Any] = {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": shlex.join(["python", *sys.argv]),
        "python": platform.python_version(),
        "cpu": _cpu_model(),
        "cpu_cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(0) if cuda else None,
        "gpu_memory_gib": round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1) if cuda else None,
        "cuda": torch.version.cuda if cuda else None,
        "versions": {name: _version(name) for name in packages},
    }
    env["versions"]["torch"] = torch.__version__  # the local build tag (+cu130, +cpu) matters here
    return env


def describe(env: Mapping[str, Any]) -> str:
    """The environment in two lines, printed above every table."""
    hardware = f"GPU {env['gpu']} ({env['gpu_memory_gib']} GiB, CUDA {env['cuda']})" if env["gpu"] else "no GPU"
    versions = ", ".join(f"{k} {v}" for k, v in env["versions"].items() if v)
    return (f"{env['date']}; {hardware}; CPU {env['cpu']} ({env['cpu_cores_usable']} usable cores, "
            f"{env['torch_threads']} torch threads); Python {env['python']}\n{versions}\n$ {env['command']}")


def write_json(path: str | Path, data: Any) -> Path:
    """Write ``data`` as indented UTF-8 JSON (Chinese stays readable) and say where."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {out}")
    return out
