"""Completion scoring: the log-probability a causal LM gives a continuation after a context,
and the opposite test built on it.

**Scorer.** For a context c and a continuation w (texts tokenised separately and
concatenated, no special tokens added: ids = tok(c) ‖ tok(w) = x₁ … x_L, |tok(c)| = m),

    lp(w | c) = Σ_{t=m+1..L} log p(x_t | x₁ … x_{t−1})

(a multi-token word scores by its summed log-probability). :class:`CompletionScorer` groups
the requests by context: the token prefix all contexts of one call share runs once, then each
distinct context's rest runs once on a copy of its key/value cache (its last position gives
every continuation's first token), then the continuations' remaining tokens run in right-padded
batches on a copy of the context's key/value cache, reading only the logits that predict
continuation tokens. The result equals one plain forward per request.

**Opposite test** (:func:`opposite_pmi`). A template is a pair (context with ``{word}``,
continuation with ``{word}``), e.g. (``The opposite of "{word}" is "``, ``{word}"``). For poles
with words A and B, templates T₁ … T_K and a neutral word n:

    PMI_T(a → b) = lp(T.cont(b) | T.ctx(a)) − lp(T.cont(b) | T.ctx(n))

(how much naming a raises b against naming a neutral word), and

    S(A, B) = 1/K Σ_T ½ [ mean_{a∈A, b∈B} PMI_T(a → b) + mean_{a∈A, b∈B} PMI_T(b → a) ]

symmetric in A and B. Identical words (a == b, case ignored) are skipped; S is None when no
pair is left. The poles count as opposites when S > the threshold.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Sequence
from typing import Any, Protocol

import torch

__all__ = ["CompletionScorer", "LogProbScorer", "chat_context", "opposite_pmi",
           "pmi_requests", "render_templates"]


class LogProbScorer(Protocol):
    """``logprob([(context, continuation)]) -> [lp]``; ``chat(system, user, prefix)`` the
    text of a chat whose assistant reply begins with ``prefix``; ``meta()`` describes it."""

    def logprob(self, items: Sequence[tuple[str, str]]) -> list[float]: ...

    def chat(self, system: str, user: str, assistant_prefix: str) -> str: ...

    def meta(self) -> dict[str, Any]: ...


def chat_context(tokenizer, system: str, user: str, assistant_prefix: str) -> str:
    """The chat-template text of a system and a user message, the assistant's turn opened and
    begun with ``assistant_prefix`` (the continuation follows it)."""
    msgs = [{"role": "system", "content": system}, {"role": "user", "content": user}]
    return tokenizer.apply_chat_template(msgs, tokenize=False,
                                         add_generation_prompt=True) + assistant_prefix


class CompletionScorer:
    """Continuation log-probabilities from a loaded causal LM ``model`` and its ``tokenizer``."""

    def __init__(self, model, tokenizer, *, batch_size: int = 32, name: str = "",
                 revision: str = ""):
        self.model, self.tok = model, tokenizer
        self.batch_size = batch_size
        self.name, self.revision = name, revision
        self.tokens_run = 0
        self._ids: dict[str, list[int]] = {}

    def meta(self) -> dict[str, Any]:
        return {"kind": "local-completion", "model": self.name, "revision": self.revision}

    def chat(self, system: str, user: str, assistant_prefix: str) -> str:
        return chat_context(self.tok, system, user, assistant_prefix)

    def _tok(self, text: str) -> list[int]:
        ids = self._ids.get(text)
        if ids is None:
            ids = self._ids[text] = self.tok(text, add_special_tokens=False)["input_ids"]
        return ids

    @torch.no_grad()
    def logprob(self, items: Sequence[tuple[str, str]]) -> list[float]:
        groups: dict[tuple[int, ...], list[tuple[int, list[int]]]] = {}
        for i, (ctx, cont) in enumerate(items):
            c, w = self._tok(ctx), self._tok(cont)
            if not c or not w:
                raise ValueError(f"empty context or continuation: {ctx!r}, {cont!r}")
            groups.setdefault(tuple(c), []).append((i, w))
        base = self.model.base_model
        head = self.model.get_output_embeddings()
        ckey = "cache" if "cache" in inspect.signature(base.forward).parameters \
            else "past_key_values"
        pad = self.tok.pad_token_id if self.tok.pad_token_id is not None else 0
        out = [0.0] * len(items)
        shared = None
        lcp = min(len(c) for c in groups) - 1 if len(groups) > 1 else 0
        if lcp > 0:            # the prefix every context shares, once (each keeps ≥ 1 token)
            first_ctx = next(iter(groups))
            for c in groups:
                j = 0
                while j < lcp and c[j] == first_ctx[j]:
                    j += 1
                lcp = j
        if lcp > 0:
            shared = getattr(base(input_ids=torch.tensor([list(first_ctx[:lcp])]),
                                  use_cache=True), ckey)
            self.tokens_run += lcp
        for ctx, reqs in groups.items():
            # the context once: its last position predicts every continuation's first token
            kw = {ckey: copy.deepcopy(shared)} if shared is not None else {}
            pre = base(input_ids=torch.tensor([list(ctx[lcp:])]), use_cache=True, **kw)
            self.tokens_run += len(ctx) - lcp
            first = head(pre.last_hidden_state[0, -1:]).float().log_softmax(-1)[0]
            for i, w in reqs:
                out[i] = float(first[w[0]])
            longer = [(i, w) for i, w in reqs if len(w) > 1]
            for a in range(0, len(longer), self.batch_size):
                chunk = longer[a:a + self.batch_size]
                B, T, L = len(chunk), max(len(w) for _, w in chunk) - 1, len(ctx)
                x = torch.full((B, T), pad, dtype=torch.long)
                m = torch.zeros(B, L + T, dtype=torch.long)
                m[:, :L] = 1
                for r, (_, w) in enumerate(chunk):
                    x[r, :len(w) - 1] = torch.tensor(w[:-1])
                    m[r, L:L + len(w) - 1] = 1
                cache = copy.deepcopy(getattr(pre, ckey))
                cache.batch_repeat_interleave(B)
                h = base(input_ids=x, attention_mask=m, use_cache=True,
                         **{ckey: cache}).last_hidden_state
                self.tokens_run += sum(len(w) - 1 for _, w in chunk)
                rows = [r for r, (_, w) in enumerate(chunk) for _ in w[1:]]
                cols = [t for _, w in chunk for t in range(len(w) - 1)]
                tgt = [v for _, w in chunk for v in w[1:]]
                lp = head(h[torch.tensor(rows), torch.tensor(cols)]).float().log_softmax(-1)
                vals = lp[torch.arange(len(tgt)), torch.tensor(tgt)].tolist()
                for r, v in zip(rows, vals, strict=True):
                    out[chunk[r][0]] += v
        return out


Template = tuple[str, str]


def render_templates(templates: Sequence[Any], scorer: LogProbScorer, system: str
                     ) -> list[Template]:
    """``(context, continuation)`` texts of :class:`.prompts.CompletionTemplate` s: a chat
    template's context becomes the chat text (``system``, its ``user`` message, the reply
    begun with its ``context``)."""
    out = []
    for t in templates:
        ctx = t.context if t.user is None else scorer.chat(system, t.user, t.context)
        out.append((ctx, t.continuation))
    return out


def _fill(template: str, word: str) -> str:
    return template.replace("{word}", word)


def _pairs(a_words: Sequence[str], b_words: Sequence[str]) -> list[tuple[str, str]]:
    return [(a, b) for a in a_words for b in b_words if a.lower() != b.lower()]


def pmi_requests(a_words: Sequence[str], b_words: Sequence[str], templates: Sequence[Template],
                 neutral: str) -> list[tuple[str, str]]:
    """Every (context, continuation) that :func:`opposite_pmi` needs for one pair of poles."""
    reqs = []
    for ctx, cont in templates:
        for x, y in _pairs(a_words, b_words) + [(b, a) for a, b in _pairs(a_words, b_words)]:
            reqs.append((_fill(ctx, x), _fill(cont, y)))
            reqs.append((_fill(ctx, neutral), _fill(cont, y)))
    return reqs


def opposite_pmi(poles: Sequence[tuple[Sequence[str], Sequence[str]]], scorer: LogProbScorer,
                 templates: Sequence[Template], neutral: str) -> list[float | None]:
    """S(A, B) of the module docstring for each ``(A, B)`` in ``poles``; the requests of each
    template scored in one call (duplicates once)."""
    if not templates:
        raise ValueError("the opposite test needs at least one template")
    lp: dict[tuple[str, str], float] = {}
    for t in templates:         # one call a template: its contexts share their prefix
        keys = sorted({r for a, b in poles for r in pmi_requests(a, b, [t], neutral)})
        lp.update(zip(keys, scorer.logprob(keys), strict=True))
    res: list[float | None] = []
    for a_words, b_words in poles:
        pairs = _pairs(a_words, b_words)
        if not pairs:
            res.append(None)
            continue
        total = 0.0
        for ctx, cont in templates:
            def pmi(x: str, y: str, ctx=ctx, cont=cont) -> float:
                c = _fill(cont, y)
                return lp[(_fill(ctx, x), c)] - lp[(_fill(ctx, neutral), c)]
            fwd = sum(pmi(a, b) for a, b in pairs) / len(pairs)
            bwd = sum(pmi(b, a) for a, b in pairs) / len(pairs)
            total += (fwd + bwd) / 2
        res.append(total / len(templates))
    return res
