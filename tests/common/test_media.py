"""Atomic writes: the whole new file or the old one, with ordinary permissions."""

from __future__ import annotations

import os
import stat

import pytest

from framecast.common.media import atomic_write


def test_atomic_write_replaces_and_leaves_no_temporary_file(tmp_path):
    path = tmp_path / "out" / "result.mp4"
    atomic_write(path, b"first")
    atomic_write(path, b"second")
    assert path.read_bytes() == b"second"
    assert sorted(p.name for p in path.parent.iterdir()) == ["result.mp4"]


def test_atomic_write_gives_the_permissions_of_the_umask(tmp_path):
    previous = os.umask(0o027)
    try:
        atomic_write(tmp_path / "a.bin", b"x")
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "a.bin").stat().st_mode) == 0o640  # 0o666 & ~0o027, not mkstemp's 0o600


def test_failed_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "record.json"
    atomic_write(path, b"old")

    class Unwritable:  # fails inside the write, after the temporary file exists
        def __len__(self):
            return 3

    with pytest.raises(TypeError):
        atomic_write(path, Unwritable())
    assert path.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["record.json"]
