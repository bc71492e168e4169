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
