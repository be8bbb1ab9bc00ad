"""Sparsity sweeps (the paper's Figure 3): NMSE and loss recovered versus L0, per architecture.

One SAE is trained per (architecture, sparsity, seed) on the same activation cache and each is
evaluated on held-out activations; TopK/AbsTopK SAEs are also evaluated at other k *at
inference* (``cfg.k`` changed, no retraining). Sparsity is matched across architectures:

* ``topk`` / ``abstopk`` / ``batch*`` — trained with ``k`` latents per token;
* ``jumprelu`` / ``absjumprelu`` / ``relu`` — trained with ``target_l0 = k`` (or an explicit
  ``jumprelu_targets`` list): the trainer's PI controller adapts the penalty coefficient until
  the SAE lands at that mean L0. This *is* the coefficient sweep of these architectures, indexed
  by the L0 it produces instead of by an opaque coefficient.

Efficiency — one pass over the data per seed (:class:`MultiTrainer`). All SAEs of one seed read
the same batch stream (the cache loader seeded with that seed): each batch is read from disk
once and every SAE takes one optimisation step on it before the next batch is read. Per SAE the
step is exactly :class:`abstopk.train.Trainer`'s (same LR schedule, AuxK bookkeeping, target-L0
controller, initialisation from the first ``init_batches`` batches), so an SAE trained here has
the same weights as one trained alone by ``Trainer.fit`` on the same batches (tested). SAEs of
the same seed differ only in their architecture/sparsity, which makes the comparison paired:
same initial decoder (same seed), same data order.

Evaluation (:func:`evaluate_saes`): reconstruction metrics (:mod:`abstopk.eval.metrics`: MSE,
NMSE, explained variance, L0, dead fraction, ...) on ``eval_tokens`` held-out activations kept in
memory, and loss recovered / KL on ``eval_contexts`` held-out contexts with the clean and
zero-ablated LM runs computed once and shared by all SAEs (:func:`multi_loss_recovered`: the
same per-token CE/KL definitions and accumulator as :mod:`abstopk.eval.loss_recovered`).

Outputs (:func:`run_sweep`): ``OUT/sweep.csv`` (one row per SAE × evaluation),
``OUT/sweep.json`` (config + rows + mean ± std summary), ``OUT/sweep.png`` (NMSE vs L0 and loss
recovered vs L0, one line per architecture, error bars = std over seeds), the trained SAEs in
``OUT/saes/<arch>_k<k>_s<seed>/``.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import math
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..fields import doc_field
from ..train.multi import MultiTrainer

__all__ = [
    "CSV_COLUMNS",
    "SweepConfig",
    "SweepSpec",
    "evaluate_saes",
    "heldout_activations",
    "inference_k",
    "multi_loss_recovered",
    "run_sweep",
    "summarize",
    "sweep_specs",
    "write_csv",
]

#: columns of sweep.csv, in order
CSV_COLUMNS = (
    "name", "architecture", "mode", "sparsity", "k_train", "k_eval", "target_l0", "seed",
    "d_sae", "steps", "batch_size", "l0", "mse", "nmse", "fvu", "explained_variance", "cosine",
    "dead_fraction", "dense_fraction", "negative_firing_fraction", "n_bidirectional",
    "ce_clean", "ce_spliced", "ce_zero_ablated", "loss_recovered", "kl", "train_l0",
    "train_nmse", "train_seconds", "sae_dir",
)

#: metrics summarised as mean ± std over seeds
SUMMARY_METRICS = ("l0", "mse", "nmse", "explained_variance", "dead_fraction", "loss_recovered",
                   "kl")


@dataclass
class SweepConfig:
    """Settings of ``abstopk sweep`` (field docs are the CLI help)."""

    cache: str = doc_field("Activation cache folder (train split) written by `abstopk harvest`.", "")
    out: str = doc_field("Output folder: sweep.csv, sweep.json, sweep.png, saes/.", "")
    architectures: list[str] = doc_field("Architectures to train (comma separated).", ["topk", "abstopk", "jumprelu"])
    k: list[int] = doc_field("Sparsity grid: k of TopK/AbsTopK and the target L0 of "
                      "JumpReLU/ReLU (comma separated).", [8, 16, 32, 64])
    jumprelu_targets: list[float] | None = doc_field("Target L0s of the penalised architectures "
                                              "(JumpReLU, ReLU); default: the k grid.", None)
    d_sae: int = doc_field("Latents per SAE.", 2304)
    steps: int = doc_field("Optimisation steps per SAE.", 1000)
    batch_size: int = doc_field("Tokens per batch.", 2048)
    lr: float = doc_field("Peak Adam learning rate.", 4e-4)
    seeds: list[int] = doc_field("Seeds (init and data order); mean ± std over them.", [0, 1, 2])
    dead_tokens: int = doc_field("A latent is dead (AuxK) after this many tokens unfired.", 1_000_000)
    jumprelu_init_threshold: float = doc_field("Initial JumpReLU threshold θ (normalised units; "
                                        "1.0 as in the paper's code, so that short runs start "
                                        "near a sparse code).", 1.0)
    l0_controller_ki: float = doc_field("Integral gain of the target-L0 controller (per step, "
                                 "log space).", 0.02)
    eval_tokens: int = doc_field("Held-out activations for the reconstruction metrics.", 16384)
    eval_contexts: int = doc_field("Held-out contexts for loss recovered / KL (0: skip).", 16)
    eval_cache: str | None = doc_field("Held-out activation cache (default: harvest eval_tokens "
                                "held-out rows into OUT/heldout_cache with the cache's model).", None)
    inference_k: bool = doc_field("Also evaluate trained TopK/AbsTopK SAEs at every k of the "
                           "grid by changing k at inference (no retraining).", True)
    inference_k_from: int | None = doc_field("Training k whose SAEs get the inference-k sweep "
                                      "(default: the grid value closest to 32).", None)
    inference_k_loss: bool = doc_field("Also compute loss recovered for the inference-k rows.", False)
    device: str = doc_field("Torch device.", "cpu")
    progress: bool = doc_field("Progress bars.", True)

    def __post_init__(self) -> None:
        from ..sparsity import get_operator

        if not self.architectures:
            raise ValueError("architectures must not be empty")
        for a in self.architectures:
            get_operator(a)
        if len(set(self.architectures)) != len(self.architectures):
            raise ValueError("architectures must be distinct")
        if not self.k or any(int(k) < 1 for k in self.k):
            raise ValueError(f"k must be positive integers, got {self.k}")
        self.k = sorted({int(k) for k in self.k})
        if max(self.k) > self.d_sae:
            raise ValueError(f"k = {max(self.k)} exceeds d_sae = {self.d_sae}")
        if self.jumprelu_targets is not None:
            if not self.jumprelu_targets or any(t <= 0 for t in self.jumprelu_targets):
                raise ValueError("jumprelu targets must be positive")
            self.jumprelu_targets = sorted({float(t) for t in self.jumprelu_targets})
        if not self.seeds:
            raise ValueError("seeds must not be empty")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError("seeds must be distinct")
        for name in ("d_sae", "steps", "batch_size", "dead_tokens"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.eval_tokens < 1 or self.eval_contexts < 0:
            raise ValueError("eval_tokens must be >= 1 and eval_contexts >= 0")
        if not self.out:
            raise ValueError("out is required")

    def reference_k(self) -> int:
        """The training k whose TopK/AbsTopK SAEs get the inference-time k sweep."""
        if self.inference_k_from is not None:
            return int(self.inference_k_from)
        return min(self.k, key=lambda k: (abs(k - 32), k))


@dataclass(frozen=True)
class SweepSpec:
    """One SAE of a sweep: ``architecture`` at ``sparsity`` (k, or target L0), ``seed``."""

    architecture: str
    sparsity: float
    seed: int

    @property
    def uses_k(self) -> bool:
        from ..sparsity import get_operator

        return get_operator(self.architecture).needs_k

    @property
    def name(self) -> str:
        s = self.sparsity
        tag = f"k{int(s)}" if self.uses_k else (f"l0{int(s)}" if float(s).is_integer()
                                                 else f"l0{s:g}")
        return f"{self.architecture}_{tag}_s{self.seed}"


def sweep_specs(cfg: SweepConfig) -> list[SweepSpec]:
    """Every (architecture, sparsity, seed) of ``cfg``, seed-major."""
    from ..sparsity import get_operator

    specs = []
    for seed in cfg.seeds:
        for arch in cfg.architectures:
            op = get_operator(arch)
            if op.needs_k:
                grid: Sequence[float] = cfg.k
            elif op.penalty is not None:
                grid = cfg.jumprelu_targets or [float(k) for k in cfg.k]
            else:
                raise ValueError(f"{arch} has neither k nor a penalty; cannot be swept")
            specs.extend(SweepSpec(arch, float(s), int(seed)) for s in grid)
    return specs


def train_config_for(spec: SweepSpec, cfg: SweepConfig) -> Any:
    """The :class:`~abstopk.train.TrainConfig` of one SAE of the sweep."""
    from ..train.config import TrainConfig

    kw: dict[str, Any] = {}
    if spec.uses_k:
        kw["k"] = int(spec.sparsity)
    else:
        kw["target_l0"] = float(spec.sparsity)
    return TrainConfig(architecture=spec.architecture, d_sae=cfg.d_sae, steps=cfg.steps,
                       batch_size=cfg.batch_size, lr=cfg.lr, seed=spec.seed,
                       dead_tokens=cfg.dead_tokens, device=cfg.device, progress=False,
                       jumprelu_init_threshold=cfg.jumprelu_init_threshold,
                       l0_controller_ki=cfg.l0_controller_ki, prefetch=0, **kw)


# ---------------------------------------------------------------------- inference-time k
@contextlib.contextmanager
def inference_k(sae: Any, k: int) -> Iterator[Any]:
    """Temporarily run a TopK-family ``sae`` with ``k`` latents per token (no retraining).

    Replaces ``sae.cfg`` by a copy with ``k`` (validated: 1 ≤ k ≤ d_sae) and restores it.
    """
    if not sae.op.needs_k:
        raise ValueError(f"inference-time k needs a TopK-family SAE, not {sae.cfg.architecture}")
    old = sae.cfg
    sae.cfg = dataclasses.replace(old, k=int(k))
    try:
        yield sae
    finally:
        sae.cfg = old


# ---------------------------------------------------------------------- evaluation
@torch.no_grad()
def heldout_activations(model: Any, tokenizer: Any, *, layer: int, site: str, n_tokens: int,
                        context_size: int = 128, source: str = "embedded",
                        batch_size: int = 8, keep_bos: bool = False,
                        progress: bool = False) -> Tensor:
    """``n_tokens`` activations [n, d_in] (float32) of held-out contexts, BOS/pad dropped
    (``keep_bos``: BOS kept, as in a cache harvested with ``keep_bos``).

    Same rule as harvesting (:func:`abstopk.data.harvest.keep_positions`):
    truncated forward to ``layer`` on packed held-out contexts of ``context_size`` tokens.
    """
    from ..data.harvest import keep_positions
    from ..data.tokens import iter_contexts
    from ..lm.hooks import run_to_layer

    dev = next(model.parameters()).device
    out: list[Tensor] = []
    n = 0
    buf: list[Tensor] = []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n_tokens, desc="held-out activations", unit="tok", leave=False)

    def run(ids: Tensor) -> Tensor:
        acts = run_to_layer(model, ids.to(dev), layers=layer, site=site)[layer]
        x = acts.reshape(-1, acts.shape[-1])
        keep = keep_positions(ids, tokenizer, keep_bos).reshape(-1).to(x.device)
        return x[keep].float().cpu()

    try:
        for c in iter_contexts(tokenizer, source=source, split="heldout",
                               context_size=context_size):
            buf.append(c)
            if len(buf) < batch_size:
                continue
            x = run(torch.stack(buf))[: n_tokens - n]
            buf = []
            out.append(x)
            n += x.shape[0]
            if bar is not None:
                bar.update(x.shape[0])
            if n >= n_tokens:
                break
        if buf and n < n_tokens:
            x = run(torch.stack(buf))[: n_tokens - n]
            out.append(x)
            n += x.shape[0]
    finally:
        if bar is not None:
            bar.close()
    if n == 0:
        raise ValueError("no held-out activations could be computed")
    return torch.cat(out)


@torch.no_grad()
def multi_loss_recovered(saes: dict[str, Any], model: Any, contexts: Iterable[Tensor], *,
                         layer: int, site: str = "resid_post", n_contexts: int,
                         batch_size: int = 4, skip_token_ids: Iterable[int] | None = None,
                         progress: bool = False) -> dict[str, dict[str, Any]]:
    """Loss recovered and KL of several SAEs on the same held-out contexts.

    Per batch of contexts the clean and zero-ablated LM runs are done once and shared; each SAE
    adds one spliced run. Definitions are those of
    :func:`abstopk.eval.loss_recovered.evaluate_loss_recovered` (same
    :func:`~abstopk.eval.loss_recovered.predicted_token_ce_kl` and
    :class:`~abstopk.eval.loss_recovered.LossRecoveredAccumulator`; positions holding a token of
    ``skip_token_ids`` — BOS/pad — keep their clean activation)::

        loss_recovered = (CE_zero − CE_spliced) / (CE_zero − CE_clean)
        kl             = mean over predicted positions of KL(p_clean ‖ p_spliced)

    Returns {name: result dict of ``LossRecoveredAccumulator.result()``} (no error-kept run).
    """
    from ..lm.hooks import replace_activation
    from .loss_recovered import LossRecoveredAccumulator, batch_contexts, predicted_token_ce_kl
    from .metrics import sae_reconstruct

    accs = {name: LossRecoveredAccumulator() for name in saes}
    skip = None
    if skip_token_ids is not None:
        skip = torch.tensor(sorted({int(i) for i in skip_token_ids}), dtype=torch.long)
    dev = next(model.parameters()).device
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n_contexts * (len(saes) + 2), desc="loss recovered", unit="fwd",
                   leave=False)

    def spliced(tokens: Tensor, keep: Tensor, fn: Callable[[Tensor], Tensor]) -> Tensor:
        def hook(acts: Tensor) -> Tensor:
            flat = acts.reshape(-1, acts.shape[-1])
            new = fn(flat).to(device=flat.device, dtype=flat.dtype).reshape(acts.shape)
            return torch.where(keep[..., None], acts, new)

        with replace_activation(model, layer, site, hook):
            return model(input_ids=tokens, use_cache=False).logits

    was_training = model.training
    model.eval()
    try:
        for tokens in batch_contexts(contexts, batch_size, n_contexts):
            tokens = tokens.to(dev)
            if skip is not None:
                keep = torch.isin(tokens, skip.to(dev))
            else:
                keep = torch.zeros_like(tokens, dtype=torch.bool)
            ce_c, _, ref = predicted_token_ce_kl(model(input_ids=tokens, use_cache=False).logits,
                                                 tokens)
            ce_z, kl_z, _ = predicted_token_ce_kl(spliced(tokens, keep, torch.zeros_like),
                                                  tokens, ref)
            nb = tokens.shape[0]
            if bar is not None:
                bar.update(2 * nb)
            for name, sae in saes.items():
                ce_s, kl_s, _ = predicted_token_ce_kl(
                    spliced(tokens, keep, lambda f, sae=sae: sae_reconstruct(sae, f)[0]),
                    tokens, ref)
                acc = accs[name]
                acc.add("clean", ce_c)
                acc.add("zero_ablated", ce_z, kl_z)
                acc.add("spliced", ce_s, kl_s)
                acc.n_pred += ce_c.numel()
                acc.n_contexts += nb
                if bar is not None:
                    bar.update(nb)
    finally:
        model.train(was_training)
        if bar is not None:
            bar.close()
    return {name: acc.result() for name, acc in accs.items()}


def evaluate_saes(saes: dict[str, Any], x_eval: Tensor, *, lm: tuple | None = None,
                  layer: int | None = None, site: str = "resid_post", context_size: int = 128,
                  eval_contexts: int = 0, source: str = "embedded", batch_size: int = 4096,
                  keep_bos: bool = False, progress: bool = False) -> dict[str, dict[str, Any]]:
    """Reconstruction metrics on ``x_eval`` [n, d_in] and (with ``lm`` = (model, tokenizer) and
    ``eval_contexts`` > 0) loss recovered / KL for each SAE; returns {name: metrics}.
    ``keep_bos``: the SAEs were trained with BOS positions, so BOS is spliced too."""
    from .metrics import evaluate_reconstruction

    out: dict[str, dict[str, Any]] = {}
    items = list(saes.items())
    bar = None
    if progress and len(items) > 1:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(items), desc="reconstruction", unit="sae", leave=False)
    for name, sae in items:
        out[name] = dict(evaluate_reconstruction(sae, x_eval, batch_size=batch_size).summary)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    if lm is not None and eval_contexts > 0:
        from ..data.tokens import bos_token_id, iter_contexts

        model, tok = lm[0], lm[1]
        skip = {bos_token_id(tok)}
        if getattr(tok, "pad_token_id", None) is not None:
            skip.add(int(tok.pad_token_id))
        ctx = iter_contexts(tok, source=source, split="heldout", context_size=context_size)
        lr = multi_loss_recovered(saes, model, ctx, layer=int(layer), site=site,
                                  n_contexts=eval_contexts,
                                  skip_token_ids=None if keep_bos else skip,
                                  progress=progress)
        for name in out:
            out[name].update(lr[name])
    return out


# ---------------------------------------------------------------------- summaries and files
def _mean_std(vals: list[float]) -> tuple[float, float]:
    v = [float(x) for x in vals if x is not None and not (isinstance(x, float) and math.isnan(x))]
    if not v:
        return float("nan"), float("nan")
    m = sum(v) / len(v)
    s = math.sqrt(sum((x - m) ** 2 for x in v) / (len(v) - 1)) if len(v) > 1 else 0.0
    return m, s


def summarize(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Group rows by (architecture, mode, sparsity, k_eval) and give mean/std over seeds.

    Each output dict: the group keys, ``n_seeds``, and ``<metric>_mean`` / ``<metric>_std``
    (sample std, ddof = 1; 0 for one seed) for the metrics in :data:`SUMMARY_METRICS`.
    """
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in rows:
        key = (r["architecture"], r["mode"], float(r["sparsity"]), r.get("k_eval"))
        groups.setdefault(key, []).append(r)
    out = []
    for (arch, mode, sp, k_eval), rs in groups.items():
        d: dict[str, Any] = {"architecture": arch, "mode": mode, "sparsity": sp,
                             "k_eval": k_eval, "n_seeds": len(rs)}
        for m in SUMMARY_METRICS:
            d[f"{m}_mean"], d[f"{m}_std"] = _mean_std([r.get(m) for r in rs])
        out.append(d)
    return out


def write_csv(rows: list[dict[str, Any]], path: str | Path) -> Path:
    """Write ``rows`` with the columns :data:`CSV_COLUMNS` (missing values empty), atomically."""
    import io

    from ..files import atomic_write_bytes

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(CSV_COLUMNS), extrasaction="ignore",
                       lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({c: ("" if r.get(c) is None else r.get(c)) for c in CSV_COLUMNS})
    path = Path(path)
    atomic_write_bytes(path, buf.getvalue().encode())
    return path


def fmt_pm(mean: float, std: float, digits: int = 4) -> str:
    """``"m ± s"`` with ``digits`` significant digits (``"—"`` for NaN)."""
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "—"
    return f"{mean:.{digits}g} ± {std:.2g}"


def results_table_rows(summary: list[dict[str, Any]], mode: str = "trained"
                       ) -> list[list[str]]:
    """Rows [architecture, sparsity, L0, MSE, NMSE, EV, dead, loss rec., KL] as strings."""
    rows = []
    for s in sorted((s for s in summary if s["mode"] == mode),
                    key=lambda s: (s["sparsity"] if s["k_eval"] in (None, "") else s["k_eval"],
                                   s["architecture"])):
        sp = s["sparsity"]
        from ..sparsity import get_operator

        label = (f"k={int(sp)}" if get_operator(s["architecture"]).needs_k
                 else f"target L0={sp:g}")
        if mode != "trained":
            label = f"k={int(s['k_eval'])} (trained k={int(sp)})"
        rows.append([
            s["architecture"], label,
            fmt_pm(s["l0_mean"], s["l0_std"], 3),
            fmt_pm(s["mse_mean"], s["mse_std"]),
            fmt_pm(s["nmse_mean"], s["nmse_std"]),
            fmt_pm(s["explained_variance_mean"], s["explained_variance_std"]),
            fmt_pm(s["dead_fraction_mean"], s["dead_fraction_std"], 3),
            fmt_pm(s["loss_recovered_mean"], s["loss_recovered_std"]),
            fmt_pm(s["kl_mean"], s["kl_std"]),
            str(s["n_seeds"]),
        ])
    return rows


TABLE_HEADER = ["architecture", "sparsity", "L0", "MSE", "NMSE", "expl. var.", "dead frac.",
                "loss rec.", "KL", "seeds"]


def print_table(summary: list[dict[str, Any]], console: Any = None, title: str | None = None
                ) -> None:
    """Print the trained (and inference-k) summaries as rich tables (mean ± std over seeds)."""
    from rich.console import Console
    from rich.table import Table

    if console is None:  # a pipe gets 80 columns by default: too narrow for 10 columns
        console = Console(width=None if sys.stdout.isatty() else 160)
    for mode, ttl in (("trained", title or "Sparsity sweep: held-out evaluation (mean ± std "
                       "over seeds)"),
                      ("inference_k", "Inference-time k (no retraining)")):
        rows = results_table_rows(summary, mode)
        if not rows:
            continue
        t = Table(title=ttl)
        for h in TABLE_HEADER:
            t.add_column(h, justify="left" if h in ("architecture", "sparsity") else "right")
        for r in rows:
            t.add_row(*r)
        console.print(t)


def markdown_table(summary: list[dict[str, Any]], mode: str = "trained") -> str:
    """The summary as a GitHub-flavoured Markdown table."""
    rows = results_table_rows(summary, mode)
    lines = ["| " + " | ".join(TABLE_HEADER) + " |",
             "|" + "|".join(["---"] * len(TABLE_HEADER)) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------- orchestration
def _metadata_from_cache(cache: Any) -> dict[str, Any]:
    m = cache.manifest
    return {
        "model_name": m.get("model"), "model_revision": m.get("model_revision"),
        "hook_layer": m.get("layer"), "hook_site": m.get("site"),
        "hook_name": m.get("hook_name"), "context_size": m.get("context_size"),
        "keep_bos": m.get("keep_bos"), "dataset": cache.identity(),
    }


def _row(spec: SweepSpec, cfg: SweepConfig, metrics: dict[str, Any], *, mode: str,
         k_eval: int | None, extra: dict[str, Any]) -> dict[str, Any]:
    r: dict[str, Any] = {
        "name": spec.name if mode == "trained" else f"{spec.name}@k{k_eval}",
        "architecture": spec.architecture, "mode": mode, "sparsity": spec.sparsity,
        "k_train": int(spec.sparsity) if spec.uses_k else None,
        "k_eval": k_eval, "target_l0": None if spec.uses_k else spec.sparsity,
        "seed": spec.seed, "d_sae": cfg.d_sae, "steps": cfg.steps,
        "batch_size": cfg.batch_size,
    }
    for c in CSV_COLUMNS:
        if c not in r and c in metrics:
            v = metrics[c]
            r[c] = None if isinstance(v, float) and math.isnan(v) else v
    r.update(extra)
    return r


def run_sweep(cfg: SweepConfig, *, console: Any = None, loaded: tuple | None = None,
              log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Train, evaluate and report a sweep (see the module docstring). Returns
    ``{"config", "rows", "summary", "files", "seconds"}`` (also written to OUT/sweep.json).

    ``loaded``: an already loaded ``(model, tokenizer, info)`` of the cache's model (reused for
    held-out activations and loss recovered; loaded on demand otherwise).
    """
    from ..data.cache import ActivationCache
    from ..data.open import open_source
    from ..files import atomic_write_json
    from .run import json_safe

    log = log or (lambda s: print(s, file=sys.stderr, flush=True))
    t0 = time.perf_counter()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    cache = ActivationCache(cfg.cache)
    meta = _metadata_from_cache(cache)
    specs = sweep_specs(cfg)
    layer, site = int(cache.manifest["layer"]), str(cache.manifest["site"])
    ctx_size = int(cache.manifest.get("context_size") or 128)
    keep_bos = bool(cache.manifest.get("keep_bos", False))
    corpus = cache.manifest.get("corpus") or {}
    source_name = "embedded" if not isinstance(corpus, dict) else str(
        corpus.get("source") or corpus.get("name") or "embedded")

    lm = loaded

    def get_lm():
        nonlocal lm
        if lm is None:
            from ..lm.load import load_model

            log(f"loading {meta['model_name']} for held-out evaluation")
            lm = load_model(str(meta["model_name"]), device=cfg.device)
        return lm

    # held-out activations (in memory; the same rows for every SAE)
    if cfg.eval_cache:
        from .metrics import iter_activation_batches

        x_eval = torch.cat(list(iter_activation_batches(cfg.eval_cache, 8192, cfg.eval_tokens)))
        ec = ActivationCache(cfg.eval_cache)
        if (ec.manifest.get("layer"), ec.manifest.get("site")) != (layer, site):
            raise ValueError(f"eval cache {cfg.eval_cache} is not at layer {layer} {site}")
    else:
        model, tok = get_lm()[:2]
        log(f"computing {cfg.eval_tokens} held-out activations at layer {layer} ({site})")
        x_eval = heldout_activations(model, tok, layer=layer, site=site,
                                     n_tokens=cfg.eval_tokens, context_size=ctx_size,
                                     source=source_name, keep_bos=keep_bos,
                                     progress=cfg.progress)
    if x_eval.shape[1] != cache.d_in:
        raise ValueError(f"held-out activations have width {x_eval.shape[1]}, cache {cache.d_in}")

    rows: list[dict[str, Any]] = []
    ref_k = cfg.reference_k()
    seeds = list(cfg.seeds)
    for i_seed, seed in enumerate(seeds):
        group = [s for s in specs if s.seed == seed]
        tcfgs = [train_config_for(s, cfg) for s in group]
        log(f"seed {seed} ({i_seed + 1}/{len(seeds)}): training {len(group)} SAEs in one pass "
            f"over the cache ({cfg.steps} steps × {cfg.batch_size} tokens): "
            + ", ".join(s.name for s in group))
        source = open_source(str(cache.path), cfg.batch_size, seed)
        mt = MultiTrainer(tcfgs, source, sae_metadata=meta)
        t_train = time.perf_counter()
        mt.fit(progress=cfg.progress, desc=f"train seed {seed}")
        train_s = (time.perf_counter() - t_train) / len(group)
        saes = {}
        for spec, tr in zip(group, mt.trainers, strict=True):
            d = out / "saes" / spec.name
            tr.sae.save(d)
            atomic_write_json(d / "train_config.json", tr.cfg.to_dict())
            saes[spec.name] = tr.sae.eval()
        log(f"seed {seed}: evaluating {len(saes)} SAEs on {x_eval.shape[0]} held-out tokens"
            + (f" and {cfg.eval_contexts} held-out contexts" if cfg.eval_contexts else ""))
        need_lm = cfg.eval_contexts > 0
        ev = evaluate_saes(saes, x_eval, lm=get_lm()[:2] if need_lm else None, layer=layer,
                           site=site, context_size=ctx_size, eval_contexts=cfg.eval_contexts,
                           source=source_name, keep_bos=keep_bos, progress=cfg.progress)
        for spec, tr in zip(group, mt.trainers, strict=True):
            lm_ = tr.last_metrics or {}
            rows.append(_row(spec, cfg, ev[spec.name], mode="trained",
                             k_eval=int(spec.sparsity) if spec.uses_k else None,
                             extra={"train_l0": lm_.get("l0"), "train_nmse": lm_.get("nmse"),
                                    "train_seconds": round(train_s, 2),
                                    "sae_dir": str(out / "saes" / spec.name)}))
        # inference-time k on the reference TopK/AbsTopK SAEs of this seed
        if cfg.inference_k:
            for spec in group:
                if not spec.uses_k or int(spec.sparsity) != ref_k:
                    continue
                sae = saes[spec.name]
                for k in cfg.k:
                    if k == ref_k:
                        continue
                    with inference_k(sae, k):
                        ev_k = evaluate_saes(
                            {spec.name: sae}, x_eval,
                            lm=get_lm()[:2] if (need_lm and cfg.inference_k_loss) else None,
                            layer=layer, site=site, context_size=ctx_size,
                            eval_contexts=cfg.eval_contexts if cfg.inference_k_loss else 0,
                            source=source_name, keep_bos=keep_bos)[spec.name]
                    rows.append(_row(spec, cfg, ev_k, mode="inference_k", k_eval=int(k),
                                     extra={"sae_dir": str(out / "saes" / spec.name)}))
        write_csv(rows, out / "sweep.csv")  # partial results survive an interruption

    summary = summarize(rows)
    files = {"csv": str(write_csv(rows, out / "sweep.csv"))}
    from ..report.plots import plot_sweep

    files["png"] = str(plot_sweep(rows, out / "sweep.png",
                                  title=f"{meta['model_name']} L{layer} {site}, d_sae {cfg.d_sae}"))
    files["md"] = str(out / "sweep.md")
    from ..files import atomic_write_bytes

    md = ("# Sparsity sweep\n\n" + markdown_table(summary, "trained")
          + ("\n## Inference-time k\n\n" + markdown_table(summary, "inference_k")
             if any(s["mode"] == "inference_k" for s in summary) else ""))
    atomic_write_bytes(Path(files["md"]), md.encode())
    result = {
        "config": dataclasses.asdict(cfg), "cache": cache.identity(),
        "eval_tokens": int(x_eval.shape[0]), "rows": rows, "summary": summary, "files": files,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    files["json"] = str(out / "sweep.json")
    atomic_write_json(out / "sweep.json", json_safe(result))
    print_table(summary, console)
    return result
