"""Multiple-choice accuracy by log-likelihood: a capability cost measured under steering.

For a question with prompt q and choices c_1..c_n, each choice gets
``score_j = Σ_t log P(c_j[t] | [BOS] q ␣c_j[:t])`` (the **sum** of its tokens' log-probabilities,
the choice tokenised as " " + c_j after the prompt's tokens) and the model's answer is
argmax_j score_j (the first on ties). Accuracy is the fraction of questions answered right;
chance is the mean of 1/n over the questions. Run it inside an intervention's ``with`` block
(``positions="all"``) to measure the steered model. Sequences are right-padded in batches;
prompts longer than ``max_prompt_tokens`` keep their last tokens. A question whose choices
are all single tokens (Yes/No, a/b, …) needs one forward of its prompt: the choices'
log-probabilities are read from the prompt's last position (the same numbers as the general
path, which runs prompt + choice once per choice).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["choice_logprobs", "mc_accuracy"]


@torch.no_grad()
def choice_logprobs(model, tokenizer, questions: Sequence, *, batch_size: int = 16,
                    max_prompt_tokens: int = 192) -> list[list[float]]:
    """Per question, the summed log-probability of each choice (module docstring).

    ``questions``: objects with ``prompt`` (str) and ``choices`` (sequence of str).
    """
    from ..data.tokens import bos_token_id

    bos = bos_token_id(tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else bos
    # (question, choice ids or None for "all choices", ids, n_prompt)
    seqs: list[tuple[int, list[int] | None, list[int], int]] = []
    for qi, q in enumerate(questions):
        p = tokenizer(q.prompt, add_special_tokens=False)["input_ids"][-max_prompt_tokens:]
        cids = [tokenizer(" " + c, add_special_tokens=False)["input_ids"] for c in q.choices]
        if all(len(c) == 1 for c in cids):
            seqs.append((qi, None, [bos, *p], 1 + len(p)))
            continue
        for ci, c in enumerate(cids):
            seqs.append((qi, [ci], [bos, *p, *c], 1 + len(p)))
    single = {qi: [tokenizer(" " + c, add_special_tokens=False)["input_ids"][0]
                   for c in questions[qi].choices] for qi, ci, _, _ in seqs if ci is None}
    out = [[0.0] * len(q.choices) for q in questions]
    dev = next(model.parameters()).device
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i][2]))   # less padding
    for b in range(0, len(order), batch_size):
        chunk = [seqs[i] for i in order[b: b + batch_size]]
        T = max(len(s[2]) for s in chunk)
        ids = torch.full((len(chunk), T), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for r, (_, _, x, _) in enumerate(chunk):
            ids[r, : len(x)] = torch.tensor(x)
            mask[r, : len(x)] = 1
        logits = model(input_ids=ids.to(dev), attention_mask=mask.to(dev)).logits.float().cpu()
        logp_all = torch.log_softmax(logits, -1)                       # [B, T, V]
        logp = logp_all[:, :-1].gather(-1, ids[:, 1:, None])[..., 0]   # [B, T-1]
        for r, (qi, ci, x, n_p) in enumerate(chunk):
            if ci is None:
                out[qi] = [float(logp_all[r, n_p - 1, t]) for t in single[qi]]
            else:
                out[qi][ci[0]] = float(logp[r, n_p - 1: len(x) - 1].sum())
    return out


def mc_accuracy(model, tokenizer, questions: Sequence, **kw) -> dict:
    """{"accuracy", "chance", "n", "correct": [0/1 per question]} (module docstring)."""
    scores = choice_logprobs(model, tokenizer, questions, **kw)
    correct = [int(max(range(len(s)), key=lambda j: (s[j], -j)) == q.answer)
               for s, q in zip(scores, questions, strict=True)]
    n = len(questions)
    return {"accuracy": sum(correct) / n if n else float("nan"),
            "chance": sum(1 / len(q.choices) for q in questions) / n if n else float("nan"),
            "n": n, "correct": correct}
