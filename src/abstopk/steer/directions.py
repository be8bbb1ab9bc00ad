"""Concept directions from labelled text: difference in means, its separation, its scale.

For two sets of texts A (e.g. positive) and B (negative), each text is read by the model up
to ``layer`` and pooled to one vector h(t) ∈ R^d at ``site``:

* ``pool="mean"``: the mean over the text's ordinary positions (BOS and pad excluded: at
  BOS/attention-sink positions the residual stream has a norm many times the others', which
  would dominate a direction estimated from them);
* ``pool="last"``: the last ordinary position (the last prompt token, as for instructions).

The difference-in-means (DiM) direction is ``v = mean_A h(t) − mean_B h(t)`` [d]. Its
held-out separation is the ROC AUC of the projections ``⟨h(t), v⟩`` of held-out A texts
against held-out B texts (1 = every A text projects higher than every B text, 0.5 = chance).
Its typical magnitude (:func:`typical_magnitude`) is the 95th percentile of ``|⟨h, v̂⟩|``
over ordinary token positions, the unit in which steering strengths are stated.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = [
    "Direction",
    "diff_in_means",
    "pooled_activations",
    "projection_auc",
    "token_activations",
    "typical_magnitude",
]

POOLS = ("mean", "last")


@dataclass
class Direction:
    """A steering direction at one site of one layer.

    Attributes:
        vector: [d] the raw direction (e.g. DiM, in activation units).
        layer, site: where it lives (``blocks.{layer}.hook_{site}``).
        name: what it is (e.g. ``"sentiment: positive − negative"``).
        scale: typical magnitude of the activations along ``vector / |vector|`` (see
            :func:`typical_magnitude`); strengths are multiples of it. ``None`` if unknown.
        auc: held-out separation (:func:`projection_auc`), or ``None``.
    """

    vector: Tensor
    layer: int
    site: str = "resid_post"
    name: str = ""
    scale: float | None = None
    auc: float | None = None

    @property
    def unit(self) -> Tensor:
        """v / ‖v‖ [d]."""
        return self.vector / self.vector.norm().clamp_min(1e-12)


def _batches(tokenizer, texts: Sequence[str], batch_size: int):
    """Yield (input_ids [b, T], attention_mask [b, T]) with right padding, BOS prepended."""
    from ..data.tokens import bos_token_id

    bos = bos_token_id(tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else bos
    for i in range(0, len(texts), batch_size):
        ids = [[bos] + tokenizer(t, add_special_tokens=False)["input_ids"]
               for t in texts[i: i + batch_size]]
        T = max(len(x) for x in ids)
        input_ids = torch.full((len(ids), T), pad, dtype=torch.long)
        mask = torch.zeros((len(ids), T), dtype=torch.long)
        for r, x in enumerate(ids):
            input_ids[r, : len(x)] = torch.tensor(x)
            mask[r, : len(x)] = 1
        yield input_ids, mask


def _ordinary(input_ids: Tensor, mask: Tensor, tokenizer) -> Tensor:
    """[b, T] bool: real (unpadded) positions that are not BOS/pad tokens."""
    from ..data.tokens import special_position_mask

    return mask.bool() & ~special_position_mask(input_ids, tokenizer)


@torch.no_grad()
def pooled_activations(model, tokenizer, texts: Sequence[str], layer: int, *,
                       site: str = "resid_post", pool: str = "mean",
                       batch_size: int = 16) -> Tensor:
    """h(t) for every text: [n_texts, d] float32 (see the module docstring for ``pool``).

    A text with no ordinary token (empty) is an error.
    """
    from ..lm.hooks import run_to_layer

    if pool not in POOLS:
        raise ValueError(f"unknown pool {pool!r}; choose one of {', '.join(POOLS)}")
    if not texts:
        raise ValueError("no texts given")
    out = []
    for input_ids, mask in _batches(tokenizer, list(texts), batch_size):
        h = run_to_layer(model, input_ids, mask, layers=layer, site=site)[layer].float()
        keep = _ordinary(input_ids, mask, tokenizer)
        n = keep.sum(1)
        if (n == 0).any():
            raise ValueError("a text has no token besides BOS/pad")
        if pool == "mean":
            out.append((h * keep.unsqueeze(-1)).sum(1) / n.unsqueeze(-1))
        else:
            last = keep.size(1) - 1 - keep.flip(1).int().argmax(1)  # last True per row
            out.append(h[torch.arange(h.size(0)), last])
    return torch.cat(out)


@torch.no_grad()
def token_activations(model, tokenizer, texts: Sequence[str], layer: int, *,
                      site: str = "resid_post", batch_size: int = 16) -> Tensor:
    """Activations at every ordinary position of every text: [n_tokens, d] float32."""
    from ..lm.hooks import run_to_layer

    out = []
    for input_ids, mask in _batches(tokenizer, list(texts), batch_size):
        h = run_to_layer(model, input_ids, mask, layers=layer, site=site)[layer].float()
        out.append(h[_ordinary(input_ids, mask, tokenizer)])
    return torch.cat(out)


def diff_in_means(acts_a: Tensor, acts_b: Tensor) -> Tensor:
    """v = mean(acts_a, 0) − mean(acts_b, 0): [d] from [n_a, d] and [n_b, d]."""
    if acts_a.dim() != 2 or acts_b.dim() != 2 or acts_a.shape[1] != acts_b.shape[1]:
        raise ValueError(f"expected [n, d] activations of one width, got {tuple(acts_a.shape)} "
                         f"and {tuple(acts_b.shape)}")
    if len(acts_a) == 0 or len(acts_b) == 0:
        raise ValueError("each side needs at least one example")
    return acts_a.float().mean(0) - acts_b.float().mean(0)


def projection_auc(v: Tensor, acts_a: Tensor, acts_b: Tensor) -> float:
    """ROC AUC of ⟨h, v⟩ for A (positives) against B: P(s_a > s_b) + ½·P(s_a = s_b).

    Computed exactly over all (a, b) pairs (the Mann–Whitney U statistic / (n_a·n_b)).
    """
    sa = acts_a.float() @ v.float()
    sb = acts_b.float() @ v.float()
    gt = (sa[:, None] > sb[None, :]).float().mean()
    eq = (sa[:, None] == sb[None, :]).float().mean()
    return float(gt + 0.5 * eq)


def typical_magnitude(acts: Tensor, v: Tensor, q: float = 0.95) -> float:
    """The ``q`` quantile of |⟨h, v/‖v‖⟩| over the rows h of ``acts`` [n, d]."""
    if not 0 < q <= 1:
        raise ValueError(f"q must be in (0, 1], got {q}")
    unit = v.float() / v.float().norm().clamp_min(1e-12)
    return float(torch.quantile((acts.float() @ unit).abs(), q))
