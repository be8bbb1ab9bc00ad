"""Reports: plots of sweeps and evaluations (:mod:`.plots`, matplotlib with the Agg backend).

Importing this package is light; matplotlib is imported when a plot is drawn.
"""

from __future__ import annotations

__all__ = ["plot_sweep"]


def __getattr__(name: str):
    if name == "plot_sweep":
        from .plots import plot_sweep

        return plot_sweep
    raise AttributeError(f"module 'abstopk.report' has no attribute {name!r}")
