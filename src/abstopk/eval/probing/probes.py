"""Logistic-regression probes (scikit-learn) with weights expressed in the raw feature space.

A probe standardises its features (``(x − μ)/σ``, σ = 1 for constant features), fits
``sklearn.linear_model.LogisticRegression`` (L2, ``C``, lbfgs; deterministic) and exposes the
equivalent affine map on the *raw* features::

    logit(x) = (x − μ)/σ · coef + b = x · w_raw + b_raw,   w_raw = coef/σ,
    b_raw = b − Σ_j coef_j μ_j/σ_j

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

__all__ = ["LinearProbe", "accuracy"]


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


class LinearProbe:
    """Standardised logistic-regression probe. ``fit(X [n, d], y [n])`` then ``predict``."""

    def __init__(self, C: float = 1.0, max_iter: int = 2000) -> None:
        self.C, self.max_iter = C, max_iter
        self.mu: np.ndarray | None = None
        self.sigma: np.ndarray | None = None
        self.clf = None

    def fit(self, X, y) -> LinearProbe:
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.linear_model import LogisticRegression

        X, y = _np(X), np.asarray(y)
        self.mu = X.mean(0)
        sd = X.std(0)
        self.sigma = np.where(sd > 1e-12, sd, 1.0)
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
        return self.clf.intercept_ - (self.clf.coef_ * (self.mu / self.sigma)).sum(1)
