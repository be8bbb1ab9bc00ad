"""Logistic-regression probes (scikit-learn) with weights expressed in the raw feature space.

A probe centres its features and divides them by ONE scalar ``s`` (the root-mean-square of
the per-feature standard deviations; 1 for constant data), fits
``sklearn.linear_model.LogisticRegression`` (L2, ``C``, lbfgs; deterministic) and exposes the
equivalent affine map on the *raw* features::

    logit(x) = (x − μ)/s · coef + b = x · w_raw + b_raw,   w_raw = coef/s,
    b_raw = b − coef·μ/s

An isotropic scale keeps the geometry of the raw space, so ``w_raw`` is the L2-regularised
solution in that space and its direction can be compared with decoder rows. Per-feature
standardisation would not: on nearly rank-one data (two perfectly correlated concepts, as in
SCR's biased set) it can turn the probe direction against one of the concepts. Accuracy of
the raw-residual sentiment probe was the same either way (0.750 vs 0.746, 30 splits).

so that ``w_raw`` can be dotted with SAE decoder rows (SCR/TPP latent attribution, absorption
probe directions). Binary probes have one weight row (positive class = label 1); multi-class
probes (multinomial) one row per class.

Fitting and prediction run with BLAS limited to one thread (``threadpoolctl``): these problems
are small (hundreds to a few thousand rows), and on a busy machine a multi-threaded BLAS
spinning on shared cores made a 208×576, 26-class fit 50× slower (8 s vs 0.15 s).
"""

from __future__ import annotations

import contextlib
import warnings

import numpy as np

__all__ = ["LinearProbe", "accuracy", "mean_accuracy_interval", "wilson_interval"]


def _np(a) -> np.ndarray:
    if hasattr(a, "detach"):
        a = a.detach().cpu().numpy()
    return np.asarray(a, dtype=np.float64)


def _one_blas_thread():
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl ships with scikit-learn
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def accuracy(pred, y) -> float:
    """Fraction of ``pred == y``."""
    pred, y = np.asarray(pred), np.asarray(y)
    return float((pred == y).mean()) if len(y) else float("nan")


def wilson_interval(p: float, n: float, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score interval (95 % for the default z) of an accuracy ``p`` on ``n`` test items::

        centre = (p + z²/2n) / (1 + z²/n),  half = z·sqrt(p(1 − p)/n + z²/4n²) / (1 + z²/n)

    (NaN, NaN) when n = 0."""
    if not n > 0 or not np.isfinite(p):
        return (float("nan"), float("nan"))
    z2 = z * z
    den = 1.0 + z2 / n
    centre = (p + z2 / (2 * n)) / den
    half = z * np.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / den
    return (float(max(0.0, centre - half)), float(min(1.0, centre + half)))


def mean_accuracy_interval(ps, ns, z: float = 1.959964) -> tuple[float, float]:
    """Interval of the mean of T independent accuracies ``ps`` on ``ns`` test items: the
    Wilson interval of the mean with the effective size n_eff = T² / Σ_t 1/n_t (the n for
    which p(1 − p)/n_eff = Σ_t p(1 − p)/n_t / T² when every task has accuracy p; one task:
    its own Wilson interval; T tasks of n items each: Wilson on T·n)."""
    ps, ns = np.asarray(ps, dtype=np.float64), np.asarray(ns, dtype=np.float64)
    if len(ps) == 0 or (ns <= 0).any():
        return (float("nan"), float("nan"))
    n_eff = len(ps) ** 2 / float((1.0 / ns).sum())
    return wilson_interval(float(ps.mean()), n_eff, z)


class LinearProbe:
    """Centred, isotropically scaled logistic-regression probe. ``fit(X [n, d], y [n])``."""

    def __init__(self, C: float = 1.0, max_iter: int = 2000) -> None:
        self.C, self.max_iter = C, max_iter
        self.mu: np.ndarray | None = None
        self.sigma: float = 1.0
        self.clf = None

    def fit(self, X, y) -> LinearProbe:
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.linear_model import LogisticRegression

        X, y = _np(X), np.asarray(y)
        self.mu = X.mean(0)
        s = float(np.sqrt((X.var(0)).mean())) if X.size else 0.0
        self.sigma = s if s > 1e-12 else 1.0
        self.clf = LogisticRegression(C=self.C, max_iter=self.max_iter)
        with warnings.catch_warnings(), _one_blas_thread():
            warnings.simplefilter("ignore", ConvergenceWarning)
            self.clf.fit((X - self.mu) / self.sigma, y)
        return self

    @property
    def classes(self) -> np.ndarray:
        return self.clf.classes_

    def decision_function(self, X) -> np.ndarray:
        with _one_blas_thread():
            return self.clf.decision_function((_np(X) - self.mu) / self.sigma)

    def predict(self, X) -> np.ndarray:
        with _one_blas_thread():
            return self.clf.predict((_np(X) - self.mu) / self.sigma)

    def score(self, X, y) -> float:
        """Accuracy on (X, y)."""
        return accuracy(self.predict(X), y)

    @property
    def w_raw(self) -> np.ndarray:
        """[n_rows, d] weights on the raw features (1 row for a binary probe)."""
        return self.clf.coef_ / self.sigma

    @property
    def b_raw(self) -> np.ndarray:
        """[n_rows] intercepts on the raw features."""
        return self.clf.intercept_ - (self.clf.coef_ * self.mu).sum(1) / self.sigma
