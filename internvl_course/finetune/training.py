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

One run at a time in a work folder: ``train`` holds ``lock_file(work_dir)`` while it runs and a
second ``train`` there is refused, naming the first one's processes (``WorkFolderInUse``). The
run itself stops when the process that started it exits, a killed notebook kernel included
(``launch.stop_with_owner``).
"""

from __future__ import annotations

import argparse
import fcntl
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from internvl_course.finetune.launch import OWNER_ENV
from internvl_course.finetune.trainenv import train_python

# mmengine's LoggerHook line: "... Iter(train) [ 12/480]  lr: 1.9e-04  eta: 0:03:10  time: 0.41
# data_time: 0.01  memory: 0  loss: 2.3115" (memory only on a GPU).
ITER_LINE = re.compile(r"Iter\(train\)\s*\[\s*(?P<iter>\d+)/(?P<total>\d+)\]\s+(?P<fields>.*)$")
FIELD = re.compile(r"(?P<name>[a-z_]+):\s+(?P<value>[-+0-9.e]+)(?=\s|$)")  # "eta: 0:03:10" is not a number
ITER_CHECKPOINT = re.compile(r"iter_(\d+)\.pth$")


class TrainingFailed(RuntimeError):
    """XTuner exited with a non-zero status; the message carries the log's last lines."""


class WorkFolderInUse(RuntimeError):
    """Another training run is using the work folder; the message names its processes."""


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
LOCK_FILES = "train*.lock"  # held (flock) by the run using a work_dir; hold "<train() pid> <XTuner pid>"
#: How long ``train`` waits for a run whose owner has died to finish stopping (``launch.stop_with_owner``
#: ends it within a second; this is only the ceiling).
ORPHAN_GRACE_S = 30.0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, as another user's process
        pass
    return True


def lock_file(work_dir: str | Path) -> Path:
    """``work_dir``'s lock for this machine: ``train.lock``, or ``train.node<N>.lock`` on node N of
    several (NODE_VARIABLES), where every node runs ``train`` on one shared work_dir."""
    rank = os.environ.get("NODE_RANK") if os.environ.get("NNODES") else None
    return Path(work_dir) / (f"train.node{rank}.lock" if rank else "train.lock")


def _try_lock(work: Path) -> tuple[IO[str] | None, list[int]]:
    """Take ``lock_file(work)`` without waiting: (the open lock file, []) or (None, the holder's pids).

    flock is dropped by the kernel when every process holding it has exited, so a killed run
    never blocks the next. The folder may be renamed (``set_aside``) under a lock file that was
    just opened, hence the check that the locked file is still the one at the path.
    """
    while True:
        work.mkdir(parents=True, exist_ok=True)
        handle = open(lock_file(work), "a+", encoding="utf-8")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holders = [int(pid) for pid in handle.read().split() if pid.isdigit()]
            handle.close()
            return None, holders
        try:
            if os.fstat(handle.fileno()).st_ino == lock_file(work).stat().st_ino:
                _record_holders(handle, [os.getpid()])
                return handle, []
        except FileNotFoundError:  # set aside meanwhile: lock the new folder
            pass
        handle.close()


def _record_holders(lock: IO[str], pids: list[int]) -> None:
    lock.seek(0)
    lock.truncate()
    lock.write(" ".join(map(str, pids)) + "\n")
    lock.flush()


def lock_work_dir(work_dir: str | Path) -> IO[str]:
    """Hold ``work_dir``'s lock for one training run, or raise ``WorkFolderInUse`` naming the run that has it.

    Two trainers in one folder overwrite each other's checkpoints and ``last_checkpoint``. A
    run whose owner has already died (a killed kernel) is stopping by itself: it is waited for,
    up to ``ORPHAN_GRACE_S``. Closing the returned file releases the lock.
    """
    work = Path(work_dir)
    deadline = time.monotonic() + ORPHAN_GRACE_S
    while True:
        lock, holders = _try_lock(work)
        if lock is not None:
            return lock
        owner_gone = bool(holders) and not _alive(holders[0])
        if not (owner_gone and time.monotonic() < deadline):
            break
        time.sleep(0.2)
    owner, trainer = (holders + [0, 0])[:2]  # the file is empty only for an instant after locking
    who = f"XTuner process {trainer}, started by process {owner}" if trainer else f"process {owner}"
    raise WorkFolderInUse(
        f"{work} is in use by another training run ({who}; lock file {lock_file(work)}). Two runs in one "
        f"folder overwrite each other's checkpoints. Wait for it to finish, or stop it: interrupt the "
        f"notebook cell that runs it, or `kill {trainer or owner}`. Then call train() again: it resumes "
        "from the last checkpoint. Or train into another work_dir.")


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
    # OWNER_ENV: the run ends when this process does (a killed kernel), torchrun or not in between.
    from internvl_course.device import multicast_off

    return multicast_off({**os.environ, "PYTHONUNBUFFERED": "1", "MPLBACKEND": "Agg", OWNER_ENV: str(os.getpid())})


def train(config: str | Path, work_dir: str | Path, *, resume: bool = True, gpus: int | None = None,
          deepspeed: str | None = "deepspeed_zero2", progress: bool = True, echo: bool = False) -> TrainRun:
    """Train with XTuner until it finishes; resume from ``work_dir``'s last checkpoint if there is one.

    ``resume=False``, or a ``work_dir`` whose run used another config, sets the old run aside
    (``set_aside``) and starts from the beginning.

    Raises ``TrainingFailed`` (with the log's tail and its path) if XTuner fails, and
    ``WorkFolderInUse`` if another run is training in ``work_dir``. Interrupting (Ctrl-C, the
    notebook's stop button) stops the child processes too and says how to resume; so does the
    death of this process (``launch.stop_with_owner``). ``echo`` also prints every XTuner line
    (the bar shows only the progress).
    """
    config, work = Path(config).resolve(), Path(work_dir).resolve()
    if not config.is_file():
        raise FileNotFoundError(f"config {config} does not exist; write one with presets.write_config(...) "
                                "(from internvl_course.finetune import presets)")
    gpus = default_gpus(config) if gpus is None else gpus
    if gpus:
        from internvl_course.device import check_gpu_count

        check_gpu_count(gpus, "gpus")
    lock = lock_work_dir(work)
    try:
        lock = _set_aside_unless_resumed(config, work, lock, resume)
        return _run(config, work, lock, gpus, deepspeed, progress, echo)
    finally:
        lock.close()


def _set_aside_unless_resumed(config: Path, work: Path, lock: IO[str], resume: bool) -> IO[str]:
    """Move an earlier run in ``work`` aside unless it is one to resume; returns the lock to hold."""
    recorded = work / RUN_CONFIG
    if any(not path.match(LOCK_FILES) for path in work.iterdir()):
        same = recorded.is_file() and recorded.read_text(encoding="utf-8") == config.read_text(encoding="utf-8")
        if not (resume and same):
            why = "a fresh start was asked for" if not resume else "it was trained with other settings"
            aside = set_aside(work)  # the lock file goes with it; the fresh folder gets one of its own
            fresh = lock_work_dir(work)
            lock.close()
            print(f"{work} holds an earlier run ({why}): moved to {aside}", file=sys.stderr)
            return fresh
    return lock


def _stop_group(child: subprocess.Popen) -> None:
    """SIGTERM to the child's process group (torchrun passes it on to its workers), SIGKILL after 20 s."""
    try:
        os.killpg(child.pid, signal.SIGTERM)
        try:
            child.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
    except ProcessLookupError:  # already gone
        child.wait()


def _run(config: Path, work: Path, lock: IO[str], gpus: int, deepspeed: str | None, progress: bool,
         echo: bool) -> TrainRun:
    from tqdm.auto import tqdm

    recorded = work / RUN_CONFIG
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
    # The child gets a session of its own, so that stopping it reaches every process it started,
    # and the lock, so that the folder stays locked until the very last of them has exited.
    with open(log_file, "w", encoding="utf-8") as log, subprocess.Popen(
            command, cwd=work, env=_child_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, errors="replace", bufsize=1, start_new_session=True, pass_fds=(lock.fileno(),)) as child:
        _record_holders(lock, [os.getpid(), child.pid])
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
            _stop_group(child)
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
    except (TrainingFailed, WorkFolderInUse) as err:
        print(err, file=sys.stderr)
        return 1
    print(f"done in {run.seconds:.0f} s; last checkpoint {run.checkpoint}; log {run.log_file}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
