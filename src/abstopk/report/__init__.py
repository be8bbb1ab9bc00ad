"""Reports: tables and plots of results handed over as plain dicts and rows.

* :mod:`.tables` — generic Markdown / rich / CSV rendering;
* :mod:`.sweep_tables` — ``sweep.csv`` and the sweep summary (mean ± std over seeds);
* :mod:`.eval_table` — the table of ``abstopk eval``;
* :mod:`.synthetic_table` — the synthetic ground-truth benchmark;
* :mod:`.demo_tables` — the demo pipeline's probing table and ``pipeline.md``;
* :mod:`.plots` — plots of sweeps (matplotlib with the Agg backend);
* :mod:`.html` — HTML building blocks (escaping, tables, page skeleton, JS data files);
* :mod:`.html_report` — the demo's one-page ``report.html`` and its terminal summary;
* :mod:`.dashboard` — the signed feature dashboard (static site over latent statistics).

This package imports only the bottom modules (:mod:`abstopk.files`, :mod:`abstopk.fields`,
:mod:`abstopk.errors`); importing it is light (rich and matplotlib load on first use).
"""

from __future__ import annotations

__all__ = ["plot_sweep"]


def __getattr__(name: str):
    if name == "plot_sweep":
        from .plots import plot_sweep

        return plot_sweep
    raise AttributeError(f"module 'abstopk.report' has no attribute {name!r}")
