"""Loss recovered and KL: splice the SAE's reconstruction into the real language model.

For each held-out context ``t`` [T] (token ids) the LM is run four times (one batch at a
time), with the activation at the SAE's ``(layer, site)`` replaced by:

=================  ===================================  ====================================
run                activation at the hook               reported
=================  ===================================  ====================================
clean              x (unchanged)                        ``ce_clean``
spliced            x̂ = SAE(x)                           ``ce_spliced``, ``kl``
zero-ablated       0                                    ``ce_zero_ablated``
error kept         x̂ + (x − x̂)  (sanity: = clean)       ``ce_error_kept``, ``kl_error_kept``
=================  ===================================  ====================================

Cross-entropy is over the predicted tokens: positions 0 … T−2 predict tokens 1 … T−1,
averaged over all predicted positions of all contexts. With ``p`` the clean and ``q`` the
spliced next-token distributions::

    loss_recovered = (CE_zero − CE_spliced) / (CE_zero − CE_clean)
    kl             = mean over predicted positions of Σ_v p_v (log p_v − log q_v)

so an SAE that reconstructs exactly scores 1 and one that outputs 0 scores 0.

BOS handling: an SAE trained on a cache harvested without BOS positions (the default,
``keep_bos = false``: the BOS residual is a huge outlier the SAE never saw) is not asked to
reconstruct them — positions holding a BOS (or pad) token keep their clean activation in
the spliced, zero-ablated and error-kept runs alike, so those runs differ from clean only
where the SAE applies. Set ``splice_bos=True`` to replace every position (for SAEs trained
with ``keep_bos``).

Several SAEs at the same hook (a sweep) are evaluated in one call: the clean and zero-ablated
runs do not depend on the SAE and are computed once per batch for all of them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch import Tensor

__all__ = ["LossRecoveredAccumulator", "evaluate_loss_recovered", "predicted_token_ce_kl"]


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


class LossRecoveredAccumulator:
    """Sums of per-token CE (and KL) per run; :meth:`result` gives the summary dict."""

    RUNS = ("clean", "spliced", "zero_ablated", "error_kept")

    def __init__(self) -> None:
        self.n_pred = 0
        self.n_contexts = 0
        self.ce = dict.fromkeys(self.RUNS, 0.0)
        self.kl = {"spliced": 0.0, "zero_ablated": 0.0, "error_kept": 0.0}
        self.seen: set[str] = set()

    def add(self, run: str, ce: Tensor, kl: Tensor | None = None) -> None:
        self.ce[run] += float(ce.double().sum())
        if kl is not None:
            self.kl[run] += float(kl.double().sum())
        self.seen.add(run)

    def result(self) -> dict[str, Any]:
        if self.n_pred == 0:
            raise ValueError("no predicted tokens were evaluated")
        n = self.n_pred
        ce = {r: self.ce[r] / n for r in self.RUNS if r in self.seen}
        out: dict[str, Any] = {
            "ce_clean": ce["clean"],
            "ce_spliced": ce["spliced"],
            "ce_zero_ablated": ce["zero_ablated"],
            "kl": self.kl["spliced"] / n,
            "kl_zero_ablated": self.kl["zero_ablated"] / n,
            "lr_contexts": self.n_contexts,
            "lr_predicted_tokens": n,
        }
        denom = ce["zero_ablated"] - ce["clean"]
        out["loss_recovered"] = (
            (ce["zero_ablated"] - ce["spliced"]) / denom if denom != 0 else float("nan")
        )
        if "error_kept" in ce:
            out["ce_error_kept"] = ce["error_kept"]
            out["kl_error_kept"] = self.kl["error_kept"] / n
        return out


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
    with_error_term: bool = True,
    progress: bool = False,
) -> dict[str, Any]:
    """CE clean / spliced / zero-ablated, loss recovered and KL over held-out ``contexts``,
    for one SAE or for several at once.

    Per batch of contexts the clean and the zero-ablated LM runs are done once and shared by
    every SAE; each SAE adds one spliced run (and one error-kept run with
    ``with_error_term``). Every SAE's numbers are exactly those it gets when evaluated alone.

    Args:
        saes: an :class:`abstopk.sae.SAE` (inference rule; batch-level variants use their
            threshold), or a mapping name → SAE.
        model: the LM (``model(input_ids).logits`` [B, T, V]), as loaded by
            :func:`abstopk.lm.load_model`.
        contexts: iterable of LongTensor [T] (or [B, T]) token ids, e.g.
            ``abstopk.data.loader.iter_contexts(tok, split="heldout")``.
        layer, site: where the SAEs read (and where x̂ is written back).
        n_contexts: stop after this many contexts (None: all).
        skip_token_ids: positions holding one of these tokens (BOS, pad: what harvesting
            drops) keep their clean activation unless ``splice_bos`` (see the module
            docstring).
        with_error_term: also run x̂ + (x − x̂) (the sanity run that must equal clean).

    Returns, for one SAE, a dict with ``ce_clean, ce_spliced, ce_zero_ablated,
    loss_recovered, kl`` (+ ``kl_zero_ablated``, ``ce_error_kept``, ``kl_error_kept``,
    counts); for a mapping, {name: that dict}.
    """
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
    runs_per_sae = 2 if with_error_term else 1
    bar = None
    if progress:
        from tqdm.auto import tqdm

        total = None if n_contexts is None else n_contexts * (2 + runs_per_sae * len(named))
        bar = tqdm(total=total, desc="loss recovered", unit="fwd", leave=False)

    def reconstruction(sae) -> Callable[[Tensor], Tensor]:
        return lambda flat: sae_reconstruct(sae, flat)[0]

    def error_kept(sae) -> Callable[[Tensor], Tensor]:
        def fn(flat: Tensor) -> Tensor:
            x_hat = sae_reconstruct(sae, flat)[0].to(device=flat.device, dtype=flat.dtype)
            return x_hat + (flat - x_hat)

        return fn

    was_training = model.training
    model.eval()
    try:
        for tokens in batch_contexts(contexts, batch_size, n_contexts):
            tokens = tokens.to(dev)
            if tokens.shape[1] < 2:
                raise ValueError("contexts need at least 2 tokens to predict one")
            if skip_ids is not None and not splice_bos:
                keep = torch.isin(tokens, skip_ids.to(dev))
            else:
                keep = torch.zeros_like(tokens, dtype=torch.bool)
            nb = tokens.shape[0]
            ce_c, _, ref = predicted_token_ce_kl(
                model(input_ids=tokens, use_cache=False).logits, tokens)
            ce_z, kl_z, _ = predicted_token_ce_kl(
                _spliced_logits(model, layer, site, tokens, keep, torch.zeros_like), tokens, ref)
            if bar is not None:
                bar.update(2 * nb)
            for name, sae in named.items():
                acc = accs[name]
                acc.add("clean", ce_c)
                acc.add("zero_ablated", ce_z, kl_z)
                fns = {"spliced": reconstruction(sae)}
                if with_error_term:
                    fns["error_kept"] = error_kept(sae)
                for run, fn in fns.items():
                    ce_r, kl_r, _ = predicted_token_ce_kl(
                        _spliced_logits(model, layer, site, tokens, keep, fn), tokens, ref)
                    acc.add(run, ce_r, kl_r)
                acc.n_pred += ce_c.numel()
                acc.n_contexts += nb
                if bar is not None:
                    bar.update(runs_per_sae * nb)
    finally:
        model.train(was_training)
        if bar is not None:
            bar.close()
    if single:
        return accs["sae"].result()
    return {name: acc.result() for name, acc in accs.items()}


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
