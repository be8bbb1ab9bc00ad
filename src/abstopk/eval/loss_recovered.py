"""Loss recovered and KL: splice the SAE's reconstruction into the real language model.

For each held-out context ``t`` [T] (token ids) the LM runs once per *run* below (one batch
of contexts at a time), with the activation at the SAE's ``(layer, site)`` replaced by:

=================  ==========================================  ===============================
run                activation at the hook                      reported
=================  ==========================================  ===============================
clean              x (unchanged)                               ``ce_clean``
spliced            x̂ = SAE(x)                                  ``ce_spliced``, ``kl``
zero-ablated       0                                           ``ce_zero_ablated``
mean-ablated       μ, the mean activation (see below)          ``ce_mean_ablated``
=================  ==========================================  ===============================

Cross-entropy is over the predicted tokens: positions 0 … T−2 predict tokens 1 … T−1,
averaged over all predicted positions of all contexts. With ``p`` the clean and ``q`` the
spliced next-token distributions::

    loss_recovered               = (CE_zero − CE_spliced) / (CE_zero − CE_clean)
    loss_recovered_mean_ablation = (CE_mean − CE_spliced) / (CE_mean − CE_clean)
    kl                           = mean over predicted positions of Σ_v p_v (log p_v − log q_v)

so an SAE that reconstructs exactly scores 1 and one that outputs 0 (resp. μ) scores 0.
Zero ablation is the paper's baseline (and the headline); it is easy to beat — replacing the
residual stream by zeros destroys the model, so even a random SAE scores well above 0 —
while mean ablation keeps the stream's offset and asks how much of the *variation* the SAE
carries.

**μ (mean ablation)**: the mean, over every position of the evaluation contexts that the
SAE replaces (BOS/pad excluded, see below), of the activation at ``(layer, site)`` as the
harvest computes it (:func:`abstopk.lm.hooks.run_to_layer`) — i.e. over the *same* held-out
contexts the CE is measured on (``mean_ablation_source = "evaluation contexts"``), unless a
vector is given (``mean_activation``; then ``"given"``).

**Confidence intervals**: a percentile bootstrap over contexts. ``B`` resamples (default
1000, ``numpy.random.default_rng(seed)``, seed 0) draw C contexts with replacement from the
C evaluated ones; each statistic is recomputed from the resampled per-context CE/KL sums
(ratios of sums, as the point estimate); the interval is the (α/2, 1 − α/2) quantiles,
α = 1 − level (level 0.95). Keys ``*_ci`` = ``[lo, hi]``; ``bootstrap`` records B, seed,
level and the unit (``"context"``).

**Site check** (replaces the old "error kept" run x̂ + (x − x̂), which equals clean for any
x̂ and so could not fail): during the clean run the hook records the activation it would
replace; per position, its norm and coordinate sum must equal those of the activation the
harvest route gives for the same tokens, to 1e-3 relative to that position's norm. A splice
at another layer, site or position does not (tested), so ``site_check_max_rel_diff`` ≤ 1e-3
or a ``RuntimeError``.

BOS handling: an SAE trained on a cache harvested without BOS positions (the default,
``keep_bos = false``: the BOS residual is a huge outlier the SAE never saw) is not asked to
reconstruct them — positions holding a BOS (or pad) token keep their clean activation in the
spliced, zero- and mean-ablated runs alike, so those runs differ from clean only where the
SAE applies. Set ``splice_bos=True`` to replace every position (for SAEs trained with
``keep_bos``).

Positions left out (``min_position`` p > 0): the positions below p of every context keep
their clean activation in the spliced, zero- and mean-ablated runs alike (and μ is the mean
over the positions that are replaced), so an SAE trained without them (``abstopk train
--min-position p``: position 0 is the attention sink of mid layers) is asked only about the
positions it was trained on. CE is still over every predicted token: the replaced positions
change the later predictions through attention. The result records ``lr_min_position``.

Several SAEs at the same hook (a sweep) are evaluated in one call: the clean and ablated runs
do not depend on the SAE and are computed once per batch for all of them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch import Tensor

from .lr_stats import BOOTSTRAP_RESAMPLES, LossRecoveredAccumulator

__all__ = ["BOOTSTRAP_RESAMPLES", "LossRecoveredAccumulator", "SITE_CHECK_TOL",
           "evaluate_loss_recovered", "predicted_token_ce_kl"]

#: the largest relative difference the site check accepts
SITE_CHECK_TOL = 1e-3


def predicted_token_ce_kl(
    logits: Tensor, tokens: Tensor, ref_logprobs: Tensor | None = None
) -> tuple[Tensor, Tensor | None, Tensor]:
    """Per-position CE and (optionally) KL(ref ‖ this) over predicted tokens.

    logits: [B, T, V]; tokens: [B, T]; ref_logprobs: [B, T−1, V] log-probs of the reference.
    Returns (ce [B, T−1], kl [B, T−1] or None, logprobs [B, T−1, V]).
    """
    lp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    ce = -lp.gather(-1, tokens[:, 1:, None].to(lp.device)).squeeze(-1)
    kl = None
    if ref_logprobs is not None:
        kl = (ref_logprobs.exp() * (ref_logprobs - lp)).sum(-1)
    return ce, kl, lp


def batch_contexts(contexts: Iterable[Tensor], batch_size: int, n_contexts: int | None):
    """Stack token contexts ([T] each, or [n, T] blocks) into [≤ batch_size, T] batches,
    stopping after ``n_contexts`` contexts (None: all)."""
    buf: list[Tensor] = []
    seen = 0
    for c in contexts:
        if n_contexts is not None and seen >= n_contexts:
            break
        c = torch.as_tensor(c)
        rows = c.unsqueeze(0) if c.dim() == 1 else c
        for r in rows:
            if n_contexts is not None and seen >= n_contexts:
                break
            buf.append(r)
            seen += 1
            if len(buf) == batch_size:
                yield torch.stack(buf)
                buf = []
    if buf:
        yield torch.stack(buf)


def _fingerprint(acts: Tensor) -> Tensor:
    """[B, T, 2]: norm and coordinate sum of each position's activation (float64)."""
    a = acts.double()
    return torch.stack([a.norm(dim=-1), a.sum(-1)], -1)


@torch.no_grad()
def evaluate_loss_recovered(
    saes,
    model,
    contexts: Iterable[Tensor],
    *,
    layer: int,
    site: str = "resid_post",
    n_contexts: int | None = None,
    batch_size: int = 4,
    skip_token_ids: Iterable[int] | None = None,
    splice_bos: bool = False,
    min_position: int = 0,
    mean_ablation: bool = True,
    mean_activation: Tensor | None = None,
    bootstrap_resamples: int = BOOTSTRAP_RESAMPLES,
    bootstrap_seed: int = 0,
    progress: bool = False,
) -> dict[str, Any]:
    """CE clean / spliced / zero- and mean-ablated, loss recovered and KL over held-out
    ``contexts``, with bootstrap intervals over contexts, for one SAE or for several at once.

    Per batch of contexts the clean and the ablated LM runs are done once and shared by every
    SAE; each SAE adds one spliced run. Every SAE's numbers are exactly those it gets when
    evaluated alone. A truncated forward per batch (to the SAE's layer) gives μ and the site
    check (module docstring).

    Args:
        saes: an :class:`abstopk.sae.SAE` (inference rule; batch-level variants use their
            threshold), or a mapping name → SAE.
        model: the LM (``model(input_ids).logits`` [B, T, V]), as loaded by
            :func:`abstopk.lm.load_model`.
        contexts: iterable of LongTensor [T] (or [B, T]) token ids, e.g.
            ``abstopk.data.tokens.iter_contexts(tok, split="heldout")``.
        layer, site: where the SAEs read (and where x̂ is written back).
        n_contexts: stop after this many contexts (None: all).
        skip_token_ids: positions holding one of these tokens (BOS, pad: what harvesting
            drops) keep their clean activation unless ``splice_bos`` (module docstring).
        min_position: the positions below it keep their clean activation too (module
            docstring, "Positions left out").
        mean_ablation: also run the mean-ablated baseline; ``mean_activation`` [d] gives μ
            (default: the mean over the evaluation contexts' replaced positions).
        bootstrap_resamples, bootstrap_seed: the intervals (0 resamples: none).

    Returns, for one SAE, a dict with ``ce_clean, ce_spliced, ce_zero_ablated,
    ce_mean_ablated, loss_recovered, loss_recovered_mean_ablation, kl, kl_zero_ablated,
    kl_mean_ablated``, the intervals ``loss_recovered_ci, loss_recovered_mean_ablation_ci,
    kl_ci``, ``bootstrap``, ``mean_ablation_source``, ``site_check_max_rel_diff`` and the
    counts ``lr_contexts, lr_predicted_tokens``; for a mapping, {name: that dict}.
    """
    from ..lm.hooks import replace_activation, run_to_layer
    from .metrics import sae_reconstruct

    single = not isinstance(saes, Mapping)
    named = {"sae": saes} if single else dict(saes)
    if not named:
        raise ValueError("no SAEs to evaluate")
    accs = {name: LossRecoveredAccumulator() for name in named}
    skip_ids = None
    if skip_token_ids is not None:
        skip_ids = torch.tensor(sorted({int(i) for i in skip_token_ids}), dtype=torch.long)
    dev = next(model.parameters()).device
    batches = list(batch_contexts(contexts, batch_size, n_contexts))
    if not batches:
        raise ValueError("no contexts to evaluate")
    if any(b.shape[1] < 2 for b in batches):
        raise ValueError("contexts need at least 2 tokens to predict one")

    if isinstance(min_position, bool) or not isinstance(min_position, int) or min_position < 0:
        raise ValueError(f"min_position must be an integer >= 0, got {min_position!r}")
    if min_position >= (shortest := min(b.shape[1] for b in batches)):
        raise ValueError(f"min_position {min_position} leaves no position of the "
                         f"{shortest}-token contexts to replace")

    def keep_mask(tokens: Tensor) -> Tensor:
        keep = torch.zeros_like(tokens, dtype=torch.bool)
        if skip_ids is not None and not splice_bos:
            keep = torch.isin(tokens, skip_ids.to(tokens.device))
        keep[:, :min_position] = True
        return keep

    was_training = model.training
    model.eval()
    n_ablated = 2 if mean_ablation else 1
    total = sum(b.shape[0] for b in batches) * (1 + n_ablated + len(named)) + \
        sum(b.shape[0] for b in batches)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, desc="loss recovered", unit="fwd", leave=False)
    try:
        # pass 1 (truncated forwards): the activations as harvested → μ and fingerprints
        fingerprints: list[Tensor] = []
        mu_sum, mu_n = None, 0
        for tokens in batches:
            tokens = tokens.to(dev)
            acts = run_to_layer(model, tokens, layers=layer, site=site)[layer]
            fingerprints.append(_fingerprint(acts))
            if mean_ablation and mean_activation is None:
                rows = acts[~keep_mask(tokens)].double()
                mu_sum = rows.sum(0) if mu_sum is None else mu_sum + rows.sum(0)
                mu_n += rows.shape[0]
            if bar is not None:
                bar.update(tokens.shape[0])
        mu = None
        if mean_ablation:
            if mean_activation is not None:
                mu, mu_source = torch.as_tensor(mean_activation).to(dev), "given"
            elif mu_n == 0:
                raise ValueError("every position of the evaluation contexts is BOS/pad: no "
                                 "activation to average for mean ablation")
            else:
                mu, mu_source = (mu_sum / mu_n).float(), "evaluation contexts"

        worst = 0.0
        for tokens, fp in zip(batches, fingerprints, strict=True):
            tokens = tokens.to(dev)
            keep = keep_mask(tokens)
            nb = tokens.shape[0]
            seen: dict[str, Tensor] = {}

            def record(acts: Tensor, seen=seen) -> None:
                seen["x"] = acts.detach()

            with replace_activation(model, layer, site, record):
                logits = model(input_ids=tokens, use_cache=False).logits
            ce_c, _, ref = predicted_token_ce_kl(logits, tokens)
            del logits
            if "x" not in seen:
                raise RuntimeError(f"site {site} of layer {layer} was never reached")
            got = _fingerprint(seen.pop("x"))
            norm = fp[..., 0].clamp_min(1e-6 * float(fp[..., 0].max()) + 1e-30)
            worst = max(worst, float(((got - fp).abs().amax(-1) / norm).max()))
            runs = {"zero_ablated": torch.zeros_like}
            if mu is not None:
                runs["mean_ablated"] = lambda flat: mu.to(flat.dtype).expand_as(flat)
            shared = {}
            for run, fn in runs.items():
                ce_r, kl_r, _ = predicted_token_ce_kl(
                    _spliced_logits(model, layer, site, tokens, keep, fn), tokens, ref)
                shared[run] = (ce_r, kl_r)
            if bar is not None:
                bar.update((1 + len(runs)) * nb)
            for name, sae in named.items():
                acc = accs[name]
                acc.add("clean", ce_c)
                for run, (ce_r, kl_r) in shared.items():
                    acc.add(run, ce_r, kl_r)

                def recon(flat: Tensor, sae=sae) -> Tensor:
                    return sae_reconstruct(sae, flat)[0]

                ce_s, kl_s, _ = predicted_token_ce_kl(
                    _spliced_logits(model, layer, site, tokens, keep, recon), tokens, ref)
                acc.add("spliced", ce_s, kl_s)
                if bar is not None:
                    bar.update(nb)
    finally:
        model.train(was_training)
        if bar is not None:
            bar.close()
    if worst > SITE_CHECK_TOL:
        raise RuntimeError(
            f"site check failed: the activation at layer {layer} {site} seen by the splice "
            f"hook differs from the harvested one (max relative difference {worst:.3g})")
    extra = {"site_check_max_rel_diff": worst, "lr_min_position": min_position}
    if mu is not None:
        extra["mean_ablation_source"] = mu_source
        extra["mean_ablation_positions"] = mu_n if mean_activation is None else None
    res = {name: {**acc.result(resamples=bootstrap_resamples, seed=bootstrap_seed), **extra}
           for name, acc in accs.items()}
    return res["sae"] if single else res


def _spliced_logits(model, layer: int, site: str, tokens: Tensor, keep: Tensor,
                    fn: Callable[[Tensor], Tensor]) -> Tensor:
    """Logits [B, T, V] of ``model`` on ``tokens`` [B, T] with the activation at
    ``(layer, site)`` replaced by ``fn(activation rows [B·T, d])`` except where ``keep``
    [B, T] is True (those positions keep their clean activation)."""
    from ..lm.hooks import replace_activation

    def hook(acts: Tensor) -> Tensor:
        flat = acts.reshape(-1, acts.shape[-1])
        new = fn(flat).to(device=flat.device, dtype=flat.dtype).reshape(acts.shape)
        return torch.where(keep[..., None], acts, new)

    with replace_activation(model, layer, site, hook):
        return model(input_ids=tokens, use_cache=False).logits
