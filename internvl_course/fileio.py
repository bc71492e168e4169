"""Writing files so that a crash never leaves half a file behind."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

#: Linux reports the process's file mode mask here (``Umask:`` line, since Linux 4.7).
PROC_STATUS = Path("/proc/self/status")


def current_umask() -> int:
    """The process's umask, read without changing it.

    ``os.umask`` can only read the mask by setting a new one; setting it back leaves a moment in
    which every other thread of the process creates files with the wrong mask. Linux shows the
    mask in /proc; elsewhere a child shell, which inherits it, prints it.
    """
    try:
        status = PROC_STATUS.read_text()
    except OSError:
        status = ""
    for line in status.splitlines():
        if line.startswith("Umask:"):
            return int(line.split()[1], 8)
    shown = subprocess.run(["/bin/sh", "-c", "umask"], capture_output=True, text=True, check=True).stdout
    return int(shown.strip(), 8)


def atomic_write_bytes(path: Path, data: bytes) -> Path:
    """Write to a temporary file in the same folder, then rename it over ``path``.

    Readers see the old file or the new one, never half of either. The file gets ordinary
    permissions (mkstemp would leave it at 0600).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~current_umask())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: Path, text: str) -> Path:
    """``atomic_write_bytes`` for UTF-8 text."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def refuse_existing(out: Path, overwrite: bool = False) -> None:
    """Raise if ``out`` exists and may not be replaced: called by writers before long work starts,
    and again by ``atomic_directory`` when the folder is put in place."""
    if Path(out).exists() and not overwrite:
        raise FileExistsError(f"{out} already exists; the kit does not overwrite it. Choose another folder "
                              "or remove it first.")


@contextmanager
def atomic_directory(out: Path, overwrite: bool = False) -> Iterator[Path]:
    """Build a folder in a staging folder beside ``out``, then rename it into place.

    Yields the staging folder to fill. On success it becomes ``out`` (replacing a previous
    ``out`` only with ``overwrite``, after the new one is complete); on any error it is removed
    and ``out`` is untouched. The folder gets ordinary permissions (mkdtemp would make it 0700,
    unreadable for the other users of a shared GPU server); so does everything written into it,
    whatever wrote it (transformers' save_pretrained leaves safetensors files at 0600).
    """
    out = Path(out)
    refuse_existing(out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        yield staging
        mask = current_umask()
        for path in [staging, *staging.rglob("*")]:
            if not path.is_symlink():  # a link's target is someone else's file: leave it as it is
                os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~mask)
        if out.exists():
            shutil.rmtree(out)
        os.rename(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
