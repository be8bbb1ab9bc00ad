"""Text, tokens and activation caches.

- :mod:`abstopk.data.corpus` — the embedded default corpus (Debian kernel/Python docs, Austen),
  fetched into ``$ABSTOPK_CACHE``: ``python -m abstopk.data.corpus fetch``.
- :mod:`abstopk.data.text` — ``iter_texts(source, split)``: embedded corpus, local
  ``.txt``/``.jsonl``/``.parquet`` files, Hugging Face datasets (streaming).
- :mod:`abstopk.data.tokens` — ``iter_contexts``: tokenise, prepend BOS, pack into contexts.
- :mod:`abstopk.data.harvest`, :mod:`abstopk.data.cache` — activation harvesting and the
  on-disk cache (see CACHE_FORMAT in the docs).
- :mod:`abstopk.data.heldout` — ``heldout_activations``: held-out activations in memory.
- :mod:`abstopk.data.loader` — ``CacheLoader``: streaming shuffled fp32 batches from a cache.

Submodules are imported on demand so ``import abstopk.data`` stays light.
"""

from __future__ import annotations
