"""Evaluation at the checkpoints of a training run (single process or data parallel).

:func:`checkpoint_evaluator` turns a :class:`CheckpointEvalConfig` into the ``on_checkpoint``
hook of :class:`~abstopk.train.trainer.Trainer`: after each checkpoint, rank 0 evaluates a
copy of the SAE in training with :func:`~abstopk.eval.run.evaluate_sae` —

* reconstruction (``nmse`` = mean ‖x − x̂‖²/‖x‖², ``fvu``, ``l0``, ``dead_fraction``, …) on
  up to ``eval_tokens`` rows of the held-out cache ``eval_cache`` (or, without a cache, of
  held-out activations harvested from ``eval_source``);
* with ``eval_contexts`` > 0, loss recovered ``(CE_zero − CE_spliced)/(CE_zero − CE_clean)``
  and KL(clean ‖ spliced) over that many held-out contexts of the text source
  ``eval_source`` (the language model is loaded once, at the first checkpoint);

and the trainer logs the numbers to ``metrics.jsonl`` as ``{"step", "event": "eval", ...}``.
The other ranks wait at the checkpoint barrier meanwhile (the process-group timeout must
exceed the evaluation's time).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..fields import doc_field

__all__ = ["CheckpointEvalConfig", "checkpoint_evaluator"]

#: keys of evaluate_sae's result logged at a checkpoint
LOGGED = ("n_tokens", "nmse", "fvu", "mse", "explained_variance", "l0", "dead_fraction", "ce_clean",
          "ce_spliced", "ce_zero_ablated", "loss_recovered", "kl")


@dataclass
class CheckpointEvalConfig:
    """What is evaluated at each checkpoint of a training run (nothing by default)."""

    eval_cache: str | None = doc_field(
        "Held-out activation cache evaluated at every checkpoint (nmse, fvu, L0 on up to "
        "eval_tokens rows); None: none unless eval_contexts > 0.", None)
    eval_tokens: int = doc_field("Held-out rows of the reconstruction evaluated at each "
                                 "checkpoint.", 4096)
    eval_contexts: int = doc_field(
        "Held-out contexts for loss recovered and KL at every checkpoint (the SAE spliced into "
        "the language model; 0: no loss recovered).", 0)
    eval_source: str = doc_field(
        "Text of the held-out contexts (and of the activations when there is no eval "
        "cache): embedded, a .txt/.jsonl/.parquet file, a folder of .txt files or a Hugging "
        "Face dataset; its held-out split is used.", "embedded")

    def __post_init__(self) -> None:
        if self.eval_tokens < 0 or self.eval_contexts < 0:
            raise ValueError("eval_tokens and eval_contexts must be ≥ 0")

    @property
    def enabled(self) -> bool:
        return self.eval_cache is not None or self.eval_contexts > 0


def checkpoint_evaluator(cfg: CheckpointEvalConfig, device: str = "cpu"
                         ) -> Callable[[Any, int], dict[str, Any]] | None:
    """The ``on_checkpoint`` hook ``(sae, step) -> metrics`` of ``cfg`` (None: nothing to do)."""
    if not cfg.enabled:
        return None
    from ..eval.run import evaluate_sae

    loaded: list[Any] = []

    def hook(sae: Any, step: int) -> dict[str, Any]:
        t0 = time.perf_counter()
        snap = copy.deepcopy(sae).eval()
        if cfg.eval_contexts > 0 or cfg.eval_cache is None:
            if not loaded:
                from ..eval.run import resolve_target
                from ..lm.load import load_model

                target = resolve_target(snap, cache=cfg.eval_cache)
                loaded.append(load_model(target["model"], device=device))
        res = evaluate_sae(snap, cache=cfg.eval_cache, tokens=cfg.eval_tokens,
                           contexts=cfg.eval_contexts, source=cfg.eval_source, device=device,
                           loaded=loaded[0] if loaded else None, progress=False)
        rec = {k: res[k] for k in LOGGED if isinstance(res.get(k), (int, float))}
        rec["eval_contexts"] = int(res.get("lr_contexts", 0))
        rec["eval_s"] = round(time.perf_counter() - t0, 2)
        return rec

    return hook
