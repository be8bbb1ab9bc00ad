"""The tokens a latent's decoder row promotes and suppresses through the unembedding.

For decoder row d_i ∈ R^{d_in} (the direction z_i = +1 adds to the residual stream) the direct
logit effect is ℓ_i = W_U (γ ⊙ d_i) ∈ R^{vocab}: W_U [vocab, d_model] the unembedding and γ the
final norm's per-dimension gain (RMSNorm/LayerNorm weight), **applied**. The norm's
data-dependent 1/rms factor is a positive scalar per token and does not change the ranking;
LayerNorm's centring (if any) and bias are ignored. +z promotes the top of ℓ_i, −z promotes the
bottom of ℓ_i (``logits_neg``, most negative first). For a residual site other than the last
layer this is the usual "logit lens" reading, not the latent's full effect.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["final_norm_gain", "logit_effects", "unembedding"]


def unembedding(model) -> Tensor:
    """W_U [vocab, d_model] of a transformers causal LM (float32, CPU)."""
    return model.get_output_embeddings().weight.detach().float().cpu()


def final_norm_gain(model) -> Tensor | None:
    """γ [d_model] of the final norm (Llama ``model.norm``, GPT-2 ``transformer.ln_f``), or None."""
    for path in ("model.norm", "transformer.ln_f", "model.final_layernorm", "gpt_neox.final_layer_norm"):
        obj = model
        for part in path.split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                break
        w = getattr(obj, "weight", None) if obj is not None else None
        if w is not None:
            return w.detach().float().cpu()
    return None


@torch.no_grad()
def logit_effects(W_dec: Tensor, W_U: Tensor, gain: Tensor | None, n: int,
                  chunk: int = 256) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Top and bottom ``n`` of ℓ_i = W_U (γ ⊙ d_i) for every row of ``W_dec`` [F, d].

    Returns ``(top_vals, top_ids, bot_vals, bot_ids)``, each [F, n]: top largest first,
    bottom most negative first.
    """
    W = W_dec.float()
    if gain is not None:
        W = W * gain
    n = min(n, W_U.shape[0])
    outs = [[], [], [], []]
    for a in range(0, W.shape[0], chunk):
        lg = W[a:a + chunk] @ W_U.T
        tv, ti = lg.topk(n, dim=1)
        bv, bi = lg.topk(n, dim=1, largest=False)
        for o, t in zip(outs, (tv, ti, bv, bi), strict=False):
            o.append(t)
    return tuple(torch.cat(o) if o else torch.zeros(0, n) for o in outs)  # type: ignore[return-value]
