"""Token windows around cache rows: the text behind a latent's activations.

A cache row is one token position. Version-2 caches store per row, besides ``token_ids``
[rows] int64, ``context_ids`` [rows] int64 (global index of the packed context the row came
from) and ``positions`` [rows] int32 (the token's position inside that context). Rows of one
context are consecutive, so the window of row r is the rows r−w … r+w that share r's
context id (BOS/pad positions are not rows, so a window never shows them).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from ...data.cache import ActivationCache
from ...errors import CacheError

__all__ = ["RowIndex", "TokenDecoder"]

NO_POSITIONS = ("harvested before per-row positions were recorded (its shards hold no "
                "context_ids/positions); harvest it again")


class RowIndex:
    """``token_ids``, ``context_ids`` and ``positions`` of the first ``n_rows`` rows of a cache,
    in memory (20 bytes a row). Raises :class:`CacheError` for a cache without them."""

    def __init__(self, cache: ActivationCache, n_rows: int | None = None):
        n_rows = cache.total_rows if n_rows is None else min(n_rows, cache.total_rows)
        toks, ctx, pos, have = [], [], [], 0
        for i, s in enumerate(cache.shards):
            if have >= n_rows:
                break
            t = cache.open_shard(i)
            if "context_ids" not in t or "positions" not in t:
                raise CacheError(f"{cache.path}: {NO_POSITIONS}")
            take = min(int(s["rows"]), n_rows - have)
            toks.append(np.asarray(t["token_ids"].array[:take], dtype=np.int64))
            ctx.append(np.asarray(t["context_ids"].array[:take], dtype=np.int64))
            pos.append(np.asarray(t["positions"].array[:take], dtype=np.int64))
            have += take
        self.token_ids = np.concatenate(toks) if toks else np.zeros(0, np.int64)
        self.context_ids = np.concatenate(ctx) if ctx else np.zeros(0, np.int64)
        self.positions = np.concatenate(pos) if pos else np.zeros(0, np.int64)

    def __len__(self) -> int:
        return len(self.token_ids)

    def window(self, row: int, w: int) -> tuple[list[int], int]:
        """Token ids of rows ``row − w … row + w`` within ``row``'s context, and the index of
        ``row`` in that list."""
        n, c = len(self), self.context_ids[row]
        lo = max(0, row - w)
        hi = min(n, row + w + 1)
        seg = self.context_ids[lo:hi]
        same = np.nonzero(seg == c)[0]          # rows of one context are consecutive
        a, b = lo + int(same[0]), lo + int(same[-1]) + 1
        return self.token_ids[a:b].tolist(), row - a


class TokenDecoder:
    """Decodes single token ids to strings (memoised): ``decode(ids) -> list[str]``."""

    def __init__(self, decode_one: Callable[[int], str]):
        self._one = decode_one
        self._memo: dict[int, str] = {}

    @classmethod
    def from_tokenizer(cls, tok) -> TokenDecoder:
        return cls(lambda i: tok.decode([i]))

    def __call__(self, ids: Sequence[int]) -> list[str]:
        out = []
        for i in ids:
            s = self._memo.get(i)
            if s is None:
                s = self._memo[i] = self._one(int(i))
            out.append(s)
        return out
