"""Sparse probing (SAEBench's ``sparse_probing``), sign-aware.

For each binary task (balanced train/test split, :func:`.tasks.load_task_data`):

1. pooled activations per sentence (:mod:`.activations`): raw residual x̄ [n, d_in], signed
   code z̄ = mean_t z_t and firing strength ā = mean_t |z_t| [n, d_sae];
2. **latent selection** on the train split by class-mean difference::

       score_i = | mean_{y=1} F_i − mean_{y=0} F_i |

   with ``F = ā`` (**abs** variant, the default: a latent that encodes the class with a
   negative sign, or with either sign, is found) or ``F = z̄`` (**signed** variant, SAEBench's
   rule applied to signed codes). Ties break by the lower latent index;
3. a logistic probe (:class:`.probes.LinearProbe`, isotropically scaled, L2 with ``C``) on the k
   selected columns of F, accuracy on the test split, for k ∈ ``k_values`` (default 1, 2, 5);
4. baselines: the same probe on all d_in residual dimensions (``llm_test_accuracy``) and, with
   ``all_latents``, on all d_sae latents of z̄ (``sae_test_accuracy``).

Reported per task and averaged over tasks; ``summary`` = mean over tasks of the abs-variant
top-1 accuracy (SAEBench's headline number is top-1 accuracy; higher is better).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .activations import pooled_activations, resolve_hook
from .probes import LinearProbe
from .tasks import load_task_data

__all__ = ["DEFAULT_TASKS", "K_VALUES", "class_mean_diff", "run_sparse_probing",
           "select_top_k", "sparse_probe"]

DEFAULT_TASKS = ("sentiment", "language_it", "language_zh")
K_VALUES = (1, 2, 5)


def _np(a) -> np.ndarray:
    if hasattr(a, "detach"):
        a = a.detach().cpu().numpy()
    return np.asarray(a, dtype=np.float64)


def class_mean_diff(F, y) -> np.ndarray:
    """``|mean(F[y == 1]) − mean(F[y == 0])|`` per column; F [n, d], y [n] in {0, 1}."""
    F, y = _np(F), np.asarray(y)
    if set(np.unique(y).tolist()) != {0, 1}:
        raise ValueError("class_mean_diff needs binary labels 0/1 with both present")
    return np.abs(F[y == 1].mean(0) - F[y == 0].mean(0))


def select_top_k(F, y, k: int) -> np.ndarray:
    """Indices [k] of the columns of F with the largest class-mean difference (ties: lower
    index first), best first."""
    s = class_mean_diff(F, y)
    order = np.lexsort((np.arange(len(s)), -s))
    return order[:k]


def sparse_probe(F_train, y_train, F_test, y_test, k: int, C: float = 1.0
                 ) -> tuple[float, np.ndarray]:
    """(test accuracy, selected indices) of a logistic probe on the top-k columns of F."""
    idx = select_top_k(F_train, y_train, k)
    F_train, F_test = _np(F_train), _np(F_test)
    p = LinearProbe(C=C).fit(F_train[:, idx], y_train)
    return p.score(F_test[:, idx], y_test), idx


def run_sparse_probing(sae, model, tokenizer, *, tasks: Sequence[str] = DEFAULT_TASKS,
                       device: str = "cpu", n_examples: int = 1000, seed: int = 0,
                       k_values: Sequence[int] = K_VALUES, layer: int | None = None,
                       site: str | None = None, batch_size: int = 32, max_length: int = 128,
                       C: float = 1.0, all_latents: bool = True, test_fraction: float = 0.25,
                       progress: bool = True, log=print) -> dict:
    """Sparse probing of ``sae`` on each task; returns JSON-serialisable numbers (see module).

    ``n_examples`` sentences per task (balanced). Per task: ``llm_test_accuracy``,
    ``sae_test_accuracy`` (all latents), ``sae_{abs,signed}_top_{k}_test_accuracy`` and the
    selected latent indices ``sae_{abs,signed}_top_{k}_latents``.
    """
    layer, site = resolve_hook(sae, layer, site)
    if isinstance(tasks, str):
        tasks = [t for t in tasks.split(",") if t]
    per_task: dict[str, dict] = {}
    for name in tasks:
        data = load_task_data(name, n_examples, seed, test_fraction=test_fraction, log=log)
        if len(data.classes) != 2:
            raise ValueError(f"sparse probing needs a binary task; {name!r} has classes "
                             f"{data.classes}")
        kw = dict(layer=layer, site=site, device=device, batch_size=batch_size,
                  max_length=max_length, progress=progress)
        tr = pooled_activations(sae, model, tokenizer, data.train_texts, desc=f"{name} train", **kw)
        te = pooled_activations(sae, model, tokenizer, data.test_texts, desc=f"{name} test", **kw)
        ytr, yte = data.train_y, data.test_y
        r: dict = {"classes": data.classes, "n_train": len(ytr), "n_test": len(yte)}
        r["llm_test_accuracy"] = LinearProbe(C=C).fit(tr.x, ytr).score(te.x, yte)
        if all_latents:
            r["sae_test_accuracy"] = LinearProbe(C=C).fit(tr.z, ytr).score(te.z, yte)
        for variant, Ftr, Fte in (("abs", tr.a, te.a), ("signed", tr.z, te.z)):
            for k in k_values:
                acc, idx = sparse_probe(Ftr, ytr, Fte, yte, k, C)
                r[f"sae_{variant}_top_{k}_test_accuracy"] = acc
                r[f"sae_{variant}_top_{k}_latents"] = [int(i) for i in idx]
        per_task[name] = r
    out: dict = {"layer": layer, "site": site, "k_values": list(k_values), "seed": seed,
                 "n_examples": n_examples, "tasks": per_task}
    keys = ["llm_test_accuracy"] + (["sae_test_accuracy"] if all_latents else []) + [
        f"sae_{v}_top_{k}_test_accuracy" for v in ("abs", "signed") for k in k_values]
    for key in keys:
        out[key] = float(np.mean([per_task[t][key] for t in per_task]))
    out["summary"] = out[f"sae_abs_top_{min(k_values)}_test_accuracy"]
    return out
