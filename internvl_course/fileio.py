"""Writing files so that a crash never leaves half a file behind, and nothing of the user's is lost.

The kit replaces or deletes only what it wrote itself. ``atomic_directory`` leaves ``MARKER`` in
every folder it writes, listing the files it put there; it replaces an existing folder only when
that folder carries the marker and holds nothing the marker does not list (a user's notes added
to a kit folder stop the kit too). A writer whose inputs are files or folders checks with
``refuse_overlap`` that its output is not, does not contain and is not inside any of them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

#: Linux reports the process's file mode mask here (``Umask:`` line, since Linux 4.7).
PROC_STATUS = Path("/proc/self/status")
#: Left by ``atomic_directory`` in every folder the kit writes: the files it wrote there.
MARKER = "written_by_internvl_course.json"


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


def json_text(data: Any, ensure_ascii: bool = False) -> str:
    """The kit's JSON files as text: indented, keys sorted (the same data, the same bytes), one
    final newline; ``ensure_ascii`` where a file's readers expect escapes (config.json)."""
    return json.dumps(data, indent=2, sort_keys=True, ensure_ascii=ensure_ascii) + "\n"


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


def _contents(folder: Path) -> list[str]:
    """Every file and link under ``folder`` but the marker, as sorted relative POSIX paths; links
    to folders are listed, not followed. Empty folders hold nothing to lose and are not listed."""
    found = []
    for root, dirs, files in os.walk(folder):
        here = Path(root)
        found += [(here / name).relative_to(folder).as_posix()
                  for name in files + [d for d in dirs if (here / d).is_symlink()]]
    return sorted(name for name in found if name != MARKER)


def mark_as_written(folder: Path) -> None:
    """Leave the marker in ``folder``, listing every file in it now: for each folder the kit has
    just written, and for one an older kit wrote before it left markers (its writer recognises it)."""
    text = json.dumps({"written_by": "internvl_course", "files": _contents(Path(folder))}, indent=1)
    atomic_write_text(Path(folder) / MARKER, text + "\n")


def files_not_written(folder: Path) -> list[str] | None:
    """The files under ``folder`` that the kit did not write there ([] for a folder wholly the
    kit's), or None when the folder carries no readable marker."""
    try:
        listed = json.loads((Path(folder) / MARKER).read_text(encoding="utf-8"))["files"]
        written = {name for name in listed if isinstance(name, str)}
    except (OSError, ValueError, TypeError, KeyError):  # no marker, or not one the kit wrote
        return None
    return [name for name in _contents(Path(folder)) if name not in written]


def refuse_existing(out: Path, overwrite: bool = False) -> None:
    """Raise ``FileExistsError`` if ``out`` exists and may not be replaced: it may only with
    ``overwrite``, and only if the kit wrote it and nothing was added since (or it is an empty
    folder). Called by writers before long work starts, and by ``atomic_directory`` on entry and
    again just before it puts the new folder in place."""
    out = Path(out)
    if not (out.exists() or out.is_symlink()):
        return
    if out.is_symlink() or not out.is_dir():
        raise FileExistsError(f"{out} already exists and is {'a link' if out.is_symlink() else 'a file'}, not a "
                              "folder the kit wrote; the kit does not overwrite it. Choose another folder, or "
                              "remove it yourself.")
    empty = not any(out.iterdir())
    foreign = [] if empty else files_not_written(out)  # an empty folder holds nothing to lose
    if foreign is None:
        raise FileExistsError(f"{out} already exists and the kit did not write it (it holds no {MARKER}); the kit "
                              "does not overwrite it, not even when asked to. Choose another folder, or remove it "
                              "yourself if nothing in it is needed.")
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise FileExistsError(f"{out} already exists and holds files the kit did not write there ({shown}); the kit "
                              "does not overwrite it, not even when asked to. Move them out of it, or choose "
                              "another folder.")
    if not overwrite:
        raise FileExistsError(f"{out} already exists; the kit does not overwrite it unless asked to (--overwrite, "
                              "or overwrite=True). Choose another folder, or ask.")


def refuse_overlap(out: Path, inputs: Mapping[str, Path], fix: str, option: str = "out_dir") -> None:
    """Raise ``ValueError`` if ``out`` is, contains or lies inside one of ``inputs`` (named by what
    they are, e.g. ``{"base model": path}``): writing there could destroy an input. Links are
    followed, so a link to an input counts as the input. ``fix`` says where to write instead."""
    target = Path(out).resolve()
    for what, path in inputs.items():
        source = Path(path).resolve()
        relation = ("is" if target == source else "lies inside" if source in target.parents
                    else "contains" if target in source.parents else None)
        if relation:
            raise ValueError(f"{option} {out} {relation} the {what} {path}: writing there could destroy it, so "
                             f"the kit never does. {fix}")


def _put_in_place(staging: Path, out: Path, overwrite: bool) -> None:
    """Rename ``staging`` to ``out``; a previous ``out`` (checked again now: files may have been
    added while the new one was written) is first renamed aside, and put back if the swap fails."""
    refuse_existing(out, overwrite)
    if not out.exists():
        os.rename(staging, out)
        return
    aside = Path(tempfile.mkdtemp(prefix=f".{out.name}.replaced.", dir=out.parent))
    os.rename(out, aside / out.name)
    try:
        os.rename(staging, out)
    except BaseException:
        os.rename(aside / out.name, out)
        aside.rmdir()
        raise
    shutil.rmtree(aside, ignore_errors=True)  # the kit's own previous folder, checked above


@contextmanager
def atomic_directory(out: Path, overwrite: bool = False) -> Iterator[Path]:
    """Build a folder in a staging folder beside ``out``, then rename it into place.

    Yields the staging folder to fill. On success it gets ``MARKER`` and becomes ``out``
    (replacing a previous ``out`` only with ``overwrite`` and only if the kit wrote it, see
    ``refuse_existing``, after the new one is complete); on any error it is removed and ``out``
    is untouched. The folder gets ordinary permissions (mkdtemp would make it 0700, unreadable
    for the other users of a shared GPU server); so does everything written into it, whatever
    wrote it (transformers' save_pretrained leaves safetensors files at 0600).
    """
    out = Path(out)
    refuse_existing(out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        yield staging
        mark_as_written(staging)
        mask = current_umask()
        for path in [staging, *staging.rglob("*")]:
            if not path.is_symlink():  # a link's target is someone else's file: leave it as it is
                os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~mask)
        _put_in_place(staging, out, overwrite)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
