"""Text, labelled data, tokens and activation caches.

- :mod:`abstopk.data.corpus` — the embedded default corpus (Debian kernel/Python docs, Austen),
  fetched into ``$ABSTOPK_CACHE``: ``abstopk data fetch corpus``.
- :mod:`abstopk.data.labelled` — the probing tasks' labelled sentences (VADER, FEVER,
  linux-doc translations, users' files): ``abstopk data fetch probing``.
- :mod:`abstopk.data.text` — ``iter_texts(source, split, seed=0)`` / ``iter_documents``:
  embedded corpus, local ``.txt``/``.jsonl``/``.parquet`` files, Hugging Face datasets
  (streaming); finite sources in a seeded shuffled document order (:mod:`.doc_order`).
- :mod:`abstopk.data.tokens` — ``iter_contexts`` / ``ContextStream``: tokenise, prepend BOS,
  pack into contexts, mix them in windows.
- :mod:`abstopk.data.harvest`, :mod:`abstopk.data.cache` — activation harvesting and the
  on-disk cache (format and manifest check: :mod:`.cache_format`; writer:
  :mod:`.cache_writer`; see docs/data.md).
- :mod:`abstopk.data.heldout` — ``heldout_activations``: held-out activations in memory.
- :mod:`abstopk.data.loader` — ``CacheLoader``: streaming shuffled fp32 batches from a cache.
- :mod:`abstopk.data.sources` — the ``BatchSource`` protocol the trainer reads;
  ``IterableSource`` (re-batches any iterable).
- :mod:`abstopk.data.matrix` — ``MatrixSource`` over a [N, d_in] tensor/array or a
  memory-mapped ``.npy`` / ``.safetensors`` file (``load_matrix``, ``scan_nonfinite``).
- :mod:`abstopk.data.prefetch` — the one background reader (``prefetch``, ``PrefetchSource``).
- :mod:`abstopk.data.open` — ``open_source``: path, cache folder, array or iterable → source.

Submodules are imported on demand so ``import abstopk.data`` stays light.
"""

from __future__ import annotations
