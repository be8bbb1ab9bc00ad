"""Seeded batched generation and the continuation's perplexity under the unsteered model.

Prompts are encoded as ``[BOS] + tokens(prompt)`` and left-padded to a common length T (pad
positions masked), so every prompt ends at position T − 1 and an intervention's
``positions="generated"`` (positions ≥ T) means the same thing for every row. Sampling
(temperature, top-p) is seeded with ``torch.manual_seed(seed)`` right before ``generate``:
the same prompts, settings, seed and thread count give the same tokens, bit for bit.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

__all__ = ["continuation_nll", "distinct_n", "encode_left_padded", "repetition_rate",
           "sample_continuations"]


def encode_left_padded(tokenizer, prompts: Sequence[str], bos: bool = True
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids [B, T], attention_mask [B, T]): [BOS +] prompt tokens, left-padded.

    ``bos=False`` for prompts that already start with their special tokens (chat templates).
    """
    from ..data.tokens import bos_token_id

    b = bos_token_id(tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else b
    head = [b] if bos else []
    ids = [head + tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    T = max(len(x) for x in ids)
    input_ids = torch.full((len(ids), T), pad, dtype=torch.long)
    mask = torch.zeros((len(ids), T), dtype=torch.long)
    for r, x in enumerate(ids):
        input_ids[r, T - len(x):] = torch.tensor(x)
        mask[r, T - len(x):] = 1
    return input_ids, mask


@torch.no_grad()
def sample_continuations(model, tokenizer, prompts: Sequence[str], *, max_new_tokens: int,
                         seed: int, temperature: float = 0.7, top_p: float = 0.9,
                         bos: bool = True) -> list[list[int]]:
    """New token ids per prompt (cut before the first EOS/pad), sampled with ``seed``.

    ``temperature = 0`` is greedy decoding. Run it inside an intervention's ``with`` block
    to steer (one block per call: the block's position tracker starts at the prompt).
    """
    input_ids, mask = encode_left_padded(tokenizer, prompts, bos)
    dev = next(model.parameters()).device
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    kw = dict(do_sample=False) if temperature == 0 else dict(
        do_sample=True, temperature=temperature, top_p=top_p, top_k=0)
    torch.manual_seed(seed)
    out = model.generate(input_ids=input_ids.to(dev), attention_mask=mask.to(dev),
                         max_new_tokens=max_new_tokens, min_new_tokens=1, pad_token_id=pad,
                         eos_token_id=eos, **kw)
    res = []
    for row in out[:, input_ids.shape[1]:].tolist():
        cut = [i for i, t in enumerate(row) if t in (eos, pad)]
        res.append(row[: cut[0]] if cut else row)
    return res


@torch.no_grad()
def continuation_nll(model, tokenizer, prompts: Sequence[str],
                     continuations: Sequence[Sequence[int]]) -> list[float]:
    """Mean negative log-likelihood (nats/token) of each continuation given its prompt, under
    ``model`` as it is (call it outside any intervention for the unsteered model); NaN for
    an empty continuation. Perplexity = exp(nll)."""
    input_ids, mask = encode_left_padded(tokenizer, prompts)
    T = input_ids.shape[1]
    L = max(1, max(len(c) for c in continuations))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ids = torch.full((len(prompts), T + L), pad, dtype=torch.long)
    m = torch.zeros_like(ids)
    ids[:, :T], m[:, :T] = input_ids, mask
    for r, c in enumerate(continuations):
        ids[r, T: T + len(c)] = torch.tensor(list(c), dtype=torch.long)
        m[r, T: T + len(c)] = 1
    dev = next(model.parameters()).device
    logits = model(input_ids=ids.to(dev), attention_mask=m.to(dev)).logits.float().cpu()
    logp = torch.log_softmax(logits[:, T - 1: -1], -1)          # predicts positions T..T+L-1
    tok_lp = logp.gather(-1, ids[:, T:].unsqueeze(-1)).squeeze(-1)  # [B, L]
    out = []
    for r, c in enumerate(continuations):
        out.append(float(-tok_lp[r, : len(c)].mean()) if len(c) else math.nan)
    return out


def distinct_n(tokens: Sequence, n: int = 2) -> float:
    """Distinct n-grams / n-grams of one sequence (1.0 when it has no n-gram)."""
    grams = [tuple(tokens[i: i + n]) for i in range(len(tokens) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 1.0


def repetition_rate(tokens: Sequence, n: int = 3) -> float:
    """Fraction of a sequence's n-grams that repeat an earlier n-gram of it (0 = none)."""
    return 1.0 - distinct_n(tokens, n)
