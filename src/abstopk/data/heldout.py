"""Held-out activations in memory: the rows an evaluation compares several SAEs on.

The same rule as harvesting (:func:`abstopk.data.harvest.keep_positions`): a truncated forward
to ``layer`` on packed contexts of the corpus's *held-out* split, BOS/pad positions dropped.
The contexts come in the same seeded order as a harvest's (documents shuffled, contexts mixed
in windows; :mod:`abstopk.data.tokens`), so the first ``n_tokens`` span every corpus part.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

__all__ = ["heldout_activations"]


@torch.no_grad()
def heldout_activations(model: Any, tokenizer: Any, *, layer: int, site: str, n_tokens: int,
                        context_size: int = 128, source: str = "embedded",
                        batch_size: int = 8, keep_bos: bool = False,
                        progress: bool = False, seed: int | None = 0) -> Tensor:
    """``n_tokens`` activations [n, d_in] (float32) of held-out contexts, BOS/pad dropped
    (``keep_bos``: BOS kept, as in a cache harvested with ``keep_bos``).

    Contexts of ``context_size`` tokens (in the order of ``seed``; None: file order) are run
    ``batch_size`` at a time; the last batch is cut so that exactly ``n_tokens`` rows come
    back (fewer when the split runs out).
    """
    from ..lm.hooks import run_to_layer
    from .harvest import keep_positions
    from .tokens import iter_contexts

    dev = next(model.parameters()).device
    out: list[Tensor] = []
    n = 0
    buf: list[Tensor] = []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n_tokens, desc="held-out activations", unit="tok", leave=False)

    def run(ids: Tensor) -> Tensor:
        acts = run_to_layer(model, ids.to(dev), layers=layer, site=site)[layer]
        x = acts.reshape(-1, acts.shape[-1])
        keep = keep_positions(ids, tokenizer, keep_bos).reshape(-1).to(x.device)
        return x[keep].float().cpu()

    try:
        for c in iter_contexts(tokenizer, source=source, split="heldout",
                               context_size=context_size, seed=seed):
            buf.append(c)
            if len(buf) < batch_size:
                continue
            x = run(torch.stack(buf))[: n_tokens - n]
            buf = []
            out.append(x)
            n += x.shape[0]
            if bar is not None:
                bar.update(x.shape[0])
            if n >= n_tokens:
                break
        if buf and n < n_tokens:
            x = run(torch.stack(buf))[: n_tokens - n]
            out.append(x)
            n += x.shape[0]
    finally:
        if bar is not None:
            bar.close()
    if n == 0:
        raise ValueError("no held-out activations could be computed")
    return torch.cat(out)
