"""Per-latent statistics: the streaming pass equals brute force on a small cache."""

from __future__ import annotations

import json
import math

import pytest
import torch
from latent_cache import write_cache

from abstopk.analysis.latent_stats import collect
from abstopk.analysis.latent_stats.contexts import RowIndex
from abstopk.analysis.latent_stats.stream import SignedHistogram, TopN, histogram_reference
from abstopk.analysis.latent_stats.write import latent_record
from abstopk.data.cache import ActivationCache
from abstopk.errors import CacheError
from abstopk.sae import SAE, SAEConfig

D, F, N_ROWS = 12, 20, 700


def _sae(arch: str, k: int | None = 4) -> SAE:
    sae = SAE(SAEConfig(d_in=D, d_sae=F, architecture=arch, k=k), seed=3)
    with torch.no_grad():
        sae.b_enc.normal_(0, 0.3, generator=torch.Generator().manual_seed(4))
        if sae.threshold is not None:
            sae.threshold.fill_(0.4)
    return sae.eval()


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    g = torch.Generator().manual_seed(0)
    acts = torch.randn(N_ROWS, D, generator=g) * torch.linspace(0.5, 2.0, D)
    toks = torch.randint(0, 50, (N_ROWS,), generator=g)
    return ActivationCache(write_cache(tmp_path_factory.mktemp("c") / "cache", acts, toks,
                                       context_len=30, shard_rows=256))


def _dense(sae: SAE, cache: ActivationCache):
    x = torch.cat([cache.open_shard(i)["activations"].rows(0, int(s["rows"]))
                   for i, s in enumerate(cache.shards)])
    with torch.no_grad():
        u = sae.pre_acts(sae.normalize(x)[0])
        z = sae.activation(u)
    return z, u


@pytest.mark.parametrize("arch", ["abstopk", "topk", "jumprelu"])
def test_stream_equals_brute_force(cache, arch):
    sae = _sae(arch, k=4 if "topk" in arch else None)
    st = collect(sae, cache, top_n=7, batch_rows=96, half_bins=8, sample_n=16)
    z, u = _dense(sae, cache)
    assert st.rows_read == N_ROWS
    assert torch.equal(st.count_pos, (z > 0).sum(0))
    assert torch.equal(st.count_neg, (z < 0).sum(0))
    v = z if sae.op.signed else u
    assert st.negative_side == ("activation" if arch == "abstopk" else "pre_activation")
    n_nontrivial = 0
    for i in range(F):
        # top-N positive: the largest z > 0, exactly (values and rows)
        zi = z[:, i]
        on = torch.nonzero(zi > 0).flatten()
        want = on[torch.argsort(zi[on], descending=True)][:7]
        got = st.top_pos.entries(i)
        assert [r for _, r in got] == want.tolist()
        assert [val for val, _ in got] == zi[want].tolist()
        # top-N negative: the most negative v (z, or u for a non-negative SAE)
        vi = v[:, i]
        on = torch.nonzero(vi < 0).flatten()
        want = on[torch.argsort(vi[on])][:7]
        assert [r for _, r in st.top_neg.entries(i)] == want.tolist()
        # histogram: radius is the power of two above max|z|, counts equal brute force
        m = float(zi.abs().max())
        if m == 0:
            assert st.hist.edges_counts(i) == ([], [])
            continue
        n_nontrivial += 1
        r = 2.0 ** (math.floor(math.log2(m)) + 1)
        assert float(st.hist.radius[i]) == r
        edges, counts = st.hist.edges_counts(i)
        assert edges[0] == -r and edges[-1] == r and len(counts) == 16
        assert counts == histogram_reference(zi, r, 8)
        assert sum(counts) == int((zi != 0).sum())
        # quantile samples: real rows, values in their bins, both signs for a signed latent
        rec = latent_record(st, i, n_bins=6, per_bin=3)
        for b in rec["quantiles"]:
            for val, row in b["examples"]:
                assert val == float(v[row, i] if val < 0 else z[row, i])
                assert (b["lo"] <= val < b["hi"]) if val < 0 else (b["lo"] < val <= b["hi"])
    assert n_nontrivial >= F // 2


def test_histogram_merges_exactly():
    """Values arriving in increasing magnitude force several doublings."""
    h = SignedHistogram(1, 4)
    vals = torch.tensor([0.1, -0.3, 0.9, -2.5, 7.0, -0.05, 0.0, 31.0, -31.9])
    for x in vals:
        h.update(x.view(1, 1))
    edges, counts = h.edges_counts(0)
    assert edges[-1] == 32.0
    # w = 8: |v| in [0, 8) → bin 0, [24, 32) → bin 3
    assert counts == [1, 0, 0, 3, 3, 0, 0, 1]
    assert counts == histogram_reference(vals, 32.0, 4)


def test_topn_keeps_largest_across_batches():
    t = TopN(2, 3)
    keys = torch.tensor([[1.0, float("-inf")], [5.0, 2.0], [3.0, float("-inf")]])
    t.update(keys, keys, torch.tensor([10, 11, 12]))
    t.update(torch.tensor([[4.0, 9.0], [0.5, 1.0]]), torch.tensor([[4.0, 9.0], [0.5, 1.0]]),
             torch.tensor([13, 14]))
    assert t.entries(0) == [(5.0, 11), (4.0, 13), (3.0, 12)]
    assert t.entries(1) == [(9.0, 13), (2.0, 11), (1.0, 14)]


def test_windows_stay_inside_their_context(cache):
    idx = RowIndex(cache)
    toks, focus = idx.window(31, 4)          # context 1 = rows 30..59
    assert focus == 1 and len(toks) == 6
    assert toks == idx.token_ids[30:36].tolist()
    toks, focus = idx.window(45, 2)
    assert toks == idx.token_ids[43:48].tolist() and focus == 2


def test_version1_cache_is_refused(tmp_path):
    acts = torch.randn(40, D)
    p = write_cache(tmp_path / "v1", acts, torch.zeros(40, dtype=torch.int64), 10, 16,
                    positions=False)
    with pytest.raises(CacheError, match="harvest it again"):
        RowIndex(ActivationCache(p))


@pytest.mark.slow
def test_compute_and_write_on_embedded_model(tmp_path, lm):
    """A 576-wide AbsTopK SAE over a small cache of real SmolLM2 layer-3 activations."""
    from abstopk.analysis.latent_stats import compute_and_write
    from abstopk.errors import OutputExistsError
    from abstopk.lm.hooks import capture_activations

    model, tok, _ = lm
    text = ("The man walked into the room and sat down. The woman walked into the room and "
            "sat down. He was happy; she was sad. It was hot today and cold yesterday.")
    ids = tok(text, return_tensors="pt").input_ids[:, :40]
    with capture_activations(model, 3) as acts, torch.no_grad():
        model(ids)
    x = acts[3][0].float()
    p = write_cache(tmp_path / "cache", x, ids[0], context_len=15, shard_rows=25,
                    model="smollm2-135m")
    sae = SAE(SAEConfig(d_in=x.shape[1], d_sae=64, architecture="abstopk", k=8,
                        model_name="smollm2-135m", hook_layer=3, hook_site="resid_post"),
              seed=0)
    sae.save(tmp_path / "sae")
    out = compute_and_write(tmp_path / "sae", p, tmp_path / "stats", top_n=5, progress=False)
    index = json.loads((out / "index.json").read_text())
    assert index["format"] == "abstopk-latent-stats" and index["cache"]["rows_read"] == ids.shape[1]
    assert len(index["latents"]) == 64 and index["negative_side"] == "activation"
    fired = [r for r in index["latents"] if r["freq_pos"] + r["freq_neg"] > 0]
    assert sum(r["freq_pos"] + r["freq_neg"] for r in index["latents"]) == pytest.approx(8.0)
    rec = json.loads((out / "latents" / f"{fired[0]['index']:06d}.json").read_text())
    ex = (rec["top_pos"] + rec["top_neg"])[0]
    row_tok = tok.decode([int(ids[0, ex["row"]])])
    assert ex["tokens"][ex["focus"]] == row_tok
    assert len(rec["logits_pos"]) == 10 and rec["logits_pos"][0]["value"] > rec["logits_neg"][0]["value"]
    with pytest.raises(OutputExistsError):
        compute_and_write(tmp_path / "sae", p, tmp_path / "stats", progress=False)
    # the same SAE exported to SAELens's layout (an unsigned SAE of twice the width that
    # load_sae restores to the signed one) gives the same statistics
    from abstopk.export import export_saelens

    export_saelens(tmp_path / "sae", tmp_path / "sl")
    assert "metadata" in json.loads((tmp_path / "sl" / "cfg.json").read_text())
    out2 = compute_and_write(tmp_path / "sl", p, tmp_path / "stats_sl", top_n=5, progress=False)
    index2 = json.loads((out2 / "index.json").read_text())
    assert index2["negative_side"] == "activation" and len(index2["latents"]) == 64
    for a, b in zip(index["latents"], index2["latents"], strict=True):
        assert (a["freq_pos"], a["freq_neg"]) == pytest.approx((b["freq_pos"], b["freq_neg"]))
