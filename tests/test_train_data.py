"""Batch sources of the data layer: matrix files (memory-mapped), tensors, iterables, positions,
prefetch, and the one safetensors reader they go through."""

from __future__ import annotations

import itertools
import json
import struct

import numpy as np
import pytest
import torch

from abstopk.data.matrix import MatrixSource, load_matrix, scan_nonfinite
from abstopk.data.open import open_source
from abstopk.data.prefetch import PrefetchSource
from abstopk.data.sources import BatchSource, IterableSource
from abstopk.errors import NonFiniteError
from abstopk.files import mmap_tensor, safetensors_header


def _take(it, n):
    return [next(it) for _ in range(n)]


def test_matrix_source_epochs_cover_every_row_once_and_are_seeded():
    x = torch.arange(40 * 3, dtype=torch.float32).reshape(40, 3)  # row i starts with 3i
    src = MatrixSource(x, batch_size=8, seed=5)
    assert isinstance(src, BatchSource) and src.d_in == 3 and src.batches_per_epoch == 5
    it = iter(src)
    epoch0 = torch.cat(_take(it, 5))
    epoch1 = torch.cat(_take(it, 5))
    for ep in (epoch0, epoch1):
        rows = sorted((ep[:, 0] / 3).long().tolist())
        assert rows == list(range(40))  # each row exactly once per epoch
        assert ep.dtype == torch.float32 and ep.shape == (40, 3)
        assert torch.equal(ep[:, 1], ep[:, 0] + 1)  # rows served intact
    assert not torch.equal(epoch0, epoch1)  # a new order each epoch
    assert (src.state_dict()["epoch"], src.state_dict()["batch"]) == (1, 5)  # end of epoch 1
    again = torch.cat(_take(iter(MatrixSource(x, 8, seed=5)), 5))
    other = torch.cat(_take(iter(MatrixSource(x, 8, seed=6)), 5))
    assert torch.equal(again, epoch0) and not torch.equal(other, epoch0)


def test_matrix_source_state_dict_continues_exactly():
    x = torch.randn(50, 4)
    ref = MatrixSource(x, 7, seed=1)
    it = iter(ref)
    first = _take(it, 9)  # crosses the epoch boundary (7 batches per epoch)
    state = json.loads(json.dumps(ref.state_dict()))  # JSON-serialisable
    rest = _take(it, 6)
    fresh = MatrixSource(x, 7, seed=1)
    fresh.load_state_dict(state)
    again = _take(iter(fresh), 6)
    assert all(torch.equal(a, b) for a, b in zip(rest, again, strict=True))
    assert state == {"kind": "matrix", "epoch": 1, "batch": 2, "seed": 1, "n_rows": 50,
                     "batch_size": 7}
    assert len(first) == 9
    with pytest.raises(ValueError, match="batch_size"):
        MatrixSource(x, 5, seed=1).load_state_dict(state)


def test_npy_is_memory_mapped_and_read_correctly(tmp_path):
    a = np.random.default_rng(0).normal(size=(30, 6)).astype(np.float16)
    np.save(tmp_path / "a.npy", a)
    m = load_matrix(tmp_path / "a.npy")
    assert isinstance(m, np.memmap)
    src = open_source(tmp_path / "a.npy", batch_size=30, seed=0)
    b = next(iter(src))
    assert b.dtype == torch.float32
    # one batch of the full size holds every row (sorted order inside a batch)
    assert torch.equal(b, torch.from_numpy(a.astype(np.float32)))


def test_safetensors_header_and_memmap_match_safetensors_loader(tmp_path):
    from safetensors.torch import load_file, save_file

    g = torch.Generator().manual_seed(0)
    tensors = {
        "f32": torch.randn(9, 5, generator=g),
        "bf16": torch.randn(7, 4, generator=g).to(torch.bfloat16),
        "f16": torch.randn(3, 2, generator=g).to(torch.float16),
    }
    path = tmp_path / "acts.safetensors"
    save_file(tensors, str(path))
    header, start = safetensors_header(path)
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    assert start == 8 + n and header["f32"]["shape"] == [9, 5] and header["bf16"]["dtype"] == "BF16"
    ref = load_file(str(path))
    for name in tensors:
        arr = mmap_tensor(path, name).array
        src = MatrixSource(arr, batch_size=arr.shape[0], shuffle=False)
        got = next(iter(src))
        assert torch.equal(got, ref[name].float()), name
    with pytest.raises(ValueError, match="holds 3 tensors"):
        mmap_tensor(path)
    with pytest.raises(ValueError, match="no tensor named"):
        mmap_tensor(path, "nope")
    single = tmp_path / "one.safetensors"
    save_file({"x": tensors["f32"]}, str(single))
    assert isinstance(load_matrix(single), np.memmap)


def test_bad_files_give_clear_errors(tmp_path):
    np.save(tmp_path / "cube.npy", np.zeros((2, 3, 4), np.float32))
    with pytest.raises(ValueError, match=r"expected a 2-D matrix \[N, d_in\], got shape \(2, 3, 4\)"):
        open_source(tmp_path / "cube.npy", 2)
    with pytest.raises(FileNotFoundError, match="no such file"):
        open_source(tmp_path / "missing.npy", 2)
    (tmp_path / "x.txt").write_text("1 2 3")
    with pytest.raises(ValueError, match="unsupported activation file type"):
        open_source(tmp_path / "x.txt", 2)
    (tmp_path / "junk.safetensors").write_bytes(b"\xff" * 4)
    with pytest.raises(ValueError, match="not a safetensors file"):
        open_source(tmp_path / "junk.safetensors", 2)
    (tmp_path / "folder").mkdir()
    with pytest.raises(ValueError, match="manifest.json"):
        open_source(tmp_path / "folder", 2)
    np.save(tmp_path / "small.npy", np.zeros((3, 4), np.float32))
    with pytest.raises(ValueError, match="fewer than one batch"):
        open_source(tmp_path / "small.npy", 8)


def test_nonfinite_rows_are_found_reported_and_skipped(tmp_path):
    a = np.random.default_rng(1).normal(size=(100, 5)).astype(np.float32)
    bad = [0, 17, 18, 99]
    a[0, 0] = np.nan
    a[17, 4] = np.inf
    a[18, 2] = -np.inf
    a[99, 1] = np.nan
    np.save(tmp_path / "a.npy", a)
    m = load_matrix(tmp_path / "a.npy")
    assert scan_nonfinite(m, chunk_rows=7).tolist() == bad  # chunk edges crossed
    assert scan_nonfinite(torch.from_numpy(a)).tolist() == bad
    with pytest.raises(NonFiniteError, match="4 of 100 rows hold NaN/Inf"):
        open_source(tmp_path / "a.npy", 8)
    src = open_source(tmp_path / "a.npy", 96, skip_nonfinite=True)
    assert src.n_nonfinite == 4 and src.n_rows == 96
    ep = next(iter(src))
    assert torch.isfinite(ep).all()
    good = np.delete(a, bad, axis=0)
    assert torch.equal(ep, torch.from_numpy(good))  # exactly the finite rows


def test_iterable_source_rebatches_and_resumes():
    chunks = [torch.arange(i * 10, (i + 1) * 10, dtype=torch.float64).reshape(5, 2)
              for i in range(4)]  # 20 rows of width 2, in chunks of 5
    src = IterableSource(chunks, batch_size=6)
    assert src.d_in == 2
    it = iter(src)
    got = _take(it, 3)  # 18 rows; the last 2 rows of the epoch are dropped
    flat = torch.cat(got)
    assert flat.dtype == torch.float32 and torch.equal(flat[:, 0], torch.arange(0, 36, 2.0))
    nxt = next(it)  # epoch 2 starts from the first row again
    assert torch.equal(nxt[:, 0], torch.arange(0, 12, 2.0))
    state = src.state_dict()
    assert state == {"kind": "iterable", "epoch": 1, "rows": 6}
    after = next(it)
    fresh = IterableSource(chunks, batch_size=6)
    fresh.load_state_dict(state)
    assert torch.equal(next(iter(fresh)), after)
    # a one-shot generator ends the source with a short final batch
    gen_src = IterableSource((c for c in chunks), batch_size=8)
    sizes = [b.shape[0] for b in gen_src]
    assert sizes == [8, 8, 4]
    with pytest.raises(NonFiniteError):
        next(iter(IterableSource([torch.tensor([[1.0, float("nan")]])], 1)))


def test_prefetch_source_reports_the_consumed_position():
    x = torch.randn(90, 3)
    ref = list(itertools.islice(iter(MatrixSource(x, 8, seed=2)), 25))
    pf = PrefetchSource(MatrixSource(x, 8, seed=2), depth=3)
    it = iter(pf)
    got = [next(it) for _ in range(10)]
    state = pf.state_dict()  # the producer is ahead; the position is the consumed one
    assert state["epoch"] * 11 + state["batch"] == 10
    del it  # closes the generator and stops the thread
    again = list(itertools.islice(iter(pf), 15))  # rewinds to the consumed position
    assert all(torch.equal(a, b) for a, b in zip(got + again, ref, strict=True))
    fresh = PrefetchSource(MatrixSource(x, 8, seed=2))
    fresh.load_state_dict(state)
    assert torch.equal(next(iter(fresh)), ref[10])


# ---------------------------------------------------------------------- the one reader
def test_one_reader_serves_every_user_the_same_arrays(tmp_path):
    from safetensors.torch import save_file

    from abstopk.files import BF16Array, mmap_safetensors, rows_as_float32

    g = torch.Generator().manual_seed(1)
    bf = torch.randn(6, 3, generator=g).to(torch.bfloat16)
    path = tmp_path / "t.safetensors"
    save_file({"bf16": bf, "ids": torch.arange(6), "empty": torch.zeros(0, 3)}, str(path))
    mapped = mmap_safetensors(path)
    assert isinstance(mapped["bf16"].array, BF16Array) and mapped["bf16"].shape == (6, 3)
    assert isinstance(mmap_tensor(path, "bf16").array, BF16Array)
    # bf16 rows: exact float32 through numpy (matrix source) and through torch (cache readers)
    assert np.array_equal(rows_as_float32(mapped["bf16"].array, [4, 1]), bf[[4, 1]].float().numpy())
    assert torch.equal(mapped["bf16"].take([4, 1]), bf[[4, 1]].float())
    assert torch.equal(mapped["bf16"].rows(0, 6, dtype=torch.bfloat16), bf)
    assert torch.equal(mapped["ids"].rows(2, 4), torch.tensor([2, 3]))
    assert mapped["empty"].shape == (0, 3)
    # a bf16 matrix file feeds a MatrixSource exactly
    one = tmp_path / "one.safetensors"
    save_file({"x": bf}, str(one))
    batch = next(iter(open_source(one, 6, seed=0)))  # all rows, in sorted order
    assert torch.equal(batch, bf.float())


def test_one_reader_validates_headers_and_entries(tmp_path):
    from safetensors.torch import save_file

    def write(name: str, header: object, data: bytes = b"") -> object:
        raw = header if isinstance(header, bytes) else json.dumps(header).encode()
        p = tmp_path / name
        p.write_bytes(struct.pack("<Q", len(raw)) + raw + data)
        return p

    entry = {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}
    (tmp_path / "long.safetensors").write_bytes(struct.pack("<Q", 999) + b"{}")
    with pytest.raises(ValueError, match="header length 999 > file size"):
        safetensors_header(tmp_path / "long.safetensors")
    (tmp_path / "huge.safetensors").write_bytes(struct.pack("<Q", 10**9) + b"{}")
    with pytest.raises(ValueError, match=r"not a safetensors file \(header length 1000000000\)"):
        safetensors_header(tmp_path / "huge.safetensors")
    with pytest.raises(ValueError, match="not a safetensors file"):
        safetensors_header(write("json.safetensors", b"{nope"))
    with pytest.raises(ValueError, match="not a JSON object"):
        safetensors_header(write("list.safetensors", [1, 2]))
    with pytest.raises(ValueError, match="lies outside the file"):
        mmap_tensor(write("short.safetensors", {"x": entry}, b"\0" * 8))
    with pytest.raises(ValueError, match="does not match its shape"):
        mmap_tensor(write("size.safetensors", {"x": {**entry, "shape": [3, 2]}}, b"\0" * 16))
    with pytest.raises(ValueError, match="unsupported dtype C64"):
        mmap_tensor(write("c64.safetensors", {"x": {**entry, "dtype": "C64"}}, b"\0" * 16))
    with pytest.raises(ValueError, match="malformed entry"):
        mmap_tensor(write("entry.safetensors", {"x": {"dtype": "F32"}}))
    assert mmap_tensor(write("ok.safetensors", {"x": entry}, b"\0" * 16)).rows(0, 2).shape == (2, 2)
    # a BOOL tensor maps, but is no activation matrix
    save_file({"m": torch.ones(3, 2, dtype=torch.bool)}, str(tmp_path / "b.safetensors"))
    assert mmap_tensor(tmp_path / "b.safetensors").array.dtype == np.bool_
    with pytest.raises(ValueError, match="unsupported dtype bool"):
        load_matrix(tmp_path / "b.safetensors")


# ---------------------------------------------------------------------- the one prefetcher
def test_prefetch_hands_on_errors_and_stops_its_thread():
    import threading

    from abstopk.data.prefetch import prefetch

    def items():
        for i in range(3):
            yield torch.full((2, 2), float(i)), i
        raise RuntimeError("disk gone")

    for depth in (0, 1, 4):
        got = []
        with pytest.raises(RuntimeError, match="disk gone"):
            for x, pos in prefetch(items(), depth):
                got.append((float(x[0, 0]), pos))
        assert got == [(0.0, 0), (1.0, 1), (2.0, 2)]  # every batch before the error, in order
    endless = prefetch(((torch.zeros(1), i) for i in itertools.count()), 2, name="t-prefetch")
    assert next(endless)[1] == 0
    assert any(t.name == "t-prefetch" for t in threading.enumerate())
    endless.close()
    assert not any(t.name == "t-prefetch" for t in threading.enumerate())
    finite = list(prefetch(((torch.zeros(1), i) for i in range(5)), 2))
    assert [p for _, p in finite] == list(range(5))  # a finite stream ends


def test_prefetch_source_error_reaches_the_consumer():
    class Failing(MatrixSource):
        def __iter__(self):
            it = super().__iter__()
            for _ in range(2):
                yield next(it)
            raise OSError("read error")

    pf = PrefetchSource(Failing(torch.randn(40, 3), 8), depth=3)
    it = iter(pf)
    next(it)
    next(it)
    with pytest.raises(OSError, match="read error"):
        next(it)
    assert pf.state_dict()["batch"] == 2  # the position of the last batch handed out


def test_layering_data_sources_do_not_import_train_and_train_reexports_them():
    import ast
    from pathlib import Path

    import abstopk.data as data_pkg
    import abstopk.train as train_pkg

    for f in Path(data_pkg.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom):
                mod = "." * node.level + (node.module or "")
                assert not mod.startswith(("..train", "abstopk.train")), f"{f.name}: {mod}"
    assert train_pkg.BatchSource is BatchSource and train_pkg.open_source is open_source
    assert train_pkg.MatrixSource is MatrixSource and train_pkg.IterableSource is IterableSource
