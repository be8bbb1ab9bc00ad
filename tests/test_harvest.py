"""Harvesting the real embedded model (SmolLM2-135M) on the real embedded corpus, small sizes:
exactness against a plain full forward, exact row counts, kill + resume, verification."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from abstopk.data.cache import ActivationCache, CacheError
from abstopk.data.harvest import HarvestConfig, harvest
from abstopk.data.tokens import iter_contexts
from abstopk.errors import UserError

CTX, BATCH = 32, 2
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _run(lm, out, **kw):
    model, tok, info = lm
    cfg = HarvestConfig(out=str(out), context_size=CTX, batch_size=BATCH, progress=False,
                        **{"layers": [3], "tokens": 150, "shard_rows": 40, **kw})
    return harvest(cfg, model=model, tokenizer=tok, info=info, log=lambda s: None)


def _read(path) -> tuple[torch.Tensor, torch.Tensor]:
    c = ActivationCache(path)
    acts = [c.open_shard(i)["activations"].rows(0, s["rows"]) for i, s in enumerate(c.shards)]
    toks = [c.open_shard(i)["token_ids"].rows(0, s["rows"]) for i, s in enumerate(c.shards)]
    return torch.cat(acts), torch.cat(toks)


@pytest.fixture(scope="module")
def hidden(lm):
    """(ids [2, CTX], hidden_states) of a plain full forward with output_hidden_states, batch
    by batch over the same packed contexts as the harvest (enough for 160 rows)."""
    model, tok, _ = lm
    out, n = [], 0
    it = iter_contexts(tok, "embedded", "train", CTX, prepend_bos=True)
    while n < 160:
        ids = torch.stack([next(it) for _ in range(BATCH)])
        with torch.no_grad():
            hs = model(input_ids=ids, output_hidden_states=True, use_cache=False).hidden_states
        out.append((ids, hs))
        n += int((ids != tok.bos_token_id).sum())
    return out


def _reference(lm, hidden, n_rows: int, layer: int, keep_bos: bool = False):
    """Expected rows: hidden_states[L + 1] (the output of block L, for a middle layer) at the
    non-BOS positions (all positions with keep_bos), in stream order, cut at n_rows."""
    acts, toks = [], []
    for ids, hs in hidden:
        keep = torch.ones_like(ids, dtype=torch.bool) if keep_bos else ids != lm[1].bos_token_id
        acts.append(hs[layer + 1][keep])
        toks.append(ids[keep])
    acts, toks = torch.cat(acts), torch.cat(toks)
    assert len(toks) >= n_rows
    return acts[:n_rows], toks[:n_rows]


def test_harvest_equals_full_forward_hidden_states(lm, hidden, tmp_path):
    res = _run(lm, tmp_path / "c")
    c = ActivationCache(tmp_path / "c")
    m = c.manifest
    assert res.total_rows == c.total_rows == 150 and m["requested_tokens"] == 150
    assert m["complete"] and not m["corpus_exhausted"]
    assert (m["layer"], m["site"], m["hook_name"], m["d_in"], m["dtype"]) == \
        (3, "resid_post", "blocks.3.hook_resid_post", 576, "float32")
    assert m["model"] == "smollm2-135m" and m["model_revision"] == lm[2].revision
    assert m["context_size"] == CTX and m["keep_bos"] is False
    assert m["corpus"]["kind"] == "embedded" and m["corpus"]["split"] == "train"
    # shards hold whole contexts (one batch of 2 contexts ≥ 40 rows each) and exactly 150 rows
    assert all(s["contexts"] == BATCH for s in c.shards)
    assert m["contexts_consumed"] == BATCH * len(c.shards)
    assert sum(s["rows"] for s in c.shards) == 150
    acts, toks = _read(tmp_path / "c")
    ref_acts, ref_toks = _reference(lm, hidden, 150, 3)
    assert torch.equal(toks, ref_toks) and (toks != lm[1].bos_token_id).all()
    assert torch.equal(acts, ref_acts)                               # bit for bit in fp32
    assert c.verify() == []


def test_float16_and_keep_bos(lm, hidden, tmp_path):
    _run(lm, tmp_path / "c", dtype="float16", keep_bos=True, tokens=100)
    c = ActivationCache(tmp_path / "c")
    assert c.dtype == "float16" and c.manifest["keep_bos"] is True
    assert c.open_shard(0)["activations"].array.dtype.name == "float16"
    acts, toks = _read(tmp_path / "c")
    ref_acts, ref_toks = _reference(lm, hidden, 100, 3, keep_bos=True)
    # every position of a context is a row, the BOS ones included
    assert c.rows_with_context(0, CTX)["positions"].tolist() == list(range(CTX))
    assert int((toks == lm[1].bos_token_id).sum()) == int((ref_toks == lm[1].bos_token_id).sum())
    assert torch.equal(toks, ref_toks)
    assert torch.equal(acts, ref_acts.half().float())


def test_multi_layer_single_pass_and_resync_after_kill(lm, hidden, tmp_path):
    _run(lm, tmp_path / "m", layers=[2, 4], tokens=120)
    for L in (2, 4):
        acts, toks = _read(tmp_path / "m" / f"layer_{L}")
        ref_acts, ref_toks = _reference(lm, hidden, 120, L)
        assert torch.equal(acts, ref_acts) and torch.equal(toks, ref_toks)
    ident = {L: ActivationCache(tmp_path / "m" / f"layer_{L}").identity() for L in (2, 4)}
    # a kill between the two manifest updates: layer_4 lacks the last shard, neither complete
    for L in (2, 4):
        mp = tmp_path / "m" / f"layer_{L}" / "manifest.json"
        m = json.loads(mp.read_text())
        if L == 4:
            s = m["shards"].pop()
            m["total_rows"] -= s["rows"]
            m["contexts_consumed"] -= s["contexts"]
        m["complete"] = False
        mp.write_text(json.dumps(m))
    res = _run(lm, tmp_path / "m", layers=[2, 4], tokens=120)
    assert res.resumed and 0 < res.new_rows < 120
    for L in (2, 4):
        c = ActivationCache(tmp_path / "m" / f"layer_{L}")
        assert c.identity() == ident[L] and c.complete and c.verify() == []


def test_resume_over_orphan_shard_and_temp_file(lm, tmp_path):
    _run(lm, tmp_path / "ref")
    ident = ActivationCache(tmp_path / "ref").identity()
    shutil.copytree(tmp_path / "ref", tmp_path / "c")
    mp = tmp_path / "c" / "manifest.json"
    m = json.loads(mp.read_text())
    for _ in range(2):      # killed after renaming shards but before recording them
        s = m["shards"].pop()
        m["total_rows"] -= s["rows"]
        m["contexts_consumed"] -= s["contexts"]
    m["complete"] = False
    mp.write_text(json.dumps(m))
    (tmp_path / "c" / ".shard_000003.safetensors.abc123.tmp").write_bytes(b"half a shard")
    res = _run(lm, tmp_path / "c")
    c = ActivationCache(tmp_path / "c")
    assert res.resumed and c.identity() == ident and c.verify() == []
    assert not list((tmp_path / "c").glob(".*.tmp"))
    # rerunning a complete cache does nothing; other settings are refused
    assert _run(lm, tmp_path / "c").new_rows == 0
    with pytest.raises(CacheError, match="dtype differs"):
        _run(lm, tmp_path / "c", dtype="float16")
    with pytest.raises(UserError, match="complete cache of 150 rows"):
        _run(lm, tmp_path / "c", tokens=200)


def _cli(*args):
    return [sys.executable, "-m", "abstopk.cli", *args]


def test_sigkill_midway_then_resume(lm, tmp_path, capfd):
    """Kill -9 a CLI harvest after its first shard; rerun: identical to an uninterrupted one."""
    out = tmp_path / "killed"
    args = ["harvest", "--model", "smollm2-135m", "--layer", "3", "--tokens", "400",
            "--context-size", str(CTX), "--batch-size", str(BATCH), "--shard-rows", "60",
            "--out", str(out), "--no-progress"]
    env = {**ENV, "ABSTOPK_HARVEST_DELAY_S": "0.5"}     # slow it down so the kill lands midway
    proc = subprocess.Popen(_cli(*args), env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    mp = out / "manifest.json"
    deadline = time.monotonic() + 150
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if json.loads(mp.read_text())["shards"]:
                    break
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(0.05)
        assert proc.poll() is None, proc.communicate()[1].decode()[-2000:]
        proc.send_signal(signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    killed = json.loads(mp.read_text())
    assert proc.returncode == -signal.SIGKILL
    assert not killed["complete"] and 0 < killed["total_rows"] < 400

    # rerun the same command (in this process: the model loads faster here)
    rc, _, err = _main(capfd, *args)
    assert rc == 0, err[-2000:]
    assert "resuming" in err

    _run(lm, tmp_path / "straight", tokens=400, shard_rows=60)
    a, b = ActivationCache(out), ActivationCache(tmp_path / "straight")
    assert a.total_rows == b.total_rows == 400 and a.complete
    assert [s["sha256"] for s in a.shards] == [s["sha256"] for s in b.shards]
    acts_a, toks_a = _read(out)
    acts_b, toks_b = _read(tmp_path / "straight")
    assert torch.equal(acts_a, acts_b) and torch.equal(toks_a, toks_b)   # each row once
    rc, stdout, _ = _main(capfd, "cache", "verify", str(out), "--no-progress")
    assert rc == 0 and ": OK, " in stdout


def _main(capfd, *args) -> tuple[int, str, str]:
    """Run the ``abstopk`` entry point in-process: (exit code, stdout, stderr)."""
    from abstopk.cli import main

    capfd.readouterr()
    try:
        main(list(args))
        code = 0
    except SystemExit as e:
        code = int(e.code or 0)
    out, err = capfd.readouterr()
    return code, out, err


def test_cache_verify_reports_a_corrupted_shard(lm, tmp_path, capfd):
    _run(lm, tmp_path / "c")
    p = tmp_path / "c" / "shard_000002.safetensors"
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 0x10
    p.write_bytes(bytes(data))
    rc, _, err = _main(capfd, "cache", "verify", str(tmp_path / "c"), "--no-progress")
    assert rc == 1
    assert "shard_000002.safetensors: sha256 mismatch" in err
    assert "shard_000001" not in err and "FAILED, 1 problem(s)" in err


def test_cli_errors_are_one_line(tmp_path, capfd):
    rc, _, err = _main(capfd, "harvest", "--model", str(tmp_path / "nope.gguf"), "--out",
                       str(tmp_path / "c"))
    assert rc == 2 and err.startswith("error: ") and "no such file" in err
    assert len(err.strip().splitlines()) == 1
    rc, _, err = _main(capfd, "cache", "verify", str(tmp_path))
    assert rc == 2 and "no manifest.json" in err


def test_layer_out_of_range(lm, tmp_path):
    with pytest.raises(UserError, match="has 30 blocks"):
        _run(lm, tmp_path / "c", layers=[30])
    assert not Path(tmp_path / "c").exists()


def test_local_text_file_until_the_corpus_runs_out(lm, tmp_path, capfd):
    """A local .txt source (documents = paragraphs); asking for more rows than it holds
    harvests all of it, marks the cache complete + corpus_exhausted, and says so."""
    text = "\n\n".join(TEXT_PARAGRAPHS * 3)
    (tmp_path / "t.txt").write_text(text)
    model, tok, _ = lm
    n_ctx = len(list(iter_contexts(tok, str(tmp_path / "t.txt"), "all", CTX)))
    assert n_ctx >= 2
    rc, _, err = _main(capfd, "harvest", "--corpus", str(tmp_path / "t.txt"), "--split", "train",
                       "--layer", "1", "--tokens", "100000", "--context-size", str(CTX),
                       "--batch-size", "3", "--out", str(tmp_path / "c"), "--no-progress")
    assert rc == 0, err
    assert "the corpus ran out" in err
    c = ActivationCache(tmp_path / "c")
    assert c.complete and c.manifest["corpus_exhausted"] and c.verify() == []
    assert c.manifest["corpus"]["kind"] == "txt"
    n_train = len(list(iter_contexts(tok, str(tmp_path / "t.txt"), "train", CTX)))
    assert c.manifest["contexts_consumed"] == n_train
    assert c.total_rows == n_train * CTX - int(
        sum((x == tok.bos_token_id).sum() for x in
            iter_contexts(tok, str(tmp_path / "t.txt"), "train", CTX)))


TEXT_PARAGRAPHS = [
    "Emma Woodhouse, handsome, clever, and rich, with a comfortable home and happy "
    "disposition, seemed to unite some of the best blessings of existence.",
    "The real evils, indeed, of Emma's situation were the power of having rather too much "
    "her own way, and a disposition to think a little too well of herself.",
    "Sorrow came, a gentle sorrow, but not at all in the shape of any disagreeable "
    "consciousness. Miss Taylor married.",
    "The event had every promise of happiness for her friend. Mr. Weston was a man of "
    "unexceptionable character, easy fortune, suitable age, and pleasant manners.",
]


def test_v2_rows_record_context_position_and_source(lm, tmp_path):
    """Each row's (context id, position) points at its token in the packed context, rebuilt
    here independently: documents in the seeded order, [BOS] doc [BOS] doc ... cut every CTX
    tokens, window 0 of 1024 contexts permuted by default_rng([seed, 1, 0]). The manifest's
    token_mix counts the rows of each corpus part."""
    import numpy as np

    from abstopk.data.text import iter_documents

    _, tok, _ = lm
    _run(lm, tmp_path / "c", tokens=150, shard_rows=40)
    c = ActivationCache(tmp_path / "c")
    assert c.version == 2 and c.has_positions and c.seed == 0 and c.verify() == []
    got = c.rows_with_context(0, c.total_rows)
    cids, pos, toks = got["context_ids"], got["positions"].long(), got["token_ids"]
    assert len(toks) == 150 and torch.equal(toks, _read(tmp_path / "c")[1])
    assert (cids[1:] >= cids[:-1]).all()                       # rows of a context consecutive
    same = cids[1:] == cids[:-1]
    assert (pos[1:][same] > pos[:-1][same]).all()              # positions increasing
    # the last batch may end in contexts that gave no row (the count was reached before them)
    assert 0 <= c.manifest["contexts_consumed"] - (int(cids.max()) + 1) < BATCH

    bos = tok.bos_token_id
    stream, labels = [], []
    for text, label in iter_documents("embedded", "train", seed=0):
        ids = [bos] + tok(text, add_special_tokens=False)["input_ids"]
        stream += ids
        labels += [label] * len(ids)
        if len(stream) >= 1024 * CTX:
            break
    perm = np.random.default_rng([0, 1, 0]).permutation(1024)
    mix: dict[str, int] = {}
    for cid in cids.unique().tolist():
        start = int(perm[cid]) * CTX
        ctx = torch.tensor(stream[start:start + CTX])
        rows = cids == cid
        assert torch.equal(toks[rows], ctx[pos[rows]])        # the token at its position
        if cid < int(cids.max()):                              # whole contexts: every non-BOS
            assert pos[rows].tolist() == [p for p in range(CTX) if ctx[p] != bos]
        for p in pos[rows].tolist():
            mix[labels[start + p]] = mix.get(labels[start + p], 0) + 1
    assert c.token_mix == dict(sorted(mix.items())) and sum(mix.values()) == 150
    ctx_row = c.token_context(60, window=3)
    assert ctx_row.token_ids[ctx_row.focus] == int(toks[60])
    assert len(ctx_row.token_ids) <= 7 and ctx_row.context_id == int(cids[60])


def test_resuming_a_version_1_cache_is_refused(lm, tmp_path):
    _run(lm, tmp_path / "c", tokens=60, shard_rows=40)
    mp = tmp_path / "c" / "manifest.json"
    m = json.loads(mp.read_text())
    m.update(version=1, complete=False)
    mp.write_text(json.dumps(m))
    with pytest.raises(CacheError, match="harvested before per-row positions were recorded"):
        _run(lm, tmp_path / "c", tokens=60, shard_rows=40)
