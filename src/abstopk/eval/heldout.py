"""Several SAEs on the same held-out data: reconstruction metrics and loss recovered.

Reconstruction (:func:`abstopk.eval.metrics.evaluate_reconstruction`: MSE, NMSE, explained
variance, L0, dead fraction, sign statistics, ...) on held-out activations kept in memory
(e.g. :func:`abstopk.data.heldout.heldout_activations`), and loss recovered / KL
(:func:`abstopk.eval.loss_recovered.evaluate_loss_recovered`) on held-out contexts with the
clean and zero-ablated LM runs shared by all SAEs.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

__all__ = ["evaluate_saes"]


def evaluate_saes(saes: dict[str, Any], x_eval: Tensor, *, lm: tuple | None = None,
                  layer: int | None = None, site: str = "resid_post", context_size: int = 128,
                  eval_contexts: int = 0, source: str = "embedded", batch_size: int = 4096,
                  keep_bos: bool = False, progress: bool = False) -> dict[str, dict[str, Any]]:
    """Reconstruction metrics on ``x_eval`` [n, d_in] and (with ``lm`` = (model, tokenizer) and
    ``eval_contexts`` > 0) loss recovered / KL for each SAE; returns {name: metrics}.

    ``keep_bos``: the SAEs were trained with BOS positions, so BOS is spliced too; otherwise
    BOS and pad positions keep their clean activation. Loss recovered comes with zero and
    mean ablation and bootstrap intervals (:func:`~abstopk.eval.loss_recovered.evaluate_loss_recovered`).
    """
    from .metrics import evaluate_reconstruction

    out: dict[str, dict[str, Any]] = {}
    items = list(saes.items())
    bar = None
    if progress and len(items) > 1:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(items), desc="reconstruction", unit="sae", leave=False)
    for name, sae in items:
        out[name] = dict(evaluate_reconstruction(sae, x_eval, batch_size=batch_size).summary)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    if lm is not None and eval_contexts > 0:
        from ..data.tokens import bos_token_id, iter_contexts
        from .loss_recovered import evaluate_loss_recovered

        model, tok = lm[0], lm[1]
        skip = {bos_token_id(tok)}
        if getattr(tok, "pad_token_id", None) is not None:
            skip.add(int(tok.pad_token_id))
        ctx = iter_contexts(tok, source=source, split="heldout", context_size=context_size)
        lr = evaluate_loss_recovered(saes, model, ctx, layer=int(layer), site=site,
                                     n_contexts=eval_contexts, skip_token_ids=skip,
                                     splice_bos=keep_bos, progress=progress)
        for name in out:
            out[name].update(lr[name])
    return out
