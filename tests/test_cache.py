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


# ------------------------------------------------------------------ format version 2
def _make_v2(path, sizes=((4, 0), (3, 1), (2, 2))):
    """Shards of (rows, first context): context c has rows at positions 1..n (BOS at 0 is not a
    row); rows of one context may continue into the next shard."""
    w = CacheWriter(path, _header())
    start, ctx_of, pos_of = 0, [], []
    for c, n in ((0, 3), (1, 4), (2, 2)):                       # 9 rows in 3 contexts
        ctx_of += [c] * n
        pos_of += list(range(1, n + 1))
    for n, _ in sizes:
        a, t = _rows(n, start)
        w.write_shard(a, t, contexts=1, context_ids=torch.tensor(ctx_of[start:start + n]),
                      positions=torch.tensor(pos_of[start:start + n]),
                      mix={"austen": n - 1, "linux-doc": 1})
        start += n
    w.set(complete=True)
    return ctx_of, pos_of


def test_v2_rows_with_context_and_token_context(tmp_path):
    ctx_of, pos_of = _make_v2(tmp_path / "c")
    c = ActivationCache(tmp_path / "c")
    assert c.version == 2 and c.has_positions and c.verify() == []
    assert c.token_mix == {"austen": 6, "linux-doc": 3}
    assert c.summary()["token_mix"] == {"austen": 6, "linux-doc": 3}
    got = c.rows_with_context(2, 8)                              # spans all three shards
    assert got["token_ids"].tolist() == list(range(102, 108))
    assert got["context_ids"].tolist() == ctx_of[2:8] and got["context_ids"].dtype == torch.int64
    assert got["positions"].tolist() == pos_of[2:8] and got["positions"].dtype == torch.int32
    assert c.rows_with_context(7, 100)["token_ids"].tolist() == [107, 108]   # clipped
    # row 4 = context 1, position 2; its context is rows 3..6 (token ids 103..106)
    tc = c.token_context(4, window=8)
    assert (tc.token_ids, tc.positions, tc.focus, tc.context_id) == \
        ([103, 104, 105, 106], [1, 2, 3, 4], 1, 1)
    tc = c.token_context(4, window=1)
    assert (tc.token_ids, tc.focus) == ([103, 104, 105], 1)
    tc = c.token_context(0, window=2)
    assert (tc.token_ids, tc.positions, tc.focus) == ([100, 101, 102], [1, 2, 3], 0)
    with pytest.raises(IndexError):
        c.token_context(9)


def test_v1_cache_reads_but_has_no_contexts(tmp_path):
    _make(tmp_path / "c")                          # shards without context ids: version 1
    c = ActivationCache(tmp_path / "c")
    assert c.version == 1 and not c.has_positions and c.token_mix is None
    assert c.open_shard(0)["activations"].rows(0, 4).shape == (4, D)   # still readable
    for call in (lambda: c.token_context(0), lambda: c.rows_with_context(0, 3)):
        with pytest.raises(CacheError, match="harvested before per-row positions were "
                                             "recorded .*harvest it again"):
            call()
    # shards with positions cannot be appended to a version-1 cache
    w = CacheWriter(tmp_path / "c", _header())
    with pytest.raises(ValueError, match="every shard"):
        w.write_shard(*_rows(1, 9), 1, context_ids=torch.zeros(1), positions=torch.ones(1))


def test_v2_writer_rules_and_verify(tmp_path):
    w = CacheWriter(tmp_path / "c", _header())
    a, t = _rows(3)
    with pytest.raises(ValueError, match="go together"):
        w.write_shard(a, t, 1, context_ids=torch.zeros(3))
    with pytest.raises(ValueError, match="positions has shape"):
        w.write_shard(a, t, 1, context_ids=torch.zeros(3), positions=torch.zeros(2))
    w.write_shard(a, t, 1, context_ids=torch.zeros(3), positions=torch.arange(3),
                  mix={"x": 3})
    with pytest.raises(ValueError, match="every shard"):
        w.write_shard(*_rows(2, 3), 1)
    w.write_shard(*_rows(2, 3), 1, context_ids=torch.ones(2), positions=torch.arange(2),
                  mix={"x": 1, "y": 1})
    assert w.manifest["token_mix"] == {"x": 4, "y": 1}
    w.rollback_to(1)
    assert w.manifest["token_mix"] == {"x": 3}
    # a version-2 manifest over a shard without positions: verify names it
    m = json.loads((tmp_path / "c" / "manifest.json").read_text())
    _make(tmp_path / "v1")
    (tmp_path / "c" / "shard_000000.safetensors").write_bytes(
        (tmp_path / "v1" / "shard_000002.safetensors").read_bytes())        # 2 rows, v1
    m["shards"][0]["rows"] = 2
    m["total_rows"] = 2
    (tmp_path / "c" / "manifest.json").write_text(json.dumps(m))
    problems = ActivationCache(tmp_path / "c").verify(checksums=False)
    assert any("context_ids is missing, format version 2 needs I64 [2]" in p for p in problems)
