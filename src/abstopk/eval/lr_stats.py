"""The statistics of loss recovered over contexts: per-context CE/KL sums per LM run, the
ratios of :mod:`abstopk.eval.loss_recovered` (whose docstring defines them and the bootstrap)
and their percentile-bootstrap intervals over contexts.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from torch import Tensor

__all__ = ["BOOTSTRAP_RESAMPLES", "LossRecoveredAccumulator"]

#: bootstrap resamples of the confidence intervals (default)
BOOTSTRAP_RESAMPLES = 1000


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den != 0, num / np.where(den != 0, den, 1.0), np.nan)


class LossRecoveredAccumulator:
    """Per-context sums of CE (and KL) per run; :meth:`result` gives the summary dict.

    ``add(run, ce [C, P], kl [C, P] or None)`` records C contexts of P predicted tokens; the
    ``clean`` run also records the token counts. Every run must see the same contexts.
    """

    RUNS = ("clean", "spliced", "zero_ablated", "mean_ablated")

    def __init__(self) -> None:
        self.ce: dict[str, list[np.ndarray]] = {r: [] for r in self.RUNS}
        self.kl: dict[str, list[np.ndarray]] = {r: [] for r in self.RUNS}
        self.counts: list[np.ndarray] = []

    def add(self, run: str, ce: Tensor, kl: Tensor | None = None) -> None:
        if run not in self.RUNS:
            raise ValueError(f"unknown run {run!r}")
        ce = ce.reshape(1, -1) if ce.dim() == 1 else ce
        self.ce[run].append(ce.double().sum(1).cpu().numpy())
        if kl is not None:
            kl = kl.reshape(1, -1) if kl.dim() == 1 else kl
            self.kl[run].append(kl.double().sum(1).cpu().numpy())
        if run == "clean":
            self.counts.append(np.full(ce.shape[0], ce.shape[1], dtype=np.float64))

    @property
    def n_contexts(self) -> int:
        return int(sum(len(c) for c in self.counts))

    @property
    def n_pred(self) -> int:
        return int(sum(c.sum() for c in self.counts))

    def _sums(self) -> tuple[np.ndarray, dict[str, np.ndarray], dict[str, np.ndarray]]:
        n = np.concatenate(self.counts)
        ce = {r: np.concatenate(v) for r, v in self.ce.items() if v}
        kl = {r: np.concatenate(v) for r, v in self.kl.items() if v}
        for r, v in (*ce.items(), *kl.items()):
            if len(v) != len(n):
                raise ValueError(f"run {r!r} saw {len(v)} contexts, the clean run {len(n)}")
        return n, ce, kl

    @staticmethod
    def _stats(W: np.ndarray, n, ce, kl) -> dict[str, np.ndarray]:
        """Statistics for each row of the context multiplicities W [R, C]."""
        tot = W @ n
        c = {r: W @ v for r, v in ce.items()}
        out = {f"ce_{r}": c[r] / tot for r in c}
        for r in kl:
            out["kl" if r == "spliced" else f"kl_{r}"] = (W @ kl[r]) / tot
        if "spliced" in c and "zero_ablated" in c:
            out["loss_recovered"] = _ratio(c["zero_ablated"] - c["spliced"],
                                           c["zero_ablated"] - c["clean"])
        if "spliced" in c and "mean_ablated" in c:
            out["loss_recovered_mean_ablation"] = _ratio(c["mean_ablated"] - c["spliced"],
                                                         c["mean_ablated"] - c["clean"])
        return out

    def result(self, *, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0,
               level: float = 0.95) -> dict[str, Any]:
        """Point estimates and (``resamples`` > 0) bootstrap intervals over contexts."""
        if not self.counts:
            raise ValueError("no predicted tokens were evaluated")
        n, ce, kl = self._sums()
        point = self._stats(np.ones((1, len(n))), n, ce, kl)
        out: dict[str, Any] = {k: float(v[0]) for k, v in point.items()}
        out["lr_contexts"], out["lr_predicted_tokens"] = len(n), int(n.sum())
        if resamples > 0:
            rng = np.random.default_rng(seed)
            idx = rng.integers(0, len(n), size=(resamples, len(n)))
            W = np.zeros((resamples, len(n)))
            np.add.at(W, (np.arange(resamples)[:, None], idx), 1.0)
            boot = self._stats(W, n, ce, kl)
            a = (1.0 - level) / 2
            for key in ("loss_recovered", "loss_recovered_mean_ablation", "kl"):
                if key in boot:
                    v = boot[key][np.isfinite(boot[key])]
                    out[f"{key}_ci"] = ([float(np.quantile(v, a)), float(np.quantile(v, 1 - a))]
                                        if len(v) else [float("nan")] * 2)
            out["bootstrap"] = {"resamples": int(resamples), "seed": int(seed),
                                "level": float(level), "unit": "context"}
        return out
