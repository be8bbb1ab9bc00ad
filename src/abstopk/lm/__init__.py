"""Language models: loading (hub id, local folder, GGUF, embedded default) and hook points.

``load_model`` lives in :mod:`abstopk.lm.load`; hooks, truncated forward and the
replace/steer context managers in :mod:`abstopk.lm.hooks`. Importing this package is light:
transformers is imported only when a model is loaded.
"""

from __future__ import annotations

from .hooks import (
    SITES,
    capture_activations,
    count_block_calls,
    find_blocks,
    hook_name,
    parse_hook_name,
    replace_activation,
    run_to_layer,
    site_module,
)
from .load import DEFAULT_MODEL, ModelInfo, ModelNotFound, embedded_gguf_path, load_model

__all__ = [
    "DEFAULT_MODEL",
    "SITES",
    "ModelInfo",
    "ModelNotFound",
    "capture_activations",
    "count_block_calls",
    "embedded_gguf_path",
    "find_blocks",
    "hook_name",
    "load_model",
    "parse_hook_name",
    "replace_activation",
    "run_to_layer",
    "site_module",
]
