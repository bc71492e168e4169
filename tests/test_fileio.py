"""Atomic writes: a reader sees the old file or the new one, never half of either."""

from __future__ import annotations

import os

import pytest

from internvl_course.fileio import atomic_write_bytes, atomic_write_text

pytestmark = pytest.mark.train_env


def test_writes_and_replaces(tmp_path):
    target = tmp_path / "deep" / "summary.json"
    atomic_write_text(target, "one")
    atomic_write_text(target, "two")
    assert target.read_text() == "two"
    assert os.listdir(target.parent) == ["summary.json"]  # no temporary file left behind


def test_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "model.bin"
    atomic_write_bytes(target, b"old")

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["model.bin"]


def test_written_files_are_readable_by_others(tmp_path):
    target = atomic_write_text(tmp_path / "config.json", "{}")
    mask = os.umask(0o022)
    try:
        target = atomic_write_text(tmp_path / "config.json", "{}")
    finally:
        os.umask(mask)
    assert target.stat().st_mode & 0o777 == 0o644


def test_atomic_directory_appears_whole_and_readable(tmp_path):
    from internvl_course.fileio import atomic_directory

    mask = os.umask(0o022)
    try:
        with atomic_directory(tmp_path / "model") as staging:
            (staging / "config.json").write_text("{}")
            (staging / "weights").mkdir()
            (staging / "weights" / "model.safetensors").write_bytes(b"x")
            os.chmod(staging / "weights" / "model.safetensors", 0o600)  # as save_pretrained leaves it
            assert not (tmp_path / "model").exists()  # invisible until complete
    finally:
        os.umask(mask)
    assert (tmp_path / "model" / "config.json").read_text() == "{}"
    assert (tmp_path / "model").stat().st_mode & 0o777 == 0o755
    assert (tmp_path / "model" / "weights").stat().st_mode & 0o777 == 0o755
    assert (tmp_path / "model" / "weights" / "model.safetensors").stat().st_mode & 0o777 == 0o644


def test_atomic_directory_failure_leaves_nothing_and_keeps_the_old(tmp_path):
    from internvl_course.fileio import MARKER, atomic_directory

    with atomic_directory(tmp_path / "model") as staging:
        (staging / "old").write_text("keep")
    with pytest.raises(FileExistsError, match="does not overwrite it unless asked"):
        with atomic_directory(tmp_path / "model"):
            pass
    with pytest.raises(RuntimeError, match="half way"):
        with atomic_directory(tmp_path / "model", overwrite=True) as staging:
            (staging / "new").write_text("half")
            raise RuntimeError("half way")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    assert sorted(p.name for p in (tmp_path / "model").iterdir()) == sorted([MARKER, "old"])


def _refuse_umask(mask: int) -> int:
    raise AssertionError("os.umask was called: setting the mask, even back again, changes it for every thread")


def test_the_umask_is_read_without_being_set(tmp_path, monkeypatch):
    from internvl_course.fileio import atomic_directory

    previous = os.umask(0o027)
    try:
        monkeypatch.setattr(os, "umask", _refuse_umask)
        target = atomic_write_text(tmp_path / "config.json", "{}")
        with atomic_directory(tmp_path / "model") as staging:
            (staging / "weights").write_bytes(b"x")
    finally:
        monkeypatch.undo()
        os.umask(previous)
    assert target.stat().st_mode & 0o777 == 0o640
    assert (tmp_path / "model").stat().st_mode & 0o777 == 0o750
    assert (tmp_path / "model" / "weights").stat().st_mode & 0o777 == 0o640


def test_the_umask_is_read_without_proc_too(tmp_path, monkeypatch):
    """Where /proc/self/status is missing (macOS, a sandbox), a child shell reports the mask."""
    from internvl_course import fileio

    previous = os.umask(0o027)
    try:
        monkeypatch.setattr(os, "umask", _refuse_umask)
        monkeypatch.setattr(fileio, "PROC_STATUS", tmp_path / "no-proc" / "status")
        assert fileio.current_umask() == 0o027
    finally:
        monkeypatch.undo()
        os.umask(previous)
