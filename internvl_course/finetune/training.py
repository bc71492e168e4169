"""Run XTuner training from a notebook: a live progress bar, kept logs, resume, loss curves.

``train(config, work_dir)`` runs ``xtuner.tools.train`` in the train env as a child process
(``internvl_course.finetune.launch``; under ``torchrun`` with DeepSpeed on a GPU) and returns only
when it has finished, with its real exit status (``xtuner train`` drops it: docs/design.md, "XTuner 0.2.0").
Every line XTuner prints goes to ``work_dir/logs/train-<time>.log``, which is never overwritten;
the "Iter(train) [k/N] ... loss: ..." lines drive a tqdm bar with the loss and an ETA.

Stopping is safe: rerun ``train`` with the same ``work_dir`` and it resumes from the last
checkpoint mmengine finished writing (its ``last_checkpoint`` file), skipping the batches
already trained. It resumes only a run of the same config (kept as ``work_dir/run_config.py``):
a run with other settings is set aside, renamed ``<work_dir>.<time>``, never deleted. ``parse_logs`` joins the logs of every attempt into one loss and learning-rate
record, later attempts winning where they overlap, and ``plot_training`` draws it.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from internvl_course.finetune.trainenv import train_python

# mmengine's LoggerHook line: "... Iter(train) [ 12/480]  lr: 1.9e-04  eta: 0:03:10  time: 0.41
# data_time: 0.01  memory: 0  loss: 2.3115" (memory only on a GPU).
ITER_LINE = re.compile(r"Iter\(train\)\s*\[\s*(?P<iter>\d+)/(?P<total>\d+)\]\s+(?P<fields>.*)$")
FIELD = re.compile(r"(?P<name>[a-z_]+):\s+(?P<value>[-+0-9.e]+)(?=\s|$)")  # "eta: 0:03:10" is not a number
ITER_CHECKPOINT = re.compile(r"iter_(\d+)\.pth$")


class TrainingFailed(RuntimeError):
    """XTuner exited with a non-zero status; the message carries the log's last lines."""


@dataclass(frozen=True)
class TrainRun:
    """What one call of ``train`` did."""

    work_dir: Path
    returncode: int
    log_file: Path
    checkpoint: Path | None  # the last checkpoint after the run
    resumed_from: Path | None
    seconds: float


def last_checkpoint(work_dir: str | Path) -> Path | None:
    """The newest complete checkpoint in ``work_dir``, or None.

    mmengine writes the checkpoint's path into ``last_checkpoint`` only after the checkpoint
    itself, so a run killed while saving never points at half a file.
    """
    work = Path(work_dir)
    pointer = work / "last_checkpoint"
    if pointer.is_file():
        path = Path(pointer.read_text(encoding="utf-8").strip())
        if not path.is_absolute():
            path = work / path
        if path.exists():
            return path
    return None


RUN_CONFIG = "run_config.py"  # the config a work_dir's run was started with


def set_aside(work_dir: str | Path) -> Path:
    """Rename a previous run's folder to ``<work_dir>.<time>`` (nothing is deleted); returns the new name."""
    work = Path(work_dir)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    aside, n = work.with_name(f"{work.name}.{stamp}"), 1
    while aside.exists():
        aside, n = work.with_name(f"{work.name}.{stamp}-{n}"), n + 1
    work.rename(aside)
    return aside


def _uses_gpu() -> bool:
    import torch

    return torch.cuda.is_available()


# Several nodes: start the same command on every node with these variables set, as
# ``xtuner train`` reads them: NNODES (nodes), NODE_RANK (0 on the first node), ADDR (the first
# node's address) and PORT (a free port there). Each node runs ``gpus`` processes.
NODE_VARIABLES = {"NNODES": "--nnodes", "NODE_RANK": "--node_rank", "ADDR": "--master_addr", "PORT": "--master_port"}


def default_gpus(config: Path | None = None) -> int:
    """GPUs per node when ``train`` is not told: the config's ``gpus`` setting, else XTuner's
    NPROC_PER_NODE variable, else 1 with CUDA and 0 (the CPU) without."""
    if config is not None:
        from internvl_course.finetune.presets import read_settings

        gpus = read_settings(config).get("gpus")
        if gpus is not None:
            return int(gpus)
    if os.environ.get("NPROC_PER_NODE"):
        return int(os.environ["NPROC_PER_NODE"])
    return 1 if _uses_gpu() else 0


def train_command(config: Path, work_dir: Path, resume: Path | None = None, gpus: int | None = None,
                  deepspeed: str | None = "deepspeed_zero2") -> list[str]:
    """The command line: on a CPU the launcher alone; with GPUs ``torch.distributed.run`` (``gpus``
    processes a node, several nodes through NODE_VARIABLES) and, by default, DeepSpeed ZeRO-2
    (XTuner's ``deepspeed_zero2``), as the tutorial trains."""
    gpus = default_gpus(config) if gpus is None else gpus
    if gpus < 0:
        raise ValueError(f"gpus must be 0 (the CPU) or more, got {gpus}")
    args = ["-m", "internvl_course.finetune.launch", str(config), "--work-dir", str(work_dir)]
    if gpus:
        nodes = [f"{flag}={os.environ[name]}" for name, flag in NODE_VARIABLES.items() if os.environ.get(name)]
        args = ["-m", "torch.distributed.run", f"--nproc_per_node={gpus}", *nodes, *args, "--launcher", "pytorch"]
        if deepspeed:
            args += ["--deepspeed", deepspeed]
    if resume is not None:
        args += ["--resume", str(resume)]
    return [str(train_python()), *args]


def _parse_line(line: str) -> dict[str, float] | None:
    match = ITER_LINE.search(line)
    if not match:
        return None
    record: dict[str, float] = {"iter": int(match["iter"]), "total": int(match["total"])}
    for field in FIELD.finditer(match["fields"]):
        try:
            record[field["name"]] = float(field["value"])
        except ValueError:
            continue
    return record


def _child_env() -> dict[str, str]:
    # Lines arrive as XTuner prints them, so the bar is live. A Jupyter kernel exports its inline
    # matplotlib backend, which the train env does not have: XTuner would die importing pyplot.
    from internvl_course.device import multicast_off

    return multicast_off({**os.environ, "PYTHONUNBUFFERED": "1", "MPLBACKEND": "Agg"})


def train(config: str | Path, work_dir: str | Path, *, resume: bool = True, gpus: int | None = None,
          deepspeed: str | None = "deepspeed_zero2", progress: bool = True, echo: bool = False) -> TrainRun:
    """Train with XTuner until it finishes; resume from ``work_dir``'s last checkpoint if there is one.

    ``resume=False``, or a ``work_dir`` whose run used another config, sets the old run aside
    (``set_aside``) and starts from the beginning.

    Raises ``TrainingFailed`` (with the log's tail and its path) if XTuner fails. Interrupting
    (Ctrl-C, the notebook's stop button) stops the child process too and says how to resume.
    ``echo`` also prints every XTuner line (the bar shows only the progress).
    """
    from tqdm.auto import tqdm

    config, work = Path(config).resolve(), Path(work_dir).resolve()
    if not config.is_file():
        raise FileNotFoundError(f"config {config} does not exist; write one with presets.write_config(...) "
                                "(from internvl_course.finetune import presets)")
    gpus = default_gpus(config) if gpus is None else gpus
    if gpus:
        from internvl_course.device import check_gpu_count

        check_gpu_count(gpus, "gpus")
    recorded = work / RUN_CONFIG
    if work.exists() and any(work.iterdir()):
        same = recorded.is_file() and recorded.read_text(encoding="utf-8") == config.read_text(encoding="utf-8")
        if not (resume and same):
            why = "a fresh start was asked for" if not resume else "it was trained with other settings"
            print(f"{work} holds an earlier run ({why}): moved to {set_aside(work)}", file=sys.stderr)
    work.mkdir(parents=True, exist_ok=True)
    if not recorded.is_file():
        shutil.copyfile(config, recorded)
    start_from = last_checkpoint(work)
    command = train_command(config, work, start_from, gpus, deepspeed)
    logs = work / "logs"
    logs.mkdir(exist_ok=True)
    log_file = logs / f"train-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    tail: deque[str] = deque(maxlen=40)
    started = time.perf_counter()
    bar = tqdm(desc="XTuner", unit="iter", disable=not progress, dynamic_ncols=True)
    if start_from is not None:
        bar.write(f"resuming from {start_from}")
    with open(log_file, "w", encoding="utf-8") as log, subprocess.Popen(
            command, cwd=work, env=_child_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, errors="replace", bufsize=1) as child:
        log.write("$ " + " ".join(command) + "\n")
        try:
            for line in child.stdout:
                log.write(line)
                log.flush()
                tail.append(line.rstrip())
                if echo:
                    bar.write(line.rstrip())
                record = _parse_line(line)
                if record is not None:
                    if bar.total != record["total"]:
                        bar.reset(total=int(record["total"]))
                        bar.update(int(record["iter"]) - 1)  # a resumed run starts part way
                    bar.update(int(record["iter"]) - bar.n)
                    bar.set_postfix(loss=f"{record.get('loss', float('nan')):.4f}", lr=f"{record.get('lr', 0):.2e}")
            returncode = child.wait()
        except BaseException:
            child.terminate()
            try:
                child.wait(timeout=20)
            except subprocess.TimeoutExpired:
                child.kill()
            bar.close()
            print(f"Training stopped. Its log: {log_file}. Run train() again with work_dir={work} to resume "
                  f"from {last_checkpoint(work) or 'the start (no checkpoint yet)'}.", file=sys.stderr)
            raise
    bar.close()
    run = TrainRun(work, returncode, log_file, last_checkpoint(work), start_from, time.perf_counter() - started)
    if returncode != 0:
        raise TrainingFailed(f"XTuner exited with status {returncode}. Last lines of its log:\n"
                             + "\n".join(tail) + f"\nFull log: {log_file}")
    return run


def parse_logs(work_dir: str | Path) -> list[dict[str, float]]:
    """Every "Iter(train)" record of every attempt in ``work_dir/logs``, by iteration; where a
    resumed attempt repeats iterations, the later attempt's record wins."""
    records: dict[int, dict[str, float]] = {}
    for log in sorted((Path(work_dir) / "logs").glob("train-*.log"), key=lambda p: p.stat().st_mtime):
        for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
            record = _parse_line(line)
            if record is not None:
                records[int(record["iter"])] = record
    return [records[i] for i in sorted(records)]


def plot_training(records: list[dict[str, float]]) -> tuple[Any, Any]:
    """Two figures (``charts.plot_curves``): the loss with its running mean, and the learning rate."""
    from internvl_course.lessons.charts import plot_curves

    if not records:
        raise ValueError("no training records: train first (or point at the work_dir that holds logs/)")
    iters = [r["iter"] for r in records]
    loss = [r.get("loss", float("nan")) for r in records]
    window = max(1, len(loss) // 20)
    mean = [sum(loss[max(0, i - window + 1):i + 1]) / len(loss[max(0, i - window + 1):i + 1])
            for i in range(len(loss))]
    loss_figure = plot_curves({"loss": (iters, loss), f"mean of {window}": (iters, mean)}, "loss",
                              "training loss", xlabel="iteration")
    lr_figure = plot_curves({"learning rate": (iters, [r.get("lr", float("nan")) for r in records])},
                            "learning rate", "warm-up, then decay", xlabel="iteration")
    return loss_figure, lr_figure


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="internvl-course train",
                                     description="Train with XTuner in the train env (resumes by default).")
    parser.add_argument("config")
    parser.add_argument("work_dir")
    parser.add_argument("--no-resume", action="store_true", help="start from the beginning even if checkpoints exist")
    parser.add_argument("--gpus", type=int, help="GPUs per node (default: the config's gpus setting, else "
                        "NPROC_PER_NODE, else 1 if CUDA is available, else the CPU); several nodes: set "
                        + ", ".join(NODE_VARIABLES) + " on each")
    parser.add_argument("--no-deepspeed", action="store_true", help="on GPUs, train without DeepSpeed")
    args = parser.parse_args(argv)
    try:
        run = train(args.config, args.work_dir, resume=not args.no_resume, gpus=args.gpus,
                    deepspeed=None if args.no_deepspeed else "deepspeed_zero2")
    except TrainingFailed as err:
        print(err, file=sys.stderr)
        return 1
    print(f"done in {run.seconds:.0f} s; last checkpoint {run.checkpoint}; log {run.log_file}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
