"""The activation cache format: writer, reader, verification (hand-made tensors, no model)."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch
from typer.testing import CliRunner

from abstopk.data.cache import (
    ActivationCache,
    CacheError,
    CacheWriter,
    find_caches,
    shard_name,
)

D = 6


def _header(layer: int = 3, dtype: str = "float32", **kw) -> dict:
    h = {"model": "toy", "model_revision": "abc", "layer": layer, "site": "resid_post",
         "hook_name": f"blocks.{layer}.hook_resid_post", "d_in": D, "dtype": dtype,
         "context_size": 4, "keep_bos": False, "corpus": {"name": "toy", "split": "train"},
         "requested_tokens": 9, "batch_size": 2}
    h.update(kw)
    return h


def _rows(n: int, start: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Row r is [r + 0.5, r + 0.25, ...] (exact in every dtype) and token id 100 + r."""
    r = torch.arange(start, start + n, dtype=torch.float32)[:, None]
    acts = r + torch.tensor([0.5, 0.25, -1.0, 2.0, 0.0, -0.5])
    return acts, 100 + torch.arange(start, start + n)


def _make(path, dtype="float32", sizes=(4, 3, 2)):
    w = CacheWriter(path, _header(dtype=dtype))
    start = 0
    for n in sizes:
        a, t = _rows(n, start)
        w.write_shard(a, t, contexts=1)
        start += n
    w.set(complete=True)
    return w


def test_write_then_read(tmp_path):
    _make(tmp_path / "c")
    c = ActivationCache(tmp_path / "c")
    assert (c.d_in, c.dtype, c.total_rows, len(c), c.layer, c.site) == (D, "float32", 9, 9, 3,
                                                                        "resid_post")
    assert [s["file"] for s in c.shards] == [shard_name(i) for i in range(3)]
    assert [s["rows"] for s in c.shards] == [4, 3, 2]
    assert c.manifest["contexts_consumed"] == 3 and c.complete
    for s in c.shards:   # the recorded hash is the hash of the file's bytes
        assert s["sha256"] == hashlib.sha256((c.path / s["file"]).read_bytes()).hexdigest()
    acts = torch.cat([c.open_shard(i)["activations"].rows(0, s["rows"])
                      for i, s in enumerate(c.shards)])
    toks = torch.cat([c.open_shard(i)["token_ids"].rows(0, s["rows"])
                      for i, s in enumerate(c.shards)])
    a_ref, t_ref = _rows(9)
    assert torch.equal(acts, a_ref) and torch.equal(toks, t_ref) and toks.dtype == torch.int64
    assert c.verify() == []
    assert c.identity().startswith("toy/L3/resid_post@") and len(c.identity().split("@")[1]) == 12


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_dtypes(tmp_path, dtype):
    _make(tmp_path / "c", dtype=dtype)
    c = ActivationCache(tmp_path / "c")
    got = c.open_shard(1)["activations"].rows(0, 3)
    assert got.dtype == torch.float32 and torch.equal(got, _rows(3, 4)[0])  # exact values
    assert c.verify() == []


def test_identity_depends_on_content_only(tmp_path):
    _make(tmp_path / "a")
    _make(tmp_path / "b")
    w = CacheWriter(tmp_path / "c", _header())
    a, t = _rows(4)
    a[2, 1] += 1.0
    w.write_shard(a, t, 1)
    ids = [ActivationCache(tmp_path / x).identity() for x in "abc"]
    assert ids[0] == ids[1] != ids[2]


def test_verify_names_the_broken_shard(tmp_path):
    _make(tmp_path / "c")
    c = ActivationCache(tmp_path / "c")
    p1 = c.shard_path(1)
    data = bytearray(p1.read_bytes())
    data[-5] ^= 0x01                                 # one flipped bit in the activations
    p1.write_bytes(bytes(data))
    problems = c.verify()
    assert len(problems) == 1
    assert problems[0].startswith("shard_000001.safetensors: sha256 mismatch")
    assert c.verify(checksums=False) == []           # shapes and sizes still fine

    p2 = c.shard_path(2)
    p2.write_bytes(p2.read_bytes()[:-8])             # truncated file
    assert any(p.startswith("shard_000002.safetensors: file is") for p in c.verify())
    c.shard_path(0).unlink()
    assert "shard_000000.safetensors: missing file" in c.verify()


def test_verify_checks_rows_and_totals(tmp_path):
    _make(tmp_path / "c")
    mp = tmp_path / "c" / "manifest.json"
    m = json.loads(mp.read_text())
    m["shards"][0]["rows"] = 5
    mp.write_text(json.dumps(m))
    problems = ActivationCache(tmp_path / "c").verify(checksums=False)
    assert any(p.startswith("shard_000000.safetensors: activations are F32 [4, 6]")
               for p in problems)
    assert any("total_rows is 9 but the shards hold 10" in p for p in problems)


def test_bad_folders_give_clear_errors(tmp_path):
    with pytest.raises(CacheError, match="no such cache folder"):
        ActivationCache(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CacheError, match="no manifest.json"):
        ActivationCache(tmp_path / "empty")
    (tmp_path / "empty" / "manifest.json").write_text("{not json")
    with pytest.raises(CacheError, match="invalid JSON"):
        ActivationCache(tmp_path / "empty")
    (tmp_path / "empty" / "manifest.json").write_text('{"format": "other"}')
    with pytest.raises(CacheError, match="not an abstopk activation cache"):
        ActivationCache(tmp_path / "empty")


def test_writer_resume_rules(tmp_path):
    w = CacheWriter(tmp_path / "c", _header())
    w.write_shard(*_rows(4), contexts=2)
    (tmp_path / "c" / ".shard_000001.safetensors.x1y2.tmp").write_bytes(b"partial")
    w2 = CacheWriter(tmp_path / "c", _header(requested_tokens=20))  # may change
    assert w2.resumed and w2.total_rows == 4 and w2.contexts_consumed == 2
    assert not list((tmp_path / "c").glob(".*.tmp"))                 # leftovers removed
    with pytest.raises(CacheError, match="dtype differs"):
        CacheWriter(tmp_path / "c", _header(dtype="float16"))
    w3 = CacheWriter(tmp_path / "c", _header(dtype="float16"), resume=False)  # starts over
    assert not w3.resumed and w3.total_rows == 0
    assert not list((tmp_path / "c").glob("shard_*"))


def test_rollback_to_shard_boundary(tmp_path):
    w = CacheWriter(tmp_path / "c", _header())
    for i, n in enumerate((4, 3, 2)):
        w.write_shard(*_rows(n, i * 4), contexts=2)
    w.rollback_to(4)
    c = ActivationCache(tmp_path / "c")
    assert (c.total_rows, c.manifest["contexts_consumed"], len(c.shards)) == (7, 4, 2)
    with pytest.raises(CacheError, match="cannot roll back"):
        w.rollback_to(3)


def test_find_caches_and_cli(tmp_path):
    for L in (10, 2):
        w = CacheWriter(tmp_path / "multi" / f"layer_{L}", _header(layer=L))
        w.write_shard(*_rows(3), contexts=1)
        w.set(complete=True, requested_tokens=3)
    assert [p.name for p in find_caches(tmp_path / "multi")] == ["layer_2", "layer_10"]
    with pytest.raises(CacheError, match="per-layer caches: layer_2, layer_10"):
        ActivationCache(tmp_path / "multi")

    from abstopk.cli import _register, app

    _register()
    runner = CliRunner()
    r = runner.invoke(app, ["cache", "verify", str(tmp_path / "multi"), "--no-progress"])
    assert r.exit_code == 0, r.output
    assert r.output.count(": OK, 1 shards, 3 rows x 6 float32, complete") == 2
    r = runner.invoke(app, ["cache", "info", str(tmp_path / "multi" / "layer_2"), "--json"])
    info = json.loads(r.output)
    assert info["layer"] == 2 and info["total_rows"] == 3 and info["identity"].startswith("toy/")
