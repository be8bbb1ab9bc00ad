"""Sparse probing (SAEBench's ``sparse_probing``), sign-aware.

For each binary task (de-duplicated, balanced train/test split, :func:`.tasks.load_task_data`):

1. pooled activations per sentence (:mod:`.activations`): raw residual x̄ [n, d_in], signed
   code z̄ = mean_t z_t and firing strength ā = mean_t |z_t| [n, d_sae];
2. **latent selection** on the train split, two rules reported side by side:

   * **signed** (the headline): the separation of the *signed* pooled code z̄, a
     standardised class-mean difference::

         score_i = | mean_{y=1} z̄_i − mean_{y=0} z̄_i | / s_i,
         s_i² = ((n₁ − 1) var_{y=1} z̄_i + (n₀ − 1) var_{y=0} z̄_i) / (n₁ + n₀ − 2)

     (pooled within-class standard deviation; a constant latent scores 0, a latent that
     separates with zero within-class spread scores +inf). Either sign can carry the class:
     a latent at +3 on one class and −3 on the other scores as high as one at +6 vs 0;
   * **abs** (unsigned, the rule before): ``| mean_{y=1} ā_i − mean_{y=0} ā_i |`` on the
     firing strength ā = mean |z| — blind to a latent whose *sign* separates the classes
     (|z| is the same on both sides).

   Ties break by the lower latent index;
3. a logistic probe (:class:`.probes.LinearProbe`, isotropically scaled, L2 with ``C``) on the
   k selected columns (of z̄ for signed, ā for abs), accuracy on the test split, for
   k ∈ ``k_values`` (default 1, 2, 5);
4. baselines: the same probe on all d_in residual dimensions (``llm_test_accuracy``) and, with
   ``all_latents``, on all d_sae latents of z̄ (``sae_test_accuracy``).

Every accuracy comes with its chance level (``chance``: the majority-class share of the test
split, 0.5 for balanced tasks) and a 95 % interval ``{key}_ci``: Wilson's on the task's n_test
sentences; for the means over tasks Wilson's with the effective size T²/Σ 1/n_t
(:func:`.probes.mean_accuracy_interval`).

Defaults: 2,000 sentences per task, test fraction 0.25 → 250 test sentences per class (and 750
train) where the task has them; ``n_test_per_class`` and ``n_duplicates_removed`` are reported
per task, and a task with fewer than 250 test sentences per class is listed in
``short_tasks``. ``summary`` = mean over tasks of the signed top-1 accuracy.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .activations import pooled_activations, resolve_hook
from .probes import LinearProbe, mean_accuracy_interval, wilson_interval
from .tasks import load_task_data

__all__ = ["DEFAULT_TASKS", "K_VALUES", "MIN_TEST_PER_CLASS", "RULES", "class_mean_diff",
           "run_sparse_probing", "select_top_k", "signed_separation", "sparse_probe"]

DEFAULT_TASKS = ("sentiment", "language_it", "language_zh")
K_VALUES = (1, 2, 5)
#: the test sentences per class the defaults give (and a task is "short" below)
MIN_TEST_PER_CLASS = 250


def _np(a) -> np.ndarray:
    if hasattr(a, "detach"):
        a = a.detach().cpu().numpy()
    return np.asarray(a, dtype=np.float64)


def _binary(F, y) -> tuple[np.ndarray, np.ndarray]:
    F, y = _np(F), np.asarray(y)
    if set(np.unique(y).tolist()) != {0, 1}:
        raise ValueError("latent selection needs binary labels 0/1 with both present")
    return F, y


def class_mean_diff(F, y) -> np.ndarray:
    """``|mean(F[y == 1]) − mean(F[y == 0])|`` per column; F [n, d], y [n] in {0, 1}."""
    F, y = _binary(F, y)
    return np.abs(F[y == 1].mean(0) - F[y == 0].mean(0))


def signed_separation(Z, y) -> np.ndarray:
    """``|Δ mean| / pooled within-class std`` per column (module docstring); Z [n, d]."""
    Z, y = _binary(Z, y)
    a, b = Z[y == 1], Z[y == 0]
    diff = np.abs(a.mean(0) - b.mean(0))
    dof = max(len(a) + len(b) - 2, 1)
    ss = (a.var(0, ddof=0) * len(a) + b.var(0, ddof=0) * len(b)) / dof
    sd = np.sqrt(ss)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(sd > 0, diff / np.where(sd > 0, sd, 1.0), np.where(diff > 0, np.inf, 0.0))
    return out


#: selection rule → score function
RULES = {"mean_diff": class_mean_diff, "separation": signed_separation}


def select_top_k(F, y, k: int, rule: str = "mean_diff") -> np.ndarray:
    """Indices [k] of the columns of F with the largest score under ``rule`` (``mean_diff``:
    :func:`class_mean_diff`; ``separation``: :func:`signed_separation`), best first; ties:
    lower index first."""
    s = RULES[rule](F, y)
    order = np.lexsort((np.arange(len(s)), -s))
    return order[:k]


def sparse_probe(F_train, y_train, F_test, y_test, k: int, C: float = 1.0,
                 rule: str = "mean_diff") -> tuple[float, np.ndarray]:
    """(test accuracy, selected indices) of a logistic probe on the top-k columns of F."""
    idx = select_top_k(F_train, y_train, k, rule)
    F_train, F_test = _np(F_train), _np(F_test)
    p = LinearProbe(C=C).fit(F_train[:, idx], y_train)
    return p.score(F_test[:, idx], y_test), idx


#: variant → (pooled feature, selection rule)
VARIANTS = {"signed": ("z", "separation"), "abs": ("a", "mean_diff")}


def run_sparse_probing(sae, model, tokenizer, *, tasks: Sequence[str] = DEFAULT_TASKS,
                       device: str = "cpu", n_examples: int = 2000, seed: int = 0,
                       k_values: Sequence[int] = K_VALUES, layer: int | None = None,
                       site: str | None = None, batch_size: int = 32, max_length: int = 128,
                       C: float = 1.0, all_latents: bool = True, test_fraction: float = 0.25,
                       progress: bool = True, log=print) -> dict:
    """Sparse probing of ``sae`` on each task; returns JSON-serialisable numbers (see module).

    ``n_examples`` sentences per task (balanced). Per task: ``llm_test_accuracy``,
    ``sae_test_accuracy`` (all latents), ``sae_{signed,abs}_top_{k}_test_accuracy`` and the
    selected latent indices ``sae_{signed,abs}_top_{k}_latents``, each accuracy with
    ``..._ci``; ``chance``, ``n_train``, ``n_test``, ``n_test_per_class``,
    ``n_duplicates_removed``.
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
        counts = np.bincount(yte, minlength=2)
        r: dict = {"classes": data.classes, "n_train": len(ytr), "n_test": len(yte),
                   "n_test_per_class": int(counts.min()),
                   "n_duplicates_removed": data.n_duplicates_removed,
                   "chance": float(counts.max() / counts.sum())}
        r["llm_test_accuracy"] = LinearProbe(C=C).fit(tr.x, ytr).score(te.x, yte)
        if all_latents:
            r["sae_test_accuracy"] = LinearProbe(C=C).fit(tr.z, ytr).score(te.z, yte)
        for variant, (feat, rule) in VARIANTS.items():
            Ftr, Fte = getattr(tr, feat), getattr(te, feat)
            for k in k_values:
                acc, idx = sparse_probe(Ftr, ytr, Fte, yte, k, C, rule)
                r[f"sae_{variant}_top_{k}_test_accuracy"] = acc
                r[f"sae_{variant}_top_{k}_latents"] = [int(i) for i in idx]
        for key in [k for k in r if k.endswith("_accuracy")]:
            r[f"{key}_ci"] = list(wilson_interval(r[key], len(yte)))
        per_task[name] = r
    out: dict = {"layer": layer, "site": site, "k_values": list(k_values), "seed": seed,
                 "n_examples": n_examples, "selection": {
                     "signed": "|Δ mean z̄| / pooled within-class std (headline)",
                     "abs": "|Δ mean of mean |z||"},
                 "tasks": per_task}
    keys = ["llm_test_accuracy"] + (["sae_test_accuracy"] if all_latents else []) + [
        f"sae_{v}_top_{k}_test_accuracy" for v in VARIANTS for k in k_values]
    n_test = [per_task[t]["n_test"] for t in per_task]
    for key in keys:
        ps = [per_task[t][key] for t in per_task]
        out[key] = float(np.mean(ps))
        out[f"{key}_ci"] = list(mean_accuracy_interval(ps, n_test))
    out["chance"] = float(np.mean([per_task[t]["chance"] for t in per_task]))
    out["short_tasks"] = sorted(t for t in per_task
                                if per_task[t]["n_test_per_class"] < MIN_TEST_PER_CLASS)
    out["summary"] = out[f"sae_signed_top_{min(k_values)}_test_accuracy"]
    out["summary_ci"] = out[f"sae_signed_top_{min(k_values)}_test_accuracy_ci"]
    return out
