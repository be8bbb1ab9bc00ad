"""Skipping each context's first positions (the attention sink) in training and evaluation:
``CacheLoader(min_position=)``, ``DeviceCacheLoader``, ``open_source``, ``TrainConfig``,
``abstopk train --min-position`` and ``evaluate_reconstruction`` / ``abstopk eval``.

The cache: contexts of 10 rows whose positions start at 0 (rows planted with the value 1000,
the sink) or at 1 (BOS dropped, no sink row); column 0 of row r holds r.
"""

from __future__ import annotations

import itertools
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from abstopk.data.cache import ActivationCache, CacheWriter
from abstopk.data.device_loader import DeviceCacheLoader
from abstopk.data.loader import CacheLoader
from abstopk.data.open import open_source
from abstopk.errors import CacheError
from abstopk.eval.metrics import evaluate_reconstruction, iter_activation_batches
from abstopk.sae import SAE, SAEConfig
from abstopk.train.config import TrainConfig
from abstopk.train.trainer import Trainer

sys.path.insert(0, str(Path(__file__).parent))
from cli_runner import run_cli  # noqa: E402
from test_loader import write_cache as write_v1_cache  # noqa: E402

D_IN = 8
SHARDS = [300, 177, 411, 5, 250]  # uneven, N = 1143
N = sum(SHARDS)
CTX_ROWS = 10
SINK = 1000.0
KW = dict(buffer_mb=4 * 32 * D_IN * 4 / 2**20, chunk_rows=32)  # 4 chunks of 32 rows a group


def positions_of(n: int) -> np.ndarray:
    """Context c holds rows c·10 … c·10 + 9 at positions 0…9 (c % 3 ≠ 0) or 1…10."""
    r = np.arange(n)
    c = r // CTX_ROWS
    return (r % CTX_ROWS + (c % 3 == 0)).astype(np.int32)


def write_v2_cache(path: Path, shard_rows=SHARDS) -> Path:
    n = sum(shard_rows)
    pos = positions_of(n)
    r = torch.arange(n, dtype=torch.float64)
    acts = torch.sin(r[:, None] + torch.arange(D_IN)[None, :]).float()
    acts[torch.from_numpy(pos == 0), 1:] = SINK
    acts[:, 0] = r.float()
    w = CacheWriter(path, {
        "model": "toy", "model_revision": "x", "layer": 3, "site": "resid_post",
        "hook_name": "blocks.3.hook_resid_post", "d_in": D_IN, "dtype": "float32",
        "context_size": 16, "keep_bos": False, "corpus": {"name": "toy", "split": "train"},
        "requested_tokens": n, "batch_size": 1})
    a = 0
    for m in shard_rows:
        b = a + m
        w.write_shard(acts[a:b], torch.arange(a, b), contexts=1,
                      context_ids=torch.arange(a, b) // CTX_ROWS,
                      positions=torch.from_numpy(pos[a:b]))
        a = b
    w.set(complete=True)
    return path


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return write_v2_cache(tmp_path_factory.mktemp("minpos") / "cache")


SINK_ROWS = np.flatnonzero(positions_of(N) == 0)


def ids_of(batches) -> np.ndarray:
    return torch.cat([b[:, 0] for b in batches]).numpy().astype(np.int64)


def take(loader, n):
    return list(itertools.islice(iter(loader), n))


# ------------------------------------------------------------------ the loader
def test_the_fixture_plants_sinks_at_position_zero(cache):
    c = ActivationCache(cache)
    assert c.has_positions and len(SINK_ROWS) == 76 and c.total_rows == N
    got = c.rows_with_context(0, N)["positions"].numpy()
    assert (got == positions_of(N)).all()


@pytest.mark.parametrize("prefetch,readers,shuffle",
                         [(0, 1, True), (3, 2, True), (0, 1, False)])
def test_sinks_are_skipped_and_the_rest_keeps_its_order(cache, prefetch, readers, shuffle):
    B = 50  # no divisor of N or of N − 76: batches straddle epochs and groups
    base = CacheLoader(cache, B, seed=4, shuffle=shuffle, prefetch=prefetch, readers=readers,
                       **KW)
    skip = CacheLoader(cache, B, seed=4, shuffle=shuffle, prefetch=prefetch, readers=readers,
                       min_position=1, **KW)
    n_keep = N - len(SINK_ROWS)
    want = ids_of(take(base, -(-3 * N // B)))
    got_batches = take(skip, -(-2 * n_keep // B))
    assert all(b.shape == (B, D_IN) for b in got_batches)
    assert not any(bool((b[:, 1:] == SINK).any()) for b in got_batches)
    got = ids_of(got_batches)
    # today's order with the sink rows removed
    kept = want[~np.isin(want, SINK_ROWS)]
    assert (got == kept[:len(got)]).all()
    # every other row exactly once per epoch
    for e in range(2):
        epoch = got[e * n_keep:(e + 1) * n_keep]
        assert len(epoch) == n_keep
        assert (np.sort(epoch) == np.setdiff1d(np.arange(N), SINK_ROWS)).all()
    # the position counts the rows consumed, skipped ones included
    assert skip.position > len(got) and skip.epoch == 2
    assert skip.position == np.flatnonzero(~np.isin(want, SINK_ROWS))[len(got) - 1] + 1


def test_min_position_zero_changes_nothing(cache):
    a = CacheLoader(cache, 64, seed=1, **KW)
    b = CacheLoader(cache, 64, seed=1, min_position=0, **KW)
    assert a.identity == b.identity == ActivationCache(cache).identity()
    assert all(torch.equal(x, y) for x, y in zip(take(a, 30), take(b, 30), strict=True))
    assert a.state_dict()["min_position"] == 0


@pytest.mark.parametrize("stop", [1, 7, 23])
def test_resume_mid_epoch_gives_the_same_batches(cache, stop):
    B = 48
    ref = take(CacheLoader(cache, B, seed=2, min_position=1, **KW), stop + 12)
    first = CacheLoader(cache, B, seed=2, min_position=1, **KW)
    take(first, stop)
    state = json.loads(json.dumps(first.state_dict()))  # as a checkpoint stores it
    assert state["min_position"] == 1 and state["cache"].endswith("[positions>=1]")
    again = CacheLoader(cache, B, seed=2, min_position=1, **KW)
    again.load_state_dict(state)
    assert all(torch.equal(x, y) for x, y in zip(take(again, 12), ref[stop:], strict=True))


def test_state_of_another_min_position_is_refused(cache):
    plain = CacheLoader(cache, 32, seed=0, **KW)
    take(plain, 3)
    skip = CacheLoader(cache, 32, seed=0, min_position=1, **KW)
    with pytest.raises(ValueError, match="skipping context positions below 0; this loader "
                                         "skips those below 1"):
        skip.load_state_dict(plain.state_dict())
    with pytest.raises(ValueError, match="below 1; this loader skips those below 0"):
        plain.load_state_dict(skip.state_dict())
    two = CacheLoader(cache, 32, seed=0, min_position=2, **KW)
    assert two.identity.endswith("[positions>=2]") and two.identity != skip.identity


def test_a_cache_without_positions_is_refused(tmp_path):
    v1 = write_v1_cache(tmp_path / "v1", [40, 30], d_in=4)
    CacheLoader(v1, 8)  # readable without skipping
    with pytest.raises(CacheError, match=f"{v1}: the cache records no per-row context "
                                         "positions .*version 1.* below 1 cannot be skipped"):
        CacheLoader(v1, 8, min_position=1)
    with pytest.raises(CacheError, match="records no per-row context positions"):
        open_source(str(v1), 8, min_position=1)
    sae = SAE(SAEConfig(d_in=4, d_sae=8, architecture="topk", k=2), seed=0)
    with pytest.raises(CacheError, match=f"{v1}: the cache records no per-row context"):
        evaluate_reconstruction(sae, str(v1), min_position=1)


def test_bad_values_are_refused(cache):
    with pytest.raises(ValueError, match="would skip every row"):
        CacheLoader(cache, 8, min_position=16)
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="min_position must be an integer"):
            CacheLoader(cache, 8, min_position=bad)
    with pytest.raises(ValueError, match="min_position must be an integer"):
        TrainConfig(k=4, d_sae=16, min_position=-1)
    # positions 10 exist only in every third context: still served, each once an epoch
    far = CacheLoader(cache, 5, seed=0, min_position=10, **KW)
    ids = ids_of(take(far, 10))
    assert len(set(ids[:int((positions_of(N) >= 10).sum())])) == (positions_of(N) >= 10).sum()


def test_a_cache_with_no_row_left_is_an_error_not_a_hang(tmp_path):
    path = write_v2_cache(tmp_path / "c", [20, 20])
    m = json.loads((path / "manifest.json").read_text())
    m["context_size"] = 64  # lie: positions 11…63 look possible
    (path / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ValueError, match="no row is at a context position ≥ 40"):
        take(CacheLoader(path, 4, min_position=40, prefetch=0), 1)
    with pytest.raises(ValueError, match="no row is at a context position ≥ 40"):
        take(DeviceCacheLoader(path, 4, min_position=40), 1)


@pytest.mark.parametrize("readers", [1, 2])
def test_device_loader_serves_the_same_batches_and_positions(cache, readers):
    B = 40
    host = CacheLoader(cache, B, seed=5, min_position=1, prefetch=0, **KW)
    dev = DeviceCacheLoader(cache, B, seed=5, device="cpu", readers=readers, min_position=1,
                            **KW)
    assert dev.min_position == 1
    for _ in range(3):  # batch by batch: the same rows and the same stream position
        hb, db = take(host, 20), take(dev, 20)
        assert all(torch.equal(x, y) for x, y in zip(hb, db, strict=True))
        assert dev.state_dict() == host.state_dict()
    # a checkpoint of one resumes the other
    again = DeviceCacheLoader(cache, B, seed=5, device="cpu", min_position=1, **KW)
    again.load_state_dict(host.state_dict())
    assert all(torch.equal(x, y) for x, y in zip(take(again, 9), take(host, 9), strict=True))


def test_open_source_passes_it_to_caches_and_refuses_other_sources(cache, tmp_path):
    src = open_source(str(cache), 16, 0, min_position=1)
    assert isinstance(src, CacheLoader) and src.min_position == 1
    dev = open_source(str(cache), 16, 0, min_position=1, device="cpu")
    assert dev.min_position == 1
    np.save(tmp_path / "x.npy", np.zeros((10, 4), np.float32))
    for data in (str(tmp_path / "x.npy"), torch.zeros(10, 4), [torch.zeros(2, 4)]):
        with pytest.raises(ValueError, match="carry no context positions.*below 1"):
            open_source(data, 4, min_position=1)
    with pytest.raises(ValueError, match="skips context positions below 0, not 1"):
        open_source(CacheLoader(cache, 16), 16, min_position=1)


# ------------------------------------------------------------------ training
SMALL = ["--architecture", "topk", "--k", "2", "--d-sae", "16", "--steps", "6",
         "--batch-size", "32", "--no-progress", "--log-every", "3", "--checkpoint-every", "3",
         "--init-batches", "2"]


def test_cli_train_help_shows_the_option(capsys):
    code, out, _ = run_cli(["train", "--help"], capsys)
    assert code == 0 and "--min-position" in out and "attention sink" in out


def test_cli_train_with_min_position_records_it(cache, tmp_path, capsys):
    out = tmp_path / "run"
    code, stdout, err = run_cli(["train", "--cache", cache, "--out", out, "--min-position", "1",
                                 *SMALL], capsys)
    assert code == 0, stdout + err
    assert json.loads((out / "train_config.json").read_text())["min_position"] == 1
    ident = ActivationCache(cache).identity()
    assert SAE.load(out).cfg.dataset == f"{ident}[positions>=1]"
    ckpt = json.dumps([json.loads(p.read_text()) for p in (out / "checkpoint").rglob("*.json")])
    assert '"min_position": 1' in ckpt
    # the run is another run than one without the option (a resume with 0 is refused)
    code, _, err = run_cli(["train", "--cache", cache, "--out", out, "--resume", *SMALL],
                           capsys)
    assert code == 2 and "min_position: 1 → 0" in err


def test_cli_train_refuses_it_for_a_matrix(tmp_path, capsys):
    np.save(tmp_path / "x.npy", np.random.default_rng(0).normal(size=(64, 8)).astype(np.float32))
    code, _, err = run_cli(["train", "--activations", tmp_path / "x.npy", "--out",
                            tmp_path / "run", "--min-position", "1", *SMALL], capsys)
    assert code == 2 and "carry no context positions" in err


def test_trainer_never_sees_a_sink_row(cache):
    cfg = TrainConfig(architecture="topk", k=2, d_sae=16, steps=30, batch_size=32,
                      init_batches=2, progress=False, min_position=1, prefetch=0)
    tr = Trainer(cfg, str(cache))
    seen = []
    step = tr.state.step
    tr.state.step = lambda x: (seen.append(x.clone()), step(x))[1]
    tr.fit()
    x = torch.cat(seen)
    assert x.shape[0] == 30 * 32 and not bool((x[:, 1:] == SINK).any())
    with pytest.raises(ValueError, match="run's min_position is 1"):
        Trainer(cfg, CacheLoader(cache, 32))


# ------------------------------------------------------------------ evaluation
def _sae() -> SAE:
    sae = SAE(SAEConfig(d_in=D_IN, d_sae=16, architecture="topk", k=3), seed=0)
    with torch.no_grad():
        sae.b_dec.copy_(torch.linspace(-0.5, 0.5, D_IN))
    return sae.eval()


def assert_same(a: dict, b: dict) -> None:
    """The same metrics up to float64 summation order (the batches are cut differently)."""
    assert a.keys() == b.keys()
    for k in a:
        assert a[k] == pytest.approx(b[k], rel=1e-12, abs=1e-15), k


def test_evaluate_reconstruction_leaves_the_sinks_out(cache):
    sae = _sae()
    kept = torch.from_numpy(positions_of(N) >= 1)
    x = torch.cat(list(iter_activation_batches(str(cache), 100)))[kept]
    assert x.shape[0] == N - len(SINK_ROWS) and not bool((x[:, 1:] == SINK).any())
    with torch.no_grad():
        out = sae(x)
    x64, err = x.double(), (x - out.x_hat).double().pow(2).sum(1)
    hand = {"n_tokens": x.shape[0],
            "mse": float(err.sum()) / (x.shape[0] * D_IN),
            "fvu": float(err.sum() / (x64 - x64.mean(0)).pow(2).sum()),
            "nmse": float((err / x64.pow(2).sum(1)).mean()),
            "l0": float((out.z != 0).sum()) / x.shape[0]}
    rec = evaluate_reconstruction(sae, str(cache), batch_size=100, min_position=1).summary
    for k, v in hand.items():
        assert rec[k] == pytest.approx(v, rel=1e-6), k
    assert_same(evaluate_reconstruction(sae, x, batch_size=100).summary, rec)
    everything = evaluate_reconstruction(sae, str(cache), batch_size=100).summary
    assert everything["n_tokens"] == N and everything["mse"] > 1.5 * rec["mse"]
    # max_rows counts the rows kept
    head = evaluate_reconstruction(sae, str(cache), batch_size=64, max_rows=333,
                                   min_position=1).summary
    assert_same(head, evaluate_reconstruction(sae, x[:333], batch_size=64).summary)
    with pytest.raises(ValueError, match="carry no context positions"):
        evaluate_reconstruction(sae, x, min_position=1)


def test_cli_eval_states_min_position(cache, tmp_path, capsys):
    sae_dir = tmp_path / "sae"
    sae = _sae()
    sae.cfg.hook_layer, sae.cfg.hook_site = 3, "resid_post"
    sae.save(sae_dir)
    js = tmp_path / "eval.json"
    code, out, err = run_cli(["eval", "--sae", sae_dir, "--cache", cache, "--contexts", "0",
                              "--min-position", "1", "--json", js], capsys)
    assert code == 0, out + err
    res = json.loads(js.read_text())
    assert res["min_position"] == 1 and res["n_tokens"] == N - len(SINK_ROWS)
    assert res["reconstruction_cache"].endswith("[positions>=1]")
    assert "context positions" in out and "≥ 1" in out
    want = evaluate_reconstruction(SAE.load(sae_dir), str(cache), min_position=1).summary
    assert res["mse"] == pytest.approx(want["mse"], rel=1e-9)


def test_harvested_reconstruction_leaves_the_first_positions_out(lm):
    """Without a cache the positions are the context's columns: positions < 2 are left out."""
    from abstopk.data.tokens import iter_contexts, special_position_mask
    from abstopk.eval.run import harvest_reconstruction
    from abstopk.lm import run_to_layer

    model, tok, info = lm
    sae = SAE(SAEConfig(d_in=info.d_model, d_sae=256, architecture="abstopk", k=8), seed=1)
    got = harvest_reconstruction(sae, model, tok, layer=2, site="resid_post", n_tokens=90,
                                 context_size=32, batch_size=2, min_position=2)
    ids = torch.stack(list(itertools.islice(iter_contexts(tok, split="heldout",
                                                          context_size=32), 4)))
    acts = run_to_layer(model, ids, layers=2, site="resid_post")[2]
    keep = ~special_position_mask(ids, tok)
    keep[:, :2] = False
    x = acts.reshape(-1, acts.shape[-1])[keep.reshape(-1)][:90]
    ref = evaluate_reconstruction(sae, x).summary
    assert got.summary["n_tokens"] == 90
    for key in ("mse", "nmse", "explained_variance", "l0"):
        assert got.summary[key] == pytest.approx(ref[key], rel=1e-5), key


def test_two_ranks_skip_the_same_rows_as_one_process(cache, tmp_path):
    """Data parallel: every rank reads the same skipping stream; the weights equal one
    process's."""
    from ddp_worker import launch
    from safetensors.torch import load_file

    cfg = dict(architecture="topk", k=2, d_sae=16, batch_size=32, steps=12, init_batches=2,
               checkpoint_every=6, log_every=6, lr=1e-3, prefetch=0, seed=1, min_position=1)
    ref = Trainer(TrainConfig(**cfg, progress=False), str(cache))
    ref.fit()
    launch(2, str(cache), str(tmp_path / "run"), cfg)
    states = [load_file(str(tmp_path / "run" / "ranks" / f"rank{r}.safetensors"))
              for r in range(2)]
    for k, v in ref.sae.state_dict().items():
        assert torch.equal(states[0][f"model.{k}"], states[1][f"model.{k}"]), k
        got = states[0][f"model.{k}"].double()
        # float32 sums in another order (the gradients' all-reduce); a different row would
        # move the weights by far more
        assert float((got - v.double()).norm() / v.double().norm().clamp_min(1e-30)) <= 5e-5, k
