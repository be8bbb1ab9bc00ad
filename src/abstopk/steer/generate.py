"""Seeded batched generation and the continuation's perplexity under the unsteered model.

Prompts are encoded as ``[BOS] + tokens(prompt)`` and left-padded to a common length T (pad
positions masked), so every prompt ends at position T − 1 and an intervention's
``positions="generated"`` (positions ≥ T) means the same thing for every row.

Sampling (temperature τ, top-p) uses one seeded generator **per row** (:class:`RowSampler`),
by the Gumbel-max trick inside greedy ``generate``: at each step row r draws
g ~ Gumbel(0, 1)^V from its own generator and takes argmax(ℓ/τ + g) over the top-p nucleus
of softmax(ℓ/τ) (ℓ the logits), which is an exact draw from the nucleus distribution. Row
r's generator is seeded from its row seed alone, so its draws do not depend on the other
rows of the batch, and the same (prompt, generation seed) uses the **same random numbers**
under every intervention (common random numbers: method differences are paired, not
confounded with sampling noise). Same prompts, settings, row seeds and thread count give the
same tokens, bit for bit.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

__all__ = ["RowSampler", "continuation_nll", "distinct_n", "encode_left_padded",
           "repetition_rate", "row_seed", "sample_continuations"]


def row_seed(*keys: int) -> int:
    """A 63-bit generator seed from integer keys (e.g. run seed, generation seed, prompt
    number), mixed by numpy's ``SeedSequence`` (distinct keys → unrelated streams)."""
    import numpy as np

    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(2, np.uint64)[0]
               >> np.uint64(1))


class RowSampler:
    """A ``LogitsProcessor`` that turns greedy decoding into seeded per-row sampling.

    ``scores`` [B, V] → ℓ/τ on the top-p nucleus (−inf elsewhere) + Gumbel noise from row
    r's own ``torch.Generator`` (seeded with ``seeds[r]``); greedy argmax of that is a sample
    of softmax(ℓ/τ) restricted to the nucleus. The nucleus is the smallest set of the most
    probable tokens whose probability reaches ``top_p`` (ties broken by token id).
    """

    def __init__(self, seeds: Sequence[int], temperature: float, top_p: float = 1.0) -> None:
        if not temperature > 0 or not 0 < top_p <= 1:
            raise ValueError("temperature must be > 0 and top_p in (0, 1]")
        self.temperature, self.top_p = float(temperature), float(top_p)
        self.gens = [torch.Generator().manual_seed(int(s)) for s in seeds]

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if scores.shape[0] != len(self.gens):
            raise ValueError(f"{scores.shape[0]} rows but {len(self.gens)} seeds")
        x = scores.float().cpu() / self.temperature
        if self.top_p < 1:
            p, order = torch.sort(torch.softmax(x, -1), dim=-1, descending=True, stable=True)
            before = torch.cumsum(p, -1) - p          # mass of the tokens ranked above
            drop = torch.zeros_like(x, dtype=torch.bool)
            drop.scatter_(-1, order, before >= self.top_p)
            x = x.masked_fill(drop, -math.inf)
        u = torch.stack([torch.rand(x.shape[-1], generator=g, dtype=torch.float64)
                         for g in self.gens])
        gumbel = -torch.log(-torch.log(u.clamp(1e-300, 1.0 - 1e-16)))
        return (x.double() + gumbel).to(scores.device)


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
                         seed: int = 0, temperature: float = 0.7, top_p: float = 0.9,
                         bos: bool = True, row_seeds: Sequence[int] | None = None
                         ) -> list[list[int]]:
    """New token ids per prompt (cut before the first EOS/pad), sampled by :class:`RowSampler`.

    Row r's generator is seeded with ``row_seeds[r]`` (default ``row_seed(seed, r)``).
    ``temperature = 0`` is greedy decoding (no seeds used). Run it inside an intervention's
    ``with`` block to steer (one block per call: the block's position tracker starts at the
    prompt).
    """
    from transformers import LogitsProcessorList

    input_ids, mask = encode_left_padded(tokenizer, prompts, bos)
    dev = next(model.parameters()).device
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    kw: dict = dict(do_sample=False, temperature=None, top_p=None, top_k=None)
    if temperature > 0:
        seeds = (list(row_seeds) if row_seeds is not None
                 else [row_seed(seed, r) for r in range(len(prompts))])
        if len(seeds) != len(prompts):
            raise ValueError(f"{len(seeds)} row seeds for {len(prompts)} prompts")
        kw["logits_processor"] = LogitsProcessorList([RowSampler(seeds, temperature, top_p)])
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
