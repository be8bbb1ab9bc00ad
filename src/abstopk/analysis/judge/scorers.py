"""Yes/No scorers: a chat model's log-odds of answering "Yes" rather than "No".

For a user message m (and the prompts' system message) a scorer returns

    Δ(m) = log Σ_{t ∈ YES} p(t | chat(m)) − log Σ_{t ∈ NO} p(t | chat(m))

over the first token of the assistant's reply, YES = the tokens of "Yes" and " Yes", NO = those
of "No" and " No" (single tokens; variants that split into several tokens are skipped).
Δ > 0: the model prefers "Yes". Nothing is generated.

* :class:`LocalChatScorer` — a transformers causal LM with a chat template (the embedded
  SmolLM2-135M-Instruct by default; any local or cached hub chat model). Prompts are scored in
  batches; the token prefix shared by all prompts of one call (system message, instruction)
  runs once and its key/value cache is reused by every batch (right padding, the logit read at
  each prompt's last token, so the result equals one plain forward per prompt).
* :class:`EndpointScorer` — an OpenAI-compatible ``/chat/completions`` endpoint, called only
  when the user configures its URL: one request per prompt with ``max_tokens = 1``,
  ``logprobs`` and ``top_logprobs = 20``; Yes/No mass is summed over the listed tokens whose
  text is "yes"/"no" (case and spaces ignored); a side absent from the list gets the lowest
  listed log-probability (an upper bound).
"""

from __future__ import annotations

import copy
import inspect
import json
import math
import os
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import Any, Protocol

import torch

from ...errors import UserError

__all__ = ["EndpointScorer", "LocalChatScorer", "YesNoScorer"]

YES, NO = ("Yes", " Yes"), ("No", " No")


class YesNoScorer(Protocol):
    """``score(messages) -> [Δ]``, one log-odds per user message; ``meta()`` describes it."""

    def score(self, messages: Sequence[str]) -> list[float]: ...

    def meta(self) -> dict[str, Any]: ...


def _single_ids(tok, words: Sequence[str]) -> list[int]:
    out = []
    for w in words:
        ids = tok(w, add_special_tokens=False)["input_ids"]
        if len(ids) == 1 and ids[0] not in out:
            out.append(ids[0])
    return out


class LocalChatScorer:
    """Scores with a loaded causal LM ``model`` and its ``tokenizer`` (chat template)."""

    def __init__(self, model, tokenizer, system: str, *, batch_size: int = 16,
                 share_prefix: bool = True, name: str = "", revision: str = ""):
        self.model, self.tok, self.system = model, tokenizer, system
        self.batch_size, self.share_prefix = batch_size, share_prefix
        self.name, self.revision = name, revision
        self.yes, self.no = _single_ids(tokenizer, YES), _single_ids(tokenizer, NO)
        if not self.yes or not self.no:
            raise UserError(f"the judge model {name or '?'}: 'Yes'/'No' are not single tokens")
        if getattr(tokenizer, "chat_template", None) is None:
            raise UserError(f"the judge model {name or '?'} has no chat template")
        self.tokens_run = 0

    def meta(self) -> dict[str, Any]:
        return {"kind": "local", "model": self.name, "revision": self.revision,
                "yes_tokens": self.yes, "no_tokens": self.no}

    def _ids(self, message: str) -> list[int]:
        msgs = [{"role": "system", "content": self.system}, {"role": "user", "content": message}]
        text = self.tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        return self.tok(text, add_special_tokens=False)["input_ids"]

    def _delta(self, last_hidden: torch.Tensor) -> list[float]:
        lp = self.model.get_output_embeddings()(last_hidden).float().log_softmax(-1)
        y = torch.logsumexp(lp[:, self.yes], -1)
        n = torch.logsumexp(lp[:, self.no], -1)
        return (y - n).tolist()

    @torch.no_grad()
    def score(self, messages: Sequence[str]) -> list[float]:
        if not messages:
            return []
        ids = [self._ids(m) for m in messages]
        lcp = 0
        if self.share_prefix and len(ids) > 1:
            lcp = min(len(x) for x in ids) - 1          # every prompt keeps ≥ 1 own token
            first = ids[0]
            for x in ids[1:]:
                j = 0
                while j < lcp and x[j] == first[j]:
                    j += 1
                lcp = j
        base = self.model.base_model
        # the key/value cache argument was renamed (past_key_values → cache) in transformers 5
        ckey = "cache" if "cache" in inspect.signature(base.forward).parameters \
            else "past_key_values"
        prefix_cache = None
        if lcp > 0:
            out = base(input_ids=torch.tensor([ids[0][:lcp]]), use_cache=True)
            prefix_cache = getattr(out, ckey)
            self.tokens_run += lcp
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        result = [0.0] * len(ids)
        pad = self.tok.pad_token_id if self.tok.pad_token_id is not None else 0
        for a in range(0, len(order), self.batch_size):
            chunk = order[a:a + self.batch_size]
            suf = [ids[i][lcp:] for i in chunk]
            T, B = max(len(s) for s in suf), len(chunk)
            x = torch.full((B, T), pad, dtype=torch.long)
            m = torch.zeros(B, lcp + T, dtype=torch.long)
            m[:, :lcp] = 1
            for r, s in enumerate(suf):
                x[r, : len(s)] = torch.tensor(s)
                m[r, lcp: lcp + len(s)] = 1
            kw: dict[str, Any] = {}
            if prefix_cache is not None:
                cache = copy.deepcopy(prefix_cache)
                cache.batch_repeat_interleave(B)
                kw[ckey] = cache
            h = base(input_ids=x, attention_mask=m, use_cache=prefix_cache is not None,
                     **kw).last_hidden_state
            last = h[torch.arange(B), torch.tensor([len(s) - 1 for s in suf])]
            for i, d in zip(chunk, self._delta(last), strict=True):
                result[i] = d
            self.tokens_run += sum(len(s) for s in suf)
        return result


def _mass(top: list[dict[str, Any]], word: str) -> float | None:
    lps = [float(t["logprob"]) for t in top
           if str(t.get("token", "")).strip().lower() == word]
    return math.log(sum(math.exp(v) for v in lps)) if lps else None


class EndpointScorer:
    """An OpenAI-compatible chat-completions endpoint at ``url`` (e.g.
    ``http://127.0.0.1:8080/v1``); the API key, if any, is read from the environment variable
    ``api_key_env`` (never stored)."""

    def __init__(self, url: str, model: str, system: str, *, api_key_env: str = "OPENAI_API_KEY",
                 timeout: float = 60.0):
        self.url = url.rstrip("/") + "/chat/completions"
        self.model, self.system, self.key_env, self.timeout = model, system, api_key_env, timeout

    def meta(self) -> dict[str, Any]:
        return {"kind": "endpoint", "url": self.url, "model": self.model}

    def _one(self, message: str) -> float:
        body = {"model": self.model, "max_tokens": 1, "temperature": 0, "logprobs": True,
                "top_logprobs": 20,
                "messages": [{"role": "system", "content": self.system},
                             {"role": "user", "content": message}]}
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self.key_env or "", "")
        if key:
            headers["Authorization"] = f"Bearer {key}"
        req = urllib.request.Request(self.url, json.dumps(body).encode(), headers)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as r:
                d = json.loads(r.read().decode("utf-8"))
            top = d["choices"][0]["logprobs"]["content"][0]["top_logprobs"]
        except (urllib.error.URLError, OSError) as e:
            raise UserError(f"judge endpoint {self.url} did not answer ({e})") from None
        except (KeyError, IndexError, TypeError, ValueError):
            raise UserError(f"judge endpoint {self.url} returned no token log-probabilities") \
                from None
        floor = min((float(t["logprob"]) for t in top), default=-100.0)
        y, n = _mass(top, "yes"), _mass(top, "no")
        return (floor if y is None else y) - (floor if n is None else n)

    def score(self, messages: Sequence[str]) -> list[float]:
        return [self._one(m) for m in messages]
