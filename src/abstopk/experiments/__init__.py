"""Experiments: compositions of training, evaluation and reports.

* :mod:`.sweep_config` — :class:`SweepConfig` (``abstopk sweep``'s settings) and the SAEs
  of a sweep;
* :mod:`.sweep` — :func:`run_sweep`: one pass over an activation cache per seed trains every
  SAE of the sparsity grid, then held-out evaluation, inference-time k, CSV/JSON/Markdown/plot;
* :mod:`.sweep_summary` — mean ± std over seeds;
* :mod:`.demo` — :func:`run_pipeline`, the demo's real-model pipeline (corpus → harvest →
  sweep → probing → tables).

Submodules are imported on demand so ``import abstopk.experiments`` stays light.
"""

from __future__ import annotations

__all__ = ["SweepConfig", "run_pipeline", "run_sweep"]


def __getattr__(name: str):
    if name == "SweepConfig":
        from .sweep_config import SweepConfig

        return SweepConfig
    if name == "run_sweep":
        from .sweep import run_sweep

        return run_sweep
    if name == "run_pipeline":
        from .demo import run_pipeline

        return run_pipeline
    raise AttributeError(f"module 'abstopk.experiments' has no attribute {name!r}")
