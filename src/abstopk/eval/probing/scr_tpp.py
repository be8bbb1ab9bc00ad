"""Targeted latent ablation: SCR (spurious correlation removal) and TPP (targeted probe
perturbation), following SAEBench's ``scr_and_tpp`` and made sign-aware.

Shared machinery (:mod:`.activations`): per sentence the pooled residual ``x̄`` [d_in] and the
pooled raw-space latent coefficients ``c̄`` [d_sae]; zero-ablating the latents ``S`` at every
token with the SAE error term kept gives the pooled activation
``x̄_S = x̄ − Σ_{i∈S} c̄_i W_dec[i]`` (exact, :func:`ablate`). Probes
(:class:`.probes.LinearProbe`) are trained on ``x̄`` and **not retrained** after ablation
(as in SAEBench): we measure how the ablation changes a fixed probe's accuracy.

Latent attribution for a probe with raw-space weight ``w`` on labelled data (y ∈ {0, 1}):
``Δc̄_i = mean_{y=1} c̄_i − mean_{y=0} c̄_i`` is latent i's mean contribution difference, and
``Δc̄_i · (W_dec[i]·w)`` its contribution to the probe's mean logit difference. This product is
invariant under flipping a latent's sign (code and decoder row), so it is sign-aware as is.

**SCR** (dataset with a binary label A and a binary second attribute B; default VADER
sentiment × source movie/tweets). Quadrants (a, b) of equal size, split train/test:

* biased probe P_bias: trained on the train quadrants where A = B (A perfectly correlated with
  B) to predict A (= B); oracles P_A, P_B: trained on all four train quadrants;
* dir 1 (remove B, recover A): effects ``e_i = |Δ_B c̄_i · (W_dec[i]·w_B)|`` on the balanced
  train set; ablate the top-n; ``SCR_1(n) = (acc_A(P_bias, ablated) − acc_A(P_bias)) /
  (acc_A(P_A) − acc_A(P_bias))`` on the balanced test set (0 when the denominator < 0.001);
* dir 2: the same with A and B exchanged (ablate A latents, evaluate P_bias on B labels);
* ``scr_metric_top_n`` = SCR_1 if P_bias is less accurate on A than on B (it relies on B, so
  removing B is the meaningful direction), else SCR_2 — SAEBench's rule. 1 = the ablation
  recovers the oracle's accuracy; 0 = no change; it can leave [0, 1].

**TPP** (dataset with ≥ 3 classes; default VADER source: movie, tweets, amazon, nyt). For each
class i a one-vs-rest probe P_i (positives: class i; negatives: as many examples drawn from the
other classes); effects ``e_i = 1[Δā > 0] · Δc̄ · (W_dec·w_i)`` on its train set (ā = mean
|z|: the latent is more strongly active, with either sign, on class i — for non-negative SAEs
this is exactly SAEBench's ``clamp(Δz̄, 0)·(W_dec·w)`` rule); ablate the top-n positive
effects; with ``acc_{i,j}`` = P_j's test accuracy after ablating class i's latents::

    TPP(n) = mean_i [ (acc_i − acc_{i,i}) − mean_{j≠i} (acc_j − acc_{i,j}) ]

(intended drop minus mean unintended drop; higher is better).

``summary`` = the score at the largest n (default 20, SAEBench's usual headline).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from .activations import PooledActs, pooled_activations, resolve_hook
from .probes import LinearProbe
from .tasks import load_quadrants, load_task_data

__all__ = ["N_VALUES", "ablate", "effects", "run_scr", "run_tpp", "scr_score",
           "select_top_n", "tpp_scores"]

N_VALUES = (2, 5, 10, 20)


def _t(a) -> torch.Tensor:
    return a if isinstance(a, torch.Tensor) else torch.as_tensor(np.asarray(a))


def effects(c, y, w, W_dec, *, kind: str = "scr", a=None) -> np.ndarray:
    """Latent effects [d_sae] for a probe with raw-space weight ``w`` [d_in].

    ``c`` [n, d_sae] pooled raw-space coefficients, ``y`` [n] in {0, 1}, ``W_dec`` [d_sae, d_in].
    ``kind="scr"``: ``|Δc̄·(W_dec w)|``; ``kind="tpp"``: ``1[Δā > 0]·Δc̄·(W_dec w)`` (needs
    ``a`` [n, d_sae], the pooled |z|).
    """
    c = _t(c).double()
    y = np.asarray(y)
    pos, neg = torch.as_tensor(y == 1), torch.as_tensor(y == 0)
    dc = c[pos].mean(0) - c[neg].mean(0)
    dot = _t(W_dec).double() @ _t(w).double().reshape(-1)
    e = dc * dot
    if kind == "scr":
        return e.abs().numpy()
    if kind == "tpp":
        if a is None:
            raise ValueError("kind='tpp' needs a (pooled |z|)")
        a = _t(a).double()
        da = a[pos].mean(0) - a[neg].mean(0)
        return torch.where(da > 0, e, torch.zeros_like(e)).numpy()
    raise ValueError(f"unknown kind {kind!r}")


def select_top_n(e, n: int) -> np.ndarray:
    """Indices of the (at most) n largest strictly positive effects, best first (ties: lower
    index first)."""
    e = np.asarray(e, dtype=np.float64)
    order = np.lexsort((np.arange(len(e)), -e))
    return np.array([i for i in order[:n] if e[i] > 0], dtype=np.int64)


def ablate(x, c, W_dec, S) -> torch.Tensor:
    """``x̄ − c̄[:, S] @ W_dec[S]``: pooled activations with latents S zero-ablated (error kept)."""
    x = _t(x).float()
    S = torch.as_tensor(np.asarray(S, dtype=np.int64))
    if S.numel() == 0:
        return x.clone()
    return x - _t(c).float()[:, S] @ _t(W_dec).float()[S]


def scr_score(changed: float, original: float, oracle: float) -> float:
    """SAEBench's normalised SCR: ``(changed − original)/(oracle − original)``, 0 if the oracle
    is not better than the original by 0.001."""
    if oracle - original < 0.001:
        return 0.0
    return float((changed - original) / (oracle - original))


def tpp_scores(clean: Sequence[float], ablated: np.ndarray) -> dict[str, float]:
    """TPP from clean accuracies ``clean[j]`` and ``ablated[i, j]`` (probe j after ablating
    class i's latents): total, intended (mean diagonal drop) and unintended (mean off-diagonal
    drop) — each averaged over i."""
    clean = np.asarray(clean, dtype=np.float64)
    ablated = np.asarray(ablated, dtype=np.float64)
    m = len(clean)
    if ablated.shape != (m, m) or m < 2:
        raise ValueError("ablated must be [m, m] with m ≥ 2")
    drop = clean[None, :] - ablated                   # drop[i, j]
    intended = np.diag(drop)
    off = (drop.sum(1) - intended) / (m - 1)
    return {"total": float(np.mean(intended - off)), "intended": float(np.mean(intended)),
            "unintended": float(np.mean(off))}


def _dec(sae) -> torch.Tensor:
    return sae.W_dec.detach().float().cpu()


def _pool(sae, model, tokenizer, texts, desc, **kw) -> PooledActs:
    return pooled_activations(sae, model, tokenizer, texts, desc=desc, **kw)


def run_scr(sae, model, tokenizer, *, device: str = "cpu", n_examples: int = 800, seed: int = 0,
            dataset: str = "sentiment", pairs: Sequence[tuple[str, str]] | None = None,
            label_values: tuple[str, str] | None = None,
            n_values: Sequence[int] = N_VALUES, layer: int | None = None, site: str | None = None,
            batch_size: int = 32, max_length: int = 128, C: float = 1.0,
            test_fraction: float = 0.25, progress: bool = True, log=print) -> dict:
    """SCR of ``sae`` (module docstring). ``n_examples`` sentences per attribute pair (4 equal
    quadrants); ``pairs`` are pairs of values of the second attribute (default: movie/tweets
    for ``sentiment``, else the two most frequent values); ``label_values`` the two labels
    (default: sorted)."""
    layer, site = resolve_hook(sae, layer, site)
    if pairs is None:
        if dataset == "sentiment":
            pairs = [("movie", "tweets")]
        else:
            from collections import Counter

            from ...data.labelled import load_examples

            common = Counter(e.attr2 for e in load_examples(dataset, log=log)).most_common(2)
            if len(common) < 2 or common[1][0] is None:
                raise ValueError(f"SCR needs a second attribute with ≥ 2 values in {dataset!r}")
            pairs = [(str(common[0][0]), str(common[1][0]))]
    kw = dict(layer=layer, site=site, device=device, batch_size=batch_size,
              max_length=max_length, progress=progress)
    W_dec = _dec(sae)
    results: dict[str, dict] = {}
    for pair in pairs:
        pair = (str(pair[0]), str(pair[1]))
        q = load_quadrants(dataset, pair, n_examples // 4, seed, test_fraction=test_fraction,
                           label_values=label_values, log=log)
        split = {}
        for part in ("train", "test"):
            texts, ya, yb = [], [], []
            for (a, b), tx in sorted(q[part].items()):
                texts += tx
                ya += [a] * len(tx)
                yb += [b] * len(tx)
            acts = _pool(sae, model, tokenizer, texts, f"scr {part}", **kw)
            split[part] = (acts, np.array(ya), np.array(yb))
        (tr, ya_tr, yb_tr), (te, ya_te, yb_te) = split["train"], split["test"]
        biased = ya_tr == yb_tr
        p_bias = LinearProbe(C=C).fit(tr.x[torch.as_tensor(biased)], ya_tr[biased])
        p_a = LinearProbe(C=C).fit(tr.x, ya_tr)
        p_b = LinearProbe(C=C).fit(tr.x, yb_tr)
        orig_a, orig_b = p_bias.score(te.x, ya_te), p_bias.score(te.x, yb_te)
        oracle_a, oracle_b = p_a.score(te.x, ya_te), p_b.score(te.x, yb_te)
        e_b = effects(tr.c, yb_tr, p_b.w_raw[0], W_dec, kind="scr")
        e_a = effects(tr.c, ya_tr, p_a.w_raw[0], W_dec, kind="scr")
        r: dict = {"n_train": len(ya_tr), "n_test": len(ya_te), "n_biased_train": int(biased.sum()),
                   "biased_probe_acc_on_A": orig_a, "biased_probe_acc_on_B": orig_b,
                   "oracle_acc_A": oracle_a, "oracle_acc_B": oracle_b,
                   "attribute_A": dataset, "attribute_B": list(pair)}
        for n in n_values:
            S1, S2 = select_top_n(e_b, n), select_top_n(e_a, n)
            ch_a = p_bias.score(ablate(te.x, te.c, W_dec, S1), ya_te)
            ch_b = p_bias.score(ablate(te.x, te.c, W_dec, S2), yb_te)
            s1, s2 = scr_score(ch_a, orig_a, oracle_a), scr_score(ch_b, orig_b, oracle_b)
            r[f"scr_dir1_top_{n}"], r[f"scr_dir2_top_{n}"] = s1, s2
            r[f"acc_A_after_ablating_B_top_{n}"] = ch_a
            r[f"acc_B_after_ablating_A_top_{n}"] = ch_b
            r[f"scr_metric_top_{n}"] = s1 if orig_a < orig_b else s2
            r[f"latents_B_top_{n}"] = [int(i) for i in S1]
        results[f"{pair[0]}/{pair[1]}"] = r
    out: dict = {"layer": layer, "site": site, "seed": seed, "n_examples": n_examples,
                 "dataset": dataset, "n_values": list(n_values), "pairs": results}
    for n in n_values:
        out[f"scr_metric_top_{n}"] = float(np.mean([r[f"scr_metric_top_{n}"]
                                                    for r in results.values()]))
    out["summary"] = out[f"scr_metric_top_{max(n_values)}"]
    return out


def _one_vs_rest(y: np.ndarray, i: int, rng: np.random.Generator) -> np.ndarray:
    """Indices: all of class i and as many others drawn uniformly without replacement."""
    pos = np.where(y == i)[0]
    others = np.where(y != i)[0]
    neg = others[rng.permutation(len(others))[: len(pos)]]
    return np.sort(np.concatenate([pos, neg]))


def run_tpp(sae, model, tokenizer, *, device: str = "cpu", n_examples: int = 800, seed: int = 0,
            dataset: str = "source", n_values: Sequence[int] = N_VALUES,
            layer: int | None = None, site: str | None = None, batch_size: int = 32,
            max_length: int = 128, C: float = 1.0, test_fraction: float = 0.25,
            progress: bool = True, log=print) -> dict:
    """TPP of ``sae`` (module docstring) on a multi-class task (``n_examples`` balanced)."""
    layer, site = resolve_hook(sae, layer, site)
    kw = dict(layer=layer, site=site, device=device, batch_size=batch_size,
              max_length=max_length, progress=progress)
    data = load_task_data(dataset, n_examples, seed, test_fraction=test_fraction, log=log)
    m = len(data.classes)
    if m < 2:
        raise ValueError(f"TPP needs ≥ 2 classes, {dataset!r} has {data.classes}")
    tr = _pool(sae, model, tokenizer, data.train_texts, "tpp train", **kw)
    te = _pool(sae, model, tokenizer, data.test_texts, "tpp test", **kw)
    W_dec = _dec(sae)
    rng = np.random.default_rng(seed + 2)
    probes, test_idx, clean, eff = [], [], [], []
    for i in range(m):
        itr = _one_vs_rest(data.train_y, i, rng)
        ite = _one_vs_rest(data.test_y, i, rng)
        ytr = (data.train_y[itr] == i).astype(np.int64)
        p = LinearProbe(C=C).fit(tr.x[torch.as_tensor(itr)], ytr)
        probes.append(p)
        test_idx.append((ite, (data.test_y[ite] == i).astype(np.int64)))
        clean.append(p.score(te.x[torch.as_tensor(ite)], test_idx[-1][1]))
        t_itr = torch.as_tensor(itr)
        eff.append(effects(tr.c[t_itr], ytr, p.w_raw[0], W_dec, kind="tpp", a=tr.a[t_itr]))
    out: dict = {"layer": layer, "site": site, "seed": seed, "n_examples": n_examples,
                 "dataset": dataset, "classes": data.classes, "n_values": list(n_values),
                 "clean_accuracy": dict(zip(data.classes, clean, strict=True))}
    per_class: dict[str, dict] = {c: {} for c in data.classes}
    for n in n_values:
        abl = np.zeros((m, m))
        for i in range(m):
            S = select_top_n(eff[i], n)
            xa = ablate(te.x, te.c, W_dec, S)
            for j in range(m):
                idx, yj = test_idx[j]
                abl[i, j] = probes[j].score(xa[torch.as_tensor(idx)], yj)
            per_class[data.classes[i]][f"latents_top_{n}"] = [int(s) for s in S]
        sc = tpp_scores(clean, abl)
        out[f"tpp_top_{n}_total_metric"] = sc["total"]
        out[f"tpp_top_{n}_intended_diff_only"] = sc["intended"]
        out[f"tpp_top_{n}_unintended_diff_only"] = sc["unintended"]
        for i, c in enumerate(data.classes):
            per_class[c][f"acc_after_ablation_top_{n}"] = dict(
                zip(data.classes, [float(v) for v in abl[i]], strict=True))
    out["per_class"] = per_class
    out["summary"] = out[f"tpp_top_{max(n_values)}_total_metric"]
    return out
