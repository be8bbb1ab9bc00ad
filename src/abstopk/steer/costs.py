"""Capability cost of an intervention: the LM's loss on held-out corpus text while it acts.

:func:`heldout_contexts` takes the first ``n`` packed contexts (``context_size`` tokens, BOS
at each document start) of the embedded corpus's held-out split; :func:`lm_loss` is the mean
next-token cross-entropy (nats/token) over their ordinary target positions (targets that are
BOS/pad are skipped), computed under whatever intervention is active. Interventions must act
on every position here (``positions="all"``): a corpus forward has no generated part.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["heldout_contexts", "lm_loss"]


def heldout_contexts(tokenizer, n: int, context_size: int = 64,
                     source: str = "embedded") -> Tensor:
    """[n, context_size] token ids of the held-out split (fewer rows if it runs out)."""
    from ..data.tokens import iter_contexts

    out = []
    for c in iter_contexts(tokenizer, source=source, split="heldout", context_size=context_size):
        out.append(c)
        if len(out) >= n:
            break
    if not out:
        raise ValueError("the held-out split gave no context")
    return torch.stack(out)


@torch.no_grad()
def lm_loss(model, tokenizer, contexts: Tensor, batch_size: int = 8) -> float:
    """Mean next-token cross-entropy (nats/token) of ``model`` on ``contexts`` [n, T]."""
    from ..data.tokens import special_position_mask

    dev = next(model.parameters()).device
    total, count = 0.0, 0
    for i in range(0, len(contexts), batch_size):
        ids = contexts[i: i + batch_size]
        logits = model(input_ids=ids.to(dev)).logits.float().cpu()
        tgt = ids[:, 1:]
        nll = torch.nn.functional.cross_entropy(
            logits[:, :-1].reshape(-1, logits.shape[-1]), tgt.reshape(-1), reduction="none")
        keep = ~special_position_mask(tgt, tokenizer).reshape(-1)
        total += float(nll[keep].sum())
        count += int(keep.sum())
    return total / max(count, 1)
