"""Feature absorption on the first-letter task (Chanin et al.; SAEBench ``absorption``), sign-aware.

Data — the tokenizer's own vocabulary, no external data: every token that decodes to a space
followed by ASCII letters only, at least ``min_len`` (3) letters (SmolLM2: 30,570 words).
A deterministic sample stratified by first letter (at most ``ceil(n_words / 26)`` per letter)
is split 70/30 per letter into probe-train and evaluation words. Each word is read in context:
``[BOS] + tokens("The first letter of the word") + [word token]``; all prompts have the same
length, and the activation is taken at the word token (the SAE's layer and site).

Ground truth — a multinomial logistic probe (:class:`.probes.LinearProbe`) for the first
letter on the raw activations of the train words; letters with fewer than
``min_words_per_letter`` train words are dropped. Probe direction of letter L:
``ŵ_L = w_raw[L] / ‖w_raw[L]‖``.

Main latents — per letter, the ``n_main`` latents whose decoder rows are best aligned with
``ŵ_L``: ranked by ``|cos(W_dec[i], ŵ_L)|`` for signed SAEs (a latent may encode the letter
with negative activations: firing ``z_i < 0`` with ``cos < 0`` moves the reconstruction along
``+ŵ_L``), by ``cos`` for non-negative SAEs (a ReLU latent can only add ``+W_dec[i]``).

Per evaluation word of letter L that the probe classifies correctly, with ``z`` the SAE code of
its activation ``x``, ``g`` the denormalisation gain and ``b̂ = x̂ − g·z W_dec`` the bias part
of the reconstruction:

* latent projections ``p_i = g·z_i·(W_dec[i]·ŵ_L)`` (sign-invariant: flipping the sign of a
  latent's code and decoder row leaves ``p_i`` unchanged); total ``P = (x − b̂)·ŵ_L``;
* the main latents *fire for L* iff some main ``p_m > 0`` (``z_m ≠ 0`` with the sign of its
  cosine);
* **full absorption** (Chanin): no main latent fires for L, ``P > 0``, and the non-main latent
  ``j`` with the largest ``p_j`` has ``|cos_j| ≥ 0.025`` and ``p_j ≥ 0.4·P``;
* **absorption fraction** (Till, as in SAEBench): absorbers = non-main latents with
  ``|cos_i| ≥ 0.1`` and ``p_i > 0``; ``A`` = the sum of the 3 largest absorber ``p_i``;
  ``M = Σ_main p_m``. Fraction = 0 if ``M ≥ P`` or ``A < 0.4·P``; 1 if ``M ≤ 0``; else
  ``a/(a + M)`` with ``a = min(A, P − M)``.

Scores are averaged over words per letter, then over letters (SAEBench's aggregation):
``mean_full_absorption_rate``, ``mean_absorption_fraction`` (the ``summary``; lower is better)
and ``main_latent_miss_rate`` (correct words whose main latents do not fire for the letter).
SAEBench differs in: an ICL prompt, main latents from k-sparse probing, larger models/SAEs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from .activations import eval_mode, resolve_hook
from .probes import LinearProbe

__all__ = ["PREFIX", "absorption_scores", "first_letter_vocab", "main_latents",
           "run_absorption", "word_absorption"]

PREFIX = "The first letter of the word"
FULL_COS = 0.025
FRACTION_COS = 0.1
PROJ_PROPORTION = 0.4
MAX_ABSORBERS = 3


def first_letter_vocab(tokenizer, min_len: int = 3) -> list[tuple[int, str]]:
    """``[(token id, word)]`` for vocabulary tokens decoding to ``" " + letters`` (ASCII,
    ≥ ``min_len`` letters); ``word`` without the space, in token-id order."""
    V = len(tokenizer)
    dec = tokenizer.batch_decode([[i] for i in range(V)])
    out = []
    for i, s in enumerate(dec):
        w = s[1:]
        if s.startswith(" ") and len(w) >= min_len and w.isascii() and w.isalpha():
            out.append((i, w))
    return out


def main_latents(W_dec: torch.Tensor, direction: torch.Tensor, n_main: int = 1,
                 signed: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(indices [n_main], cosines [d_sae]) of the latents best aligned with ``direction``.

    Rank by ``|cos|`` if ``signed`` else by ``cos``; ties by lower index.
    """
    W = W_dec.detach().float()
    d = direction.detach().float().to(W.device)
    cos = (W @ d) / (W.norm(dim=1).clamp_min(1e-12) * d.norm().clamp_min(1e-12))
    cos = cos.cpu().numpy().astype(np.float64)
    key = np.abs(cos) if signed else cos
    order = np.lexsort((np.arange(len(key)), -key))
    return order[:n_main], cos


def word_absorption(p: np.ndarray, P: float, main: Sequence[int], cos: np.ndarray
                    ) -> tuple[bool, bool, float]:
    """(main fires for the letter, full absorption, absorption fraction) for one word.

    ``p`` [d_sae] latent projections onto the probe direction, ``P`` the total projection,
    ``main`` the main latent indices, ``cos`` [d_sae] decoder–probe cosines (module doc).
    """
    p = np.asarray(p, dtype=np.float64)
    main = np.asarray(main, dtype=np.int64)
    fires = bool((p[main] > 0).any())
    other = np.ones(len(p), dtype=bool)
    other[main] = False
    # full absorption (single absorbing latent)
    full = False
    if not fires and P > 0 and other.any():
        cand = np.where(other, p, -np.inf)
        j = int(np.argmax(cand))
        full = bool(abs(cos[j]) >= FULL_COS and p[j] >= PROJ_PROPORTION * P)
    # absorption fraction
    M = float(p[main].sum())
    ab = other & (np.abs(cos) >= FRACTION_COS) & (p > 0)
    A = float(np.sort(p[ab])[::-1][:MAX_ABSORBERS].sum()) if ab.any() else 0.0
    if P <= 0 or M >= P or A < PROJ_PROPORTION * P:
        frac = 0.0
    elif M <= 0:
        frac = 1.0
    else:
        a = min(A, P - M)
        frac = float(np.clip(a / (a + M), 0.0, 1.0))
    return fires, full, frac


def absorption_scores(per_letter: dict[str, list[tuple[bool, bool, float]]]) -> dict:
    """Average word results per letter, then over letters."""
    rows = {L: v for L, v in per_letter.items() if v}
    if not rows:
        return {"mean_full_absorption_rate": float("nan"), "mean_absorption_fraction": float("nan"),
                "main_latent_miss_rate": float("nan"), "n_letters": 0}
    full = [float(np.mean([w[1] for w in v])) for v in rows.values()]
    frac = [float(np.mean([w[2] for w in v])) for v in rows.values()]
    miss = [float(np.mean([not w[0] for w in v])) for v in rows.values()]
    return {"mean_full_absorption_rate": float(np.mean(full)),
            "mean_absorption_fraction": float(np.mean(frac)),
            "main_latent_miss_rate": float(np.mean(miss)), "n_letters": len(rows)}


def _word_sample(vocab: list[tuple[int, str]], n_words: int, seed: int
                 ) -> tuple[list[tuple[int, str]], list[tuple[int, str]]]:
    by: dict[str, list[tuple[int, str]]] = {}
    for i, w in vocab:
        by.setdefault(w[0].lower(), []).append((i, w))
    cap = max(2, math.ceil(n_words / 26))
    rng = np.random.default_rng(seed)
    train, test = [], []
    for L in sorted(by):
        items = by[L]
        pick = [items[j] for j in rng.permutation(len(items))[:cap]]
        k = int(round(0.3 * len(pick)))
        test += pick[:k]
        train += pick[k:]
    return train, test


@torch.no_grad()
def _word_acts(model, tokenizer, words: list[tuple[int, str]], layer: int, site: str,
               device, batch_size: int, progress: bool) -> torch.Tensor:
    from ...data.tokens import bos_token_id
    from ...lm.hooks import run_to_layer

    prefix = [bos_token_id(tokenizer)] + tokenizer(PREFIX, add_special_tokens=False)["input_ids"]
    out = []
    it = range(0, len(words), batch_size)
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(it, desc="absorption words", unit="batch", leave=False)
    for s in it:
        ids = torch.tensor([prefix + [i] for i, _ in words[s: s + batch_size]])
        acts = run_to_layer(model, ids.to(device), None, layers=[layer], site=site)[layer]
        out.append(acts[:, -1].float().cpu())
    return torch.cat(out) if out else torch.zeros(0, 0)


@torch.no_grad()
def run_absorption(sae, model, tokenizer, *, device: str = "cpu", n_words: int = 1000,
                   seed: int = 0, layer: int | None = None, site: str | None = None,
                   n_main: int = 1, min_words_per_letter: int = 8, batch_size: int = 64,
                   C: float = 1.0, progress: bool = True, log=print) -> dict:
    """First-letter absorption of ``sae`` (definitions in the module docstring)."""
    layer, site = resolve_hook(sae, layer, site)
    vocab = first_letter_vocab(tokenizer)
    train, test = _word_sample(vocab, n_words, seed)
    X = _word_acts(model, tokenizer, train + test, layer, site, device, batch_size, progress)
    Xtr, Xte = X[: len(train)], X[len(train):]
    ytr = np.array([w[0].lower() for _, w in train])
    yte = np.array([w[0].lower() for _, w in test])
    counts = {L: int((ytr == L).sum()) for L in sorted(set(ytr))}
    letters = [L for L, c in counts.items() if c >= min_words_per_letter]
    keep_tr = np.isin(ytr, letters)
    keep_te = np.isin(yte, letters)
    probe = LinearProbe(C=C).fit(Xtr[keep_tr], ytr[keep_tr])
    Xte, yte = Xte[keep_te], yte[keep_te]
    pred = probe.predict(Xte)
    W = torch.as_tensor(probe.w_raw, dtype=torch.float32)        # [n_letters, d_in]
    signed = bool(getattr(getattr(sae, "op", None), "signed", True))
    with eval_mode(sae):
        out = sae.forward(Xte.to(device=sae.device, dtype=sae.dtype))
        z = out.z.float()
        if sae.cfg.normalize_activations == "layer_norm":
            g = Xte.float().std(-1, keepdim=True).to(z.device) + 1e-5
        elif sae.cfg.normalize_activations == "scalar":
            g = torch.full((len(z), 1), 1.0 / float(sae.input_scale), device=z.device)
        else:
            g = torch.ones(len(z), 1, device=z.device)
        W_dec = sae.W_dec.detach().float()
        recon_lat = (g * z) @ W_dec                               # [n, d_in]
        bias_part = out.x_hat.float() - recon_lat                 # b̂
    per_letter: dict[str, list[tuple[bool, bool, float]]] = {L: [] for L in letters}
    mains: dict[str, list[int]] = {}
    for li, L in enumerate(probe.classes):
        w_hat = W[li] / W[li].norm().clamp_min(1e-12)
        main, cos = main_latents(W_dec, w_hat, n_main, signed)
        mains[str(L)] = [int(i) for i in main]
        rows = np.where((yte == L) & (pred == L))[0]
        if len(rows) == 0:
            continue
        dw = (W_dec @ w_hat.to(W_dec.device))                     # [d_sae]
        r = torch.as_tensor(rows)
        p = ((g[r] * z[r]) * dw).cpu().numpy().astype(np.float64)
        P = ((Xte[r].to(z.device) - bias_part[r]) @ w_hat.to(z.device)).cpu().numpy()
        for k in range(len(rows)):
            per_letter[str(L)].append(word_absorption(p[k], float(P[k]), main, cos))
    res = absorption_scores(per_letter)
    res.update({
        "layer": layer, "site": site, "seed": seed, "n_words": len(train) + len(test),
        "n_vocab_words": len(vocab), "probe_test_accuracy": float((pred == yte).mean()),
        "n_eval_words": int(sum(len(v) for v in per_letter.values())),
        "n_main": n_main, "signed_ranking": signed, "main_latents": mains,
        "per_letter_absorption_fraction": {L: float(np.mean([w[2] for w in v]))
                                           for L, v in per_letter.items() if v},
    })
    res["summary"] = res["mean_absorption_fraction"]
    return res
