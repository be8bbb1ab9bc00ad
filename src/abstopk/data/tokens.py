"""Tokenise documents, prepend BOS, pack into fixed-length contexts.

The token stream is ``[BOS] doc_0 [BOS] doc_1 [BOS] doc_2 ...`` (BOS = the tokenizer's
``bos_token_id``, falling back to ``eos_token_id``), cut into consecutive, non-overlapping
contexts of ``context_size`` tokens (the paper: 128). A document longer than the remaining room
continues in the next context (documents are truncated at context boundaries, never dropped);
the final incomplete context is dropped. The order is deterministic: documents in source
order, contexts in stream order.

Harvesting excludes BOS/pad positions by default: :func:`special_position_mask` marks them.
Note that a context which starts in the middle of a document has an ordinary token at
position 0.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch

__all__ = ["bos_token_id", "iter_contexts", "special_position_mask", "tokenize_documents"]


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


def iter_contexts(tokenizer, source="embedded", split: str = "train", context_size: int = 128,
                  prepend_bos: bool = True, texts: Iterable[str] | None = None, *,
                  batch_docs: int = 64) -> Iterator[torch.Tensor]:
    """Packed contexts, each a ``torch.LongTensor[context_size]``.

    Documents come from ``texts`` when given, else from
    :func:`abstopk.data.text.iter_texts(source, split) <abstopk.data.text.iter_texts>`.
    With ``prepend_bos`` each document is preceded by the BOS id (see :func:`bos_token_id`).
    """
    if context_size < 1:
        raise ValueError(f"context_size must be >= 1, got {context_size}")
    if texts is None:
        from .text import iter_texts

        texts = iter_texts(source, split)
    bos = [bos_token_id(tokenizer)] if prepend_bos else []
    buf: list[int] = []
    for ids in tokenize_documents(tokenizer, texts, batch_docs):
        if not ids:
            continue
        buf.extend(bos)
        buf.extend(ids)
        if len(buf) >= context_size:
            n = len(buf) // context_size * context_size
            block = torch.tensor(buf[:n], dtype=torch.long).view(-1, context_size)
            buf = buf[n:]
            for row in block:
                yield row.clone()


def special_position_mask(ids: torch.Tensor, tokenizer) -> torch.Tensor:
    """Bool mask, same shape as ``ids``, True at BOS (or its EOS fallback) and pad positions.

    Harvesting drops these positions unless asked to keep them.
    """
    special = {bos_token_id(tokenizer)}
    pad = getattr(tokenizer, "pad_token_id", None)
    if pad is not None:
        special.add(int(pad))
    return torch.isin(ids, torch.tensor(sorted(special), dtype=ids.dtype, device=ids.device))
