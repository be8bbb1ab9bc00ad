"""Probing tasks: selection rules, scores and the exact pooled ablation on hand-built cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from abstopk.data.labelled import Example
from abstopk.eval.probing import TASKS
from abstopk.eval.probing.absorption import (
    absorption_scores,
    first_letter_vocab,
    main_latents,
    word_absorption,
)
from abstopk.eval.probing.activations import pool_tokens
from abstopk.eval.probing.probes import LinearProbe, mean_accuracy_interval, wilson_interval
from abstopk.eval.probing.scr_tpp import (
    ablate,
    effects,
    scr_score,
    select_top_n,
    tpp_scores,
)
from abstopk.eval.probing.sparse_probing import (
    class_mean_diff,
    select_top_k,
    signed_separation,
    sparse_probe,
)
from abstopk.eval.probing.tasks import dedupe_examples, load_task_data
from abstopk.sae import SAE, SAEConfig


def test_registry_names():
    assert set(TASKS) == {"sparse_probing", "absorption", "scr", "tpp"}
    assert all(callable(f) for f in TASKS.values())


# ----------------------------------------------------------------------- sparse probing
def _codes(n_per_class: int = 20, seed: int = 0):
    """Pooled codes [2n, 8]: latent 3 = −4 on class 1 (0 on class 0); latent 5 = ±4 alternating
    on class 1 (mean 0); latent 1 = +2 on class 1; small noise elsewhere."""
    g = np.random.default_rng(seed)
    y = np.array([0] * n_per_class + [1] * n_per_class)
    z = 0.01 * g.standard_normal((2 * n_per_class, 8))
    z[y == 1, 3] = -4.0
    z[y == 1, 5] = np.where(np.arange(n_per_class) % 2 == 0, 4.0, -4.0) * 1.5
    z[y == 1, 1] += 2.0
    return z, y


def test_negative_latent_is_selected_by_abs_ranking():
    z, y = _codes()
    a = np.abs(z)
    # a ReLU-minded rule (positive mean difference of z) would never pick latent 3:
    assert z[y == 1, 3].mean() - z[y == 0, 3].mean() == pytest.approx(-4.0, abs=0.01)
    s = class_mean_diff(a, y)
    assert s[3] == pytest.approx(4.0, abs=0.02)
    assert s[5] == pytest.approx(6.0, abs=0.02)
    assert list(select_top_k(a, y, 3)) == [5, 3, 1]
    # signed variant: |Δ z̄| — latent 3 (Δ = −4) is found, the ±6 latent (Δ = 0) is not
    sig = class_mean_diff(z, y)
    assert sig[5] < 0.05
    assert list(select_top_k(z, y, 2)) == [3, 1]


def test_sparse_probe_accuracy_with_sign_aware_features():
    z, y = _codes(30)
    tr = np.arange(60) % 3 != 0
    te = ~tr
    acc_abs, idx_abs = sparse_probe(np.abs(z)[tr], y[tr], np.abs(z)[te], y[te], k=1)
    assert list(idx_abs) == [5] and acc_abs == 1.0
    # the signed k=1 probe uses latent 3, also perfect; a probe on latent 5's signed value alone
    # cannot separate (±6 vs 0): accuracy well below 1
    acc_sig, idx_sig = sparse_probe(z[tr], y[tr], z[te], y[te], k=1)
    assert list(idx_sig) == [3] and acc_sig == 1.0
    p = LinearProbe().fit(z[tr][:, [5]], y[tr])
    assert p.score(z[te][:, [5]], y[te]) <= 0.8


def test_signed_separation_hand_computed_and_blind_spot_of_abs():
    """Latent 0 is +3 on class 1 and −3 on class 0: |z| is 3 on both sides, so the unsigned
    rule scores it 0; the signed separation ranks it first. Hand-computed scores:
    latent 1: class 1 = (1, 3), class 0 = (0, 0) → Δ = 2, pooled var = (2 + 0)/2 = 1 → 2;
    latent 2: constant → 0."""
    y = np.array([1, 1, 0, 0])
    z = np.array([[3.0, 1.0, 5.0], [3.0, 3.0, 5.0], [-3.0, 0.0, 5.0], [-3.0, 0.0, 5.0]])
    sep = signed_separation(z, y)
    assert sep[0] == np.inf and sep[1] == pytest.approx(2.0) and sep[2] == 0.0
    # class 1 = (2, 3), class 0 = (−4, −3): Δ = 6, sample variances 0.5 and 0.5,
    # pooled variance (1·0.5 + 1·0.5)/2 = 0.5 → 6/√0.5
    z[0, 0], z[2, 0] = 2.0, -4.0
    sep = signed_separation(z, y)
    assert sep[0] == pytest.approx(6.0 / np.sqrt(0.5))
    assert class_mean_diff(np.abs(z), y)[0] == pytest.approx(abs(2.5 - 3.5))
    assert list(select_top_k(z, y, 2, "separation")) == [0, 1]
    assert list(select_top_k(np.abs(z), y, 1, "mean_diff")) == [1]


def test_wilson_and_mean_intervals_known_values():
    lo, hi = wilson_interval(0.5, 100)
    assert (lo, hi) == (pytest.approx(0.40383, abs=1e-5), pytest.approx(0.59617, abs=1e-5))
    lo, hi = wilson_interval(1.0, 10)       # 10/10: upper bound 1, lower (10/(10+z²))
    assert hi == pytest.approx(1.0) and lo == pytest.approx(10 / (10 + 1.959964 ** 2), abs=1e-9)
    assert all(np.isnan(wilson_interval(0.5, 0)))
    # two tasks of 100 items: Wilson on 200; unequal sizes: n_eff = 4 / (1/100 + 1/400) = 320
    assert mean_accuracy_interval([0.8, 0.6], [100, 100]) == pytest.approx(
        wilson_interval(0.7, 200))
    assert mean_accuracy_interval([0.8, 0.6], [100, 400]) == pytest.approx(
        wilson_interval(0.7, 320))
    assert mean_accuracy_interval([1.0], [48]) == pytest.approx(wilson_interval(1.0, 48))


def test_dedupe_after_normalisation_and_conflicting_labels():
    ex = [Example("Good  movie", "pos"), Example("good movie ", "pos"),     # duplicate
          Example("Bad.", "neg"), Example("BAD.", "pos"),                   # label conflict
          Example("fine", "pos"), Example("awful", "neg"), Example("Awful", "neg")]
    kept, n = dedupe_examples(ex)
    assert [e.text for e in kept] == ["Good  movie", "fine", "awful"] and n == 4
    more = [Example(f"p {i}", "p") for i in range(12)] + [Example(f"n {i}", "n") for i in range(12)]
    d = load_task_data("mine", None, seed=0, examples=more + [Example("P  0", "p")] * 3)
    assert d.n_duplicates_removed == 3
    norm = {" ".join(t.split()).casefold() for t in d.train_texts}
    assert not norm & {" ".join(t.split()).casefold() for t in d.test_texts}


def test_probe_raw_weights_reproduce_decision_function():
    g = np.random.default_rng(1)
    X = g.standard_normal((80, 5)) * np.array([1.0, 10.0, 0.1, 3.0, 1.0]) + 7.0
    y = (X[:, 0] + 0.1 * X[:, 1] > 8.0).astype(int)
    p = LinearProbe(C=10.0).fit(X, y)
    np.testing.assert_allclose(X @ p.w_raw[0] + p.b_raw[0], p.decision_function(X), rtol=1e-9,
                               atol=1e-9)
    assert p.score(X, y) > 0.9


def test_class_mean_diff_rejects_non_binary():
    with pytest.raises(ValueError):
        class_mean_diff(np.ones((3, 2)), np.array([0, 1, 2]))


# ------------------------------------------------------------------------------ SCR / TPP
def test_scr_effects_hand_computed():
    # 4 sentences, 3 latents, d_in = 2
    c = np.array([[1.0, 0.0, 2.0], [3.0, 0.0, 2.0], [0.0, -2.0, 1.0], [0.0, -4.0, 1.0]])
    y = np.array([1, 1, 0, 0])
    W_dec = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    w = np.array([0.5, -1.0])
    # Δc = [2, 3, 1]; W_dec w = [0.5, −1, −0.5]; |Δc·dot| = [1, 3, 0.5]
    np.testing.assert_allclose(effects(c, y, w, W_dec, kind="scr"), [1.0, 3.0, 0.5])
    assert list(select_top_n(effects(c, y, w, W_dec), 2)) == [1, 0]


def test_tpp_effects_are_sign_aware():
    # latent 0: fires NEGATIVELY on class 1 (ā up, c̄ down) with a decoder row opposite to the
    # probe → it pushes class-1 logits up: positive effect. latent 1: weaker on class 1 → 0.
    # latent 2: stronger on class 1 but pushes the logit down → negative effect, not selected.
    c = np.array([[-3.0, 0.0, 1.0], [-3.0, 0.0, 1.0], [0.0, 2.0, 0.0], [0.0, 2.0, 0.0]])
    a = np.abs(c)
    y = np.array([1, 1, 0, 0])
    W_dec = np.array([[-1.0, 0.0], [1.0, 0.0], [-1.0, 0.0]])
    w = np.array([1.0, 0.0])
    e = effects(c, y, w, W_dec, kind="tpp", a=a)
    np.testing.assert_allclose(e, [3.0, 0.0, -1.0])
    assert list(select_top_n(e, 3)) == [0]
    with pytest.raises(ValueError):
        effects(c, y, w, W_dec, kind="tpp")


def test_select_top_n_ties_and_positivity():
    assert list(select_top_n([0.0, 2.0, 2.0, -1.0, 1.0], 10)) == [1, 2, 4]
    assert list(select_top_n([0.0, 0.0], 2)) == []


def test_scr_score_arithmetic():
    assert scr_score(0.8, 0.6, 0.9) == pytest.approx(2 / 3)
    assert scr_score(0.6, 0.6, 0.9) == 0.0
    assert scr_score(0.5, 0.6, 0.9) == pytest.approx(-1 / 3)
    assert scr_score(0.99, 0.9, 0.9005) == 0.0  # oracle not better: 0 by convention


def test_tpp_scores_hand_made():
    clean = [0.9, 0.8, 0.7]
    abl = np.array([[0.5, 0.8, 0.6], [0.9, 0.4, 0.7], [0.8, 0.8, 0.7]])
    s = tpp_scores(clean, abl)
    # drops: [.4 0 .1], [0 .4 0], [.1 0 0] → intended [.4 .4 0], unintended [.05 0 .05]
    assert s["intended"] == pytest.approx(0.8 / 3)
    assert s["unintended"] == pytest.approx(0.1 / 3)
    assert s["total"] == pytest.approx(0.7 / 3)
    with pytest.raises(ValueError):
        tpp_scores([0.9], np.zeros((1, 1)))


@pytest.mark.parametrize("norm", ["none", "layer_norm", "scalar"])
@pytest.mark.parametrize("arch", ["abstopk", "topk"])
def test_pooled_ablation_equals_per_token_ablation_with_error_term(norm, arch):
    """x̄ − c̄[:, S] W_dec[S] == mean_t(decode(z_t with S zeroed) + (x_t − x̂_t))."""
    torch.manual_seed(0)
    sae = SAE(SAEConfig(d_in=8, d_sae=16, architecture=arch, k=4, normalize_activations=norm),
              seed=3)
    with torch.no_grad():
        sae.b_dec.copy_(torch.randn(8) * 0.3)
        sae.b_enc.copy_(torch.randn(16) * 0.1)
        sae.input_scale.fill_(0.7)
    acts = torch.randn(3, 5, 8) * 2 + 0.5
    mask = torch.ones(3, 5, dtype=torch.bool)
    mask[0, 3:] = False
    mask[2, :1] = False
    S = [2, 5, 11]
    sae.eval()
    pooled = pool_tokens(sae, acts, mask)
    got = ablate(pooled.x, pooled.c, sae.W_dec.detach(), S)
    want = []
    for b in range(3):
        x = acts[b][mask[b]]
        with torch.no_grad():
            x_s, stats = sae.normalize(x)
            out = sae.forward(x)
            z = out.z.clone()
            err = x - out.x_hat
            z[:, S] = 0
            x_mod = sae.decode(z, stats) + err
        want.append(x_mod.mean(0))
    torch.testing.assert_close(got, torch.stack(want), rtol=1e-5, atol=1e-5)
    # pooled codes: z̄ and mean |z| per sentence
    with torch.no_grad():
        z0 = sae.forward(acts[0][mask[0]]).z
    torch.testing.assert_close(pooled.z[0], z0.mean(0))
    torch.testing.assert_close(pooled.a[0], z0.abs().mean(0))
    assert pooled.n_tokens.tolist() == [3.0, 5.0, 4.0]
    assert list(ablate(pooled.x, pooled.c, sae.W_dec.detach(), []).shape) == [3, 8]


# ----------------------------------------------------------------------------- absorption
def test_main_latents_sign_aware():
    d = torch.tensor([1.0, 0.0, 0.0])
    W = torch.tensor([[0.5, 0.866, 0.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0], [0.2, 0.0, 0.98]])
    idx, cos = main_latents(W, d, 1, signed=True)
    assert list(idx) == [2] and cos[2] == pytest.approx(-1.0)
    idx, _ = main_latents(W, d, 2, signed=False)
    assert list(idx) == [0, 3]


def test_word_absorption_cases():
    cos = np.array([0.9, 0.3, 0.05, 0.5])
    # main (0) fires for the letter and explains most of P: no absorption
    assert word_absorption(np.array([2.0, 0.5, 0.0, 0.0]), 2.5, [0], cos) == (True, False, 0.0)
    # main silent, latent 3 (cos .5) carries 1.5 of P = 2: full absorption, fraction 1
    assert word_absorption(np.array([0.0, 0.0, 0.0, 1.5]), 2.0, [0], cos) == (False, True, 1.0)
    # main fires weakly (1.0), absorbers: latent 1 (1.0, cos .3) counts, latent 2 (cos .05)
    # does not: A = 1 ≥ 0.4·2.5 → fraction a/(a + M) = 1/(1 + 1)
    fires, full, frac = word_absorption(np.array([1.0, 1.0, 0.6, 0.0]), 2.5, [0], cos)
    assert fires and not full and frac == pytest.approx(0.5)
    # a negative main projection (wrong sign) is "not firing"; P ≤ 0 is never absorption
    assert word_absorption(np.array([-1.0, 0.0, 0.0, 1.5]), -0.5, [0], cos) == (False, False, 0.0)
    # top other latent too weak relative to P: not full absorption
    assert word_absorption(np.array([0.0, 0.5, 0.0, 0.0]), 2.0, [0], cos)[1] is False


def test_absorption_score_aggregation():
    per = {"a": [(True, False, 0.0), (False, True, 1.0)], "b": [(False, False, 0.5)], "c": []}
    s = absorption_scores(per)
    assert s["mean_full_absorption_rate"] == pytest.approx(0.25)
    assert s["mean_absorption_fraction"] == pytest.approx(0.5)
    assert s["main_latent_miss_rate"] == pytest.approx(0.75)
    assert s["n_letters"] == 2


def test_first_letter_vocab_filter():
    class Tok:
        toks = [" cat", " a", "dog", " Zebra", " x1y", " über", " to", "  two", " Ok"]

        def __len__(self):
            return len(self.toks)

        def batch_decode(self, ids):
            return [self.toks[i[0]] for i in ids]

    assert first_letter_vocab(Tok()) == [(0, "cat"), (3, "Zebra")]
    assert first_letter_vocab(Tok(), min_len=2) == [(0, "cat"), (3, "Zebra"), (6, "to"), (8, "Ok")]


# ------------------------------------------------- SCR / TPP pipelines on synthetic activations
def _synthetic_sae(d_in: int, d_sae: int) -> SAE:
    sae = SAE(SAEConfig(d_in=d_in, d_sae=d_sae, architecture="abstopk", k=2, hook_layer=0))
    q, _ = torch.linalg.qr(torch.randn(d_in, d_in, generator=torch.Generator().manual_seed(0)))
    with torch.no_grad():
        sae.W_dec.copy_(q[:d_sae])  # orthonormal decoder rows
    return sae


def test_scr_pipeline_recovers_oracle_when_spurious_latent_is_ablated(monkeypatch):
    """A (weak, latent 1) and B (strong, latent 0) perfectly correlated in the biased train set:
    the biased probe follows B (accuracy on A ≈ 0.5); ablating the top B latent (n = 1)
    removes B, so the fixed biased probe now reads A: SCR ≈ 1 (oracle accuracy 1)."""
    from abstopk.eval.probing import scr_tpp
    from abstopk.eval.probing.activations import PooledActs

    sae = _synthetic_sae(8, 6)
    W = sae.W_dec.detach()

    def quadrants(name, pair, n_q, seed, **kw):
        return {part: {(a, b): [f"{part}:{a}{b}:{i}" for i in range(n)]
                       for a in (0, 1) for b in (0, 1)}
                for part, n in (("train", 60), ("test", 40))}

    def pool(sae_, model, tok, texts, desc, **kw):
        g = torch.Generator().manual_seed(len(texts) + (desc == "scr test"))
        ab = torch.tensor([[int(t.split(":")[1][0]), int(t.split(":")[1][1])] for t in texts])
        c = 0.05 * torch.randn(len(texts), 6, generator=g)
        c[:, 1] = (2 * ab[:, 0] - 1) * 1.0        # A, weak
        c[:, 0] = (2 * ab[:, 1] - 1) * 3.0        # B, strong
        x = c @ W + 0.05 * torch.randn(len(texts), 8, generator=g)
        return PooledActs(x=x, z=c, a=c.abs(), n_tokens=torch.ones(len(texts)))

    monkeypatch.setattr(scr_tpp, "load_quadrants", quadrants)
    monkeypatch.setattr(scr_tpp, "_pool", pool)
    r = scr_tpp.run_scr(sae, None, None, n_values=(1, 2), pairs=[("s0", "s1")], progress=False)
    p = r["pairs"]["s0/s1"]
    assert p["oracle_acc_A"] == 1.0 and p["oracle_acc_B"] == 1.0
    assert p["biased_probe_acc_on_B"] == 1.0 and p["biased_probe_acc_on_A"] <= 0.6
    assert p["latents_B_top_1"] == [0]
    assert p["latents_B_top_2"][0] == 0
    assert p["acc_A_after_ablating_B_top_1"] >= 0.95
    assert r["scr_metric_top_1"] >= 0.9 and r["scr_metric_top_1"] == p["scr_dir1_top_1"]


def test_tpp_pipeline_targets_the_ablated_class(monkeypatch):
    """Class k is carried by latent k (with either sign: class 1's latent fires negatively).
    Ablating class i's top latent hurts probe i much more than the other probes."""
    from abstopk.data.labelled import Example
    from abstopk.eval.probing import scr_tpp
    from abstopk.eval.probing.activations import PooledActs
    from abstopk.eval.probing.tasks import load_task_data

    sae = _synthetic_sae(10, 8)
    W = sae.W_dec.detach()
    ex = [Example(f"{k}:{i}", f"class{k}") for k in range(3) for i in range(80)]

    def task(name, n, seed, **kw):
        return load_task_data(name, n, seed, examples=ex, test_fraction=0.5)

    def pool(sae_, model, tok, texts, desc, **kw):
        g = torch.Generator().manual_seed(len(texts) + (desc == "tpp test"))
        k = torch.tensor([int(t.split(":")[0]) for t in texts])
        c = 0.3 * torch.randn(len(texts), 8, generator=g)
        sign = torch.tensor([1.0, -1.0, 1.0])
        c[torch.arange(len(texts)), k] += 3.0 * sign[k]
        x = c @ W + 0.05 * torch.randn(len(texts), 10, generator=g)
        return PooledActs(x=x, z=c, a=c.abs(), n_tokens=torch.ones(len(texts)))

    monkeypatch.setattr(scr_tpp, "load_task_data", task)
    monkeypatch.setattr(scr_tpp, "_pool", pool)
    r = scr_tpp.run_tpp(sae, None, None, n_examples=240, n_values=(1,), progress=False)
    assert all(a >= 0.95 for a in r["clean_accuracy"].values())
    for k in range(3):
        assert r["per_class"][f"class{k}"]["latents_top_1"] == [k]   # incl. the negative one
    assert r["tpp_top_1_intended_diff_only"] >= 0.2
    assert r["tpp_top_1_total_metric"] >= 0.15
    assert r["tpp_top_1_unintended_diff_only"] < r["tpp_top_1_intended_diff_only"] / 2
