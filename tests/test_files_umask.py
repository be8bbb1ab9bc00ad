"""Atomic writes give the final file the mode a plain ``open()`` would: 0o666 & ~umask."""

from __future__ import annotations

import os
import stat

import pytest
import torch

from abstopk.files import atomic_save_safetensors, atomic_write_bytes, atomic_write_json


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_atomic_writes_honour_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        paths = [
            atomic_write_bytes(tmp_path / "a.bin", b"x"),
            atomic_write_json(tmp_path / "b.json", {"a": 1}),
            atomic_save_safetensors(tmp_path / "c.safetensors", {"t": torch.zeros(2)}),
        ]
        with open(tmp_path / "plain", "w") as f:
            f.write("x")
    finally:
        os.umask(old)
    want = 0o666 & ~umask
    assert stat.S_IMODE((tmp_path / "plain").stat().st_mode) == want
    for p in paths:
        assert stat.S_IMODE(p.stat().st_mode) == want, (p, oct(umask))
    # no temporary files are left behind
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin", "b.json", "c.safetensors",
                                                          "plain"]


def test_replacing_a_file_keeps_the_umask_mode(tmp_path):
    old = os.umask(0o027)
    try:
        atomic_write_bytes(tmp_path / "f", b"1")
        atomic_write_bytes(tmp_path / "f", b"2")
    finally:
        os.umask(old)
    assert (tmp_path / "f").read_bytes() == b"2"
    assert stat.S_IMODE((tmp_path / "f").stat().st_mode) == 0o640


def test_a_failed_write_leaves_nothing(tmp_path):
    from abstopk.files import atomic_write

    def boom(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(tmp_path / "f", boom)
    assert list(tmp_path.iterdir()) == []
