"""Evaluation of SAEs: reconstruction and sign statistics, loss recovered, probing tasks.

* :mod:`abstopk.eval.metrics` — streaming MSE / NMSE / explained variance / cosine / L0 /
  dead & dense latents / sign statistics on activations (tensor, cache, file or batches);
* :mod:`abstopk.eval.loss_recovered` — CE clean / spliced / zero- and mean-ablated, loss
  recovered (both baselines) and KL with bootstrap intervals over contexts, the SAE's
  reconstruction spliced into the language model (one SAE or several sharing the clean and
  ablated runs);
* :mod:`abstopk.eval.heldout` — :func:`evaluate_saes`: several SAEs on the same held-out
  activations and contexts;
* :mod:`abstopk.eval.inference_k` — run a TopK-family SAE with another k (no retraining);
* :mod:`abstopk.eval.run` — :func:`evaluate_sae`, the orchestration behind ``abstopk eval``;
* ``abstopk.eval.probing`` — the probing tasks (``TASKS`` registry).

Importing this package is light (torch only); the LM stack loads on first use.
"""

from __future__ import annotations

__all__ = [
    "MetricAccumulator",
    "ReconstructionMetrics",
    "evaluate_loss_recovered",
    "evaluate_reconstruction",
    "evaluate_sae",
    "evaluate_saes",
]


def __getattr__(name: str):
    if name in ("MetricAccumulator", "ReconstructionMetrics", "evaluate_reconstruction"):
        from . import metrics

        return getattr(metrics, name)
    if name == "evaluate_loss_recovered":
        from .loss_recovered import evaluate_loss_recovered

        return evaluate_loss_recovered
    if name == "evaluate_sae":
        from .run import evaluate_sae

        return evaluate_sae
    if name == "evaluate_saes":
        from .heldout import evaluate_saes

        return evaluate_saes
    raise AttributeError(f"module 'abstopk.eval' has no attribute {name!r}")
