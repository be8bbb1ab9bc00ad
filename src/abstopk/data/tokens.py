"""Tokenise documents, prepend BOS, pack into fixed-length contexts.

The token stream is ``[BOS] doc_0 [BOS] doc_1 [BOS] doc_2 ...`` (BOS = the tokenizer's
``bos_token_id``, falling back to ``eos_token_id``), cut into consecutive, non-overlapping
contexts of ``context_size`` tokens (the paper: 128). A document longer than the remaining room
continues in the next context (documents are truncated at context boundaries, never dropped);
the final incomplete context is dropped.

Order (deterministic, a function of ``seed``): documents in the seeded, shuffled,
document-level order of :func:`abstopk.data.text.iter_documents`; the packed contexts are
then *mixed* in consecutive windows of ``mix_window`` contexts (default 1024 = 131k tokens at
128 per context): window ``w`` is emitted in the order
``numpy.random.default_rng([seed, 1, w]).permutation(len(window))``. A long document (a
kernel page can hold 50k tokens) thus does not fill the start of the stream by itself: the
first contexts already come from many documents of every source. ``seed=None`` keeps file
order and no mixing; explicit ``texts`` are packed in the order given, unmixed.

Harvesting excludes BOS/pad positions by default: :func:`special_position_mask` marks them.
Note that a context which starts in the middle of a document has an ordinary token at
position 0.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator

import numpy as np
import torch

__all__ = ["MIX_WINDOW", "ContextStream", "bos_token_id", "iter_contexts", "mix_contexts",
           "special_position_mask", "tokenize_documents"]

#: contexts per mixing window (see the module docstring)
MIX_WINDOW = 1024


def bos_token_id(tokenizer) -> int:
    """``tokenizer.bos_token_id``, else ``eos_token_id``; error when it has neither."""
    for name in ("bos_token_id", "eos_token_id"):
        v = getattr(tokenizer, name, None)
        if v is not None:
            return int(v)
    raise ValueError("the tokenizer has neither a BOS nor an EOS token to separate documents")


def tokenize_documents(tokenizer, texts: Iterable[str], batch_docs: int = 64
                       ) -> Iterator[list[int]]:
    """Token ids of each document (no special tokens added), tokenised ``batch_docs`` at a
    time (the fast tokenizers encode a batch in parallel)."""
    batch: list[str] = []

    def encode(b: list[str]) -> list[list[int]]:
        return tokenizer(b, add_special_tokens=False, verbose=False)["input_ids"]

    for t in texts:
        batch.append(t)
        if len(batch) == batch_docs:
            yield from encode(batch)
            batch = []
    if batch:
        yield from encode(batch)


def mix_contexts(items: Iterable, window: int, seed: int) -> Iterator:
    """``items`` re-ordered within consecutive windows of ``window``: window ``w`` (the last
    one may be shorter) in the order ``default_rng([seed, 1, w]).permutation(len)``."""
    it = iter(items)
    w = 0
    while True:
        buf = list(itertools.islice(it, window))
        if not buf:
            return
        for i in np.random.default_rng([int(seed), 1, w]).permutation(len(buf)):
            yield buf[int(i)]
        w += 1


class ContextStream:
    """Packed contexts with the corpus part of each position.

    Iterating yields ``(ids, src)``: ``ids`` LongTensor[context_size], ``src``
    ShortTensor[context_size], the index in :attr:`labels` of the document label (e.g.
    ``linux-doc``) of each position (a BOS takes the label of the document it opens).
    ``labels`` grows as new labels are met. Order: see the module docstring.
    """

    def __init__(self, tokenizer, source="embedded", split: str = "train",
                 context_size: int = 128, prepend_bos: bool = True, *,
                 seed: int | None = 0, mix_window: int = MIX_WINDOW, batch_docs: int = 64,
                 documents: Iterable[tuple[str, str]] | None = None) -> None:
        if context_size < 1:
            raise ValueError(f"context_size must be >= 1, got {context_size}")
        if mix_window < 1:
            raise ValueError(f"mix_window must be >= 1, got {mix_window}")
        self.tokenizer, self.source, self.split = tokenizer, source, split
        self.context_size, self.prepend_bos = int(context_size), bool(prepend_bos)
        self.seed, self.mix_window, self.batch_docs = seed, int(mix_window), int(batch_docs)
        self.documents = documents
        self.labels: list[str] = []

    def _packed(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        docs = self.documents
        if docs is None:
            from .text import iter_documents

            docs = iter_documents(self.source, self.split, seed=self.seed)
        cs = self.context_size
        bos = [bos_token_id(self.tokenizer)] if self.prepend_bos else []
        code: dict[str, int] = {}
        buf: list[int] = []
        src: list[int] = []
        pairs = _pairs(docs)
        for ids, label in _tokenize_labelled(self.tokenizer, pairs, self.batch_docs):
            if not ids:
                continue
            if label not in code:
                code[label] = len(self.labels)
                self.labels.append(label)
            buf.extend(bos)
            buf.extend(ids)
            src.extend([code[label]] * (len(bos) + len(ids)))
            if len(buf) >= cs:
                n = len(buf) // cs * cs
                block = torch.tensor(buf[:n], dtype=torch.long).view(-1, cs)
                sblock = torch.tensor(src[:n], dtype=torch.int16).view(-1, cs)
                buf, src = buf[n:], src[n:]
                for row, srow in zip(block, sblock, strict=True):
                    yield row.clone(), srow.clone()

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if self.seed is None or self.documents is not None:
            return self._packed()
        return mix_contexts(self._packed(), self.mix_window, int(self.seed))


def _pairs(docs: Iterable) -> Iterator[tuple[str, str]]:
    for d in docs:
        yield (d, "text") if isinstance(d, str) else d


def _tokenize_labelled(tokenizer, pairs: Iterable[tuple[str, str]], batch_docs: int
                       ) -> Iterator[tuple[list[int], str]]:
    batch: list[tuple[str, str]] = []
    for p in pairs:
        batch.append(p)
        if len(batch) == batch_docs:
            yield from zip(tokenize_documents(tokenizer, [t for t, _ in batch], batch_docs),
                           [lab for _, lab in batch], strict=True)
            batch = []
    if batch:
        yield from zip(tokenize_documents(tokenizer, [t for t, _ in batch], batch_docs),
                       [lab for _, lab in batch], strict=True)


def iter_contexts(tokenizer, source="embedded", split: str = "train", context_size: int = 128,
                  prepend_bos: bool = True, texts: Iterable[str] | None = None, *,
                  batch_docs: int = 64, seed: int | None = 0,
                  mix_window: int = MIX_WINDOW) -> Iterator[torch.Tensor]:
    """Packed contexts, each a ``torch.LongTensor[context_size]``.

    Documents come from ``texts`` when given (packed in that order, unmixed), else from
    :func:`abstopk.data.text.iter_documents(source, split, seed=seed)
    <abstopk.data.text.iter_documents>`, mixed in windows of ``mix_window`` contexts (see the
    module docstring). With ``prepend_bos`` each document is preceded by the BOS id (see
    :func:`bos_token_id`).
    """
    stream = ContextStream(tokenizer, source, split, context_size, prepend_bos, seed=seed,
                           mix_window=mix_window, batch_docs=batch_docs,
                           documents=None if texts is None else _pairs(texts))
    for ids, _ in stream:
        yield ids


def special_position_mask(ids: torch.Tensor, tokenizer) -> torch.Tensor:
    """Bool mask, same shape as ``ids``, True at BOS (or its EOS fallback) and pad positions.

    Harvesting drops these positions unless asked to keep them.
    """
    special = {bos_token_id(tokenizer)}
    pad = getattr(tokenizer, "pad_token_id", None)
    if pad is not None:
        special.add(int(pad))
    return torch.isin(ids, torch.tensor(sorted(special), dtype=ids.dtype, device=ids.device))
