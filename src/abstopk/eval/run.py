"""Evaluate a saved SAE end to end: reconstruction on held-out activations, loss recovered
on held-out text, and (optionally) the probing tasks.

Defaults come from the SAE's ``cfg.json`` (``model_name``, ``hook_layer``, ``hook_site``,
``context_size``). Reconstruction metrics are computed on activations harvested on the fly
from the corpus's held-out split (truncated forward up to the SAE's layer; BOS/pad positions
dropped as in harvesting, unless ``splice_bos``), or read from an activation cache when one
is given. Loss recovered uses the first ``contexts`` held-out contexts of the seeded, mixed
held-out stream (:func:`abstopk.data.tokens.iter_contexts`, seed 0: every source from the
first contexts on; the result's ``lr_source_mix`` gives the share of each source's tokens).

``min_position`` p > 0 leaves the rows at context positions below p out of the reconstruction
metrics (1: each context's first token, the attention sink of mid layers; a cache needs
per-row positions, harvested activations have them by construction), and those positions keep
their clean activation in loss recovered's spliced and ablated runs. The result states it
(``min_position``, ``lr_min_position``).

Defaults: 65,536 held-out tokens for reconstruction and 64 contexts of the SAE's context
size (8,192 tokens at 128) for loss recovered / KL (issue 10: ≥ 50k and ≥ 64).

An SAE that does not fit what it is evaluated on raises
:class:`~abstopk.errors.EvalMismatchError` (a one-line :class:`~abstopk.errors.UserError`):
a model of another width, a layer the model lacks, a cache of another layer, site or width.
"""

from __future__ import annotations

import itertools
import time
from pathlib import Path
from typing import Any

import torch

from ..errors import EvalMismatchError
from .loss_recovered import evaluate_loss_recovered
from .metrics import MetricAccumulator, evaluate_reconstruction, sae_reconstruct

__all__ = ["available_tasks", "evaluate_sae", "harvest_reconstruction", "json_safe",
           "resolve_target"]


def json_safe(obj: Any) -> Any:
    """A copy of ``obj`` that strict JSON accepts: NaN/±inf → None, tensors/numpy scalars →
    Python numbers or lists, tuples → lists."""
    import math

    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return json_safe(obj.tolist())
    if hasattr(obj, "item") and callable(obj.item) and not isinstance(obj, (str, bytes)):
        try:
            obj = obj.item()
        except (TypeError, ValueError):
            return str(obj)
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    return str(obj)


def available_tasks() -> dict[str, Any]:
    """The probing-task registry ``abstopk.eval.probing.TASKS`` ({} when it is not shipped)."""
    try:
        from .probing import TASKS
    except ImportError:
        return {}
    return dict(TASKS)


def _manifest_of(path) -> dict[str, Any] | None:
    """The manifest of activation-cache folder ``path`` (None if it is not one)."""
    import json

    if not path:
        return None
    mp = Path(path) / "manifest.json"
    try:
        return json.loads(mp.read_text()) if mp.is_file() else None
    except (OSError, ValueError):
        return None


def _weight_format(sae, info, cache) -> str | None:
    """How the evaluated model's weights were stored: the loaded model's, else the SAE's
    cfg.json, else the manifest of its training cache or of ``cache``; for artefacts made
    before it was recorded, read from the GGUF file itself when its sha256 is the recorded
    ``model_revision`` (so the file is the one they came from). None when unknown."""
    fmt = getattr(info, "weight_format", None) or getattr(sae.cfg, "model_weight_format", None)
    manifests = [m for m in (_manifest_of(sae.cfg.dataset), _manifest_of(cache)) if m]
    for m in manifests:
        fmt = fmt or m.get("model_weight_format")
    if fmt is None:
        from ..lm.load import recorded_weight_format

        for name, rev in [(sae.cfg.model_name, sae.cfg.model_revision)] + \
                [(m.get("model"), m.get("model_revision")) for m in manifests]:
            fmt = fmt or recorded_weight_format(name, rev)
    return fmt


def resolve_target(sae, *, model: str | None = None, layer: int | None = None,
                   site: str | None = None, context_size: int | None = None,
                   cache: str | Path | None = None) -> dict[str, Any]:
    """Model ref, layer, site, context size and keep_bos of the evaluation.

    Each comes from, in order: the explicit argument; the SAE's cfg.json (``model_name``,
    ``hook_layer``, ``hook_site``, ``context_size``); the manifest of the activation cache
    the SAE was trained on (``cfg.dataset``, when that folder still exists); the manifest of
    ``cache``. Raises ``ValueError`` when the layer is known from none of them.
    """
    from ..lm.load import DEFAULT_MODEL

    cfg = sae.cfg
    manifests = [m for m in (_manifest_of(cfg.dataset), _manifest_of(cache)) if m]

    def pick(explicit, own, key):
        if explicit is not None:
            return explicit
        if own is not None:
            return own
        for m in manifests:
            if m.get(key) is not None:
                return m[key]
        return None

    layer = pick(layer, cfg.hook_layer, "layer")
    if layer is None:
        raise ValueError("the SAE's cfg.json records no hook_layer (nor does a cache it names): "
                         "give the layer explicitly")
    keep_bos = getattr(cfg, "keep_bos", None)
    if keep_bos is None:
        keep_bos = next((bool(m["keep_bos"]) for m in manifests if "keep_bos" in m), False)
    return {
        "model": pick(model, cfg.model_name, "model") or DEFAULT_MODEL,
        "layer": int(layer),
        "site": pick(site, cfg.hook_site, "site") or "resid_post",
        "context_size": int(pick(context_size, cfg.context_size, "context_size") or 128),
        "keep_bos": keep_bos,
    }


def _context_batches(tokenizer, *, source: str, context_size: int, batch_size: int):
    """Held-out contexts of ``source`` as [≤ batch_size, context_size] token batches."""
    from ..data.tokens import iter_contexts
    from .loss_recovered import batch_contexts

    contexts = iter_contexts(tokenizer, source=source, split="heldout", context_size=context_size)
    return batch_contexts(contexts, batch_size, None)


@torch.no_grad()
def harvest_reconstruction(sae, model, tokenizer, *, layer: int, site: str, n_tokens: int,
                           context_size: int = 128, source: str = "embedded",
                           batch_size: int = 8, keep_special: bool = False,
                           dense_threshold: float = 0.1, progress: bool = False,
                           min_position: int = 0):
    """Reconstruction metrics on ``n_tokens`` activations harvested from held-out contexts.

    Runs the truncated forward (:func:`abstopk.lm.run_to_layer`) on batches of held-out
    contexts, drops BOS/pad positions unless ``keep_special`` and the context positions
    below ``min_position``, and streams the rows through a
    :class:`~abstopk.eval.metrics.MetricAccumulator` (nothing is kept in memory).
    """
    from ..data.tokens import special_position_mask
    from ..lm.hooks import run_to_layer

    acc = MetricAccumulator(sae.cfg.d_in, sae.cfg.d_sae, dense_threshold)
    dev = next(model.parameters()).device
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n_tokens, desc="held-out activations", unit="tok", leave=False)
    try:
        for ids in _context_batches(tokenizer, source=source, context_size=context_size,
                                    batch_size=batch_size):
            if acc.n >= n_tokens:
                break
            acts = run_to_layer(model, ids.to(dev), layers=layer, site=site)[layer]
            x = acts.reshape(-1, acts.shape[-1])
            keep = torch.ones(ids.shape, dtype=torch.bool)
            if not keep_special:
                keep &= ~special_position_mask(ids, tokenizer).cpu()
            keep[:, :min_position] = False   # the context positions below min_position
            if not bool(keep.all()):
                x = x[keep.reshape(-1).to(x.device)]
            x = x[: n_tokens - acc.n].float()
            if x.shape[0] == 0:
                continue
            x_hat, z = sae_reconstruct(sae, x)
            acc.update(x, x_hat.to(x.device), z.to(x.device))
            if bar is not None:
                bar.update(x.shape[0])
    finally:
        if bar is not None:
            bar.close()
    return acc.result()


def evaluate_sae(
    sae_or_dir,
    *,
    model: str | None = None,
    layer: int | None = None,
    site: str | None = None,
    context_size: int | None = None,
    cache: str | Path | None = None,
    tokens: int = 65536,
    contexts: int = 64,
    batch_size: int = 8,
    device: str = "cpu",
    source: str = "embedded",
    tasks: list[str] | None = None,
    task_examples: int | None = None,
    splice_bos: bool | None = None,
    dense_threshold: float = 0.1,
    loaded: tuple | None = None,
    progress: bool = True,
    min_position: int = 0,
) -> dict[str, Any]:
    """Evaluate an SAE; returns one JSON-ready dict.

    Keys: target (``model, layer, site, hook_name, context_size``), SAE description
    (``architecture, d_in, d_sae, k``), the reconstruction metrics of
    :func:`~abstopk.eval.metrics.evaluate_reconstruction` (``mse, nmse, fvu,
    explained_variance, cosine, l0, dead_fraction, dense_fraction``, sign statistics), the
    loss-recovered metrics of :func:`~abstopk.eval.loss_recovered.evaluate_loss_recovered`
    (``ce_clean, ce_spliced, ce_zero_ablated, ce_mean_ablated, loss_recovered,
    loss_recovered_mean_ablation, kl`` with bootstrap intervals ``*_ci`` and the site check)
    and ``lr_source_mix`` — skipped when ``contexts`` is 0 — and ``tasks`` {name: result} for each requested task.

    Tasks are called as ``TASKS[name](sae, model, tokenizer, layer=, site=, device=,
    progress=[, n_examples=task_examples])``.

    ``splice_bos``: None → the ``keep_bos`` of the SAE's training cache (False if unknown).

    ``min_position``: leave the rows at context positions below it out of the reconstruction
    metrics and out of loss recovered's splice (recorded as ``min_position`` and
    ``lr_min_position``).

    ``loaded``: an already loaded ``(model, tokenizer, info)`` to reuse (tests, sweeps).
    Raises :class:`~abstopk.errors.EvalMismatchError` when the SAE does not fit the model
    or the cache, ``ValueError`` / ``FileNotFoundError`` on other bad input (the CLI turns
    them into one-line errors).
    """
    from ..lm.hooks import hook_name
    from ..sae import SAE

    t0 = time.perf_counter()
    sae = sae_or_dir if isinstance(sae_or_dir, SAE) else SAE.load(sae_or_dir)
    sae = sae.to(device).eval()
    target = resolve_target(sae, model=model, layer=layer, site=site, context_size=context_size,
                            cache=cache)
    if splice_bos is None:     # default: what the training cache did with BOS positions
        splice_bos = target["keep_bos"]
    task_fns = {}
    if tasks:
        reg = available_tasks()
        unknown = [t for t in tasks if t not in reg]
        if unknown:
            known = ", ".join(sorted(reg)) or "none installed"
            raise ValueError(f"unknown task(s) {', '.join(unknown)}; known: {known}")
        task_fns = {t: reg[t] for t in tasks}
    if tokens < 0 or contexts < 0 or batch_size < 1:
        raise ValueError("tokens and contexts must be ≥ 0 and batch_size ≥ 1")
    from ..data.loader import check_min_position, with_min_position

    min_position = check_min_position(min_position)
    if min_position and tokens > 0 and cache is not None and not Path(cache).is_dir():
        raise ValueError(f"{cache}: rows carry no context positions (only an activation cache "
                         f"records them), so positions below {min_position} cannot be left out")

    need_model = cache is None or contexts > 0 or bool(task_fns)
    lm = tok = info = None
    if need_model:
        if loaded is not None:
            lm, tok, info = loaded
        else:
            from ..lm.load import load_model

            lm, tok, info = load_model(target["model"], device=device)
        d_model = getattr(info, "d_model", None)
        if d_model and d_model != sae.cfg.d_in:
            raise EvalMismatchError(f"model {target['model']} has width {d_model} but the SAE "
                                    f"expects d_in = {sae.cfg.d_in}")
        n_layers = getattr(info, "n_layers", None)
        if n_layers and not 0 <= target["layer"] < n_layers:
            raise EvalMismatchError(f"layer {target['layer']} out of range: {target['model']} "
                                    f"has {n_layers} layers")

    result: dict[str, Any] = {
        "sae": str(sae_or_dir) if not isinstance(sae_or_dir, SAE) else None,
        "architecture": sae.cfg.architecture,
        "d_in": sae.cfg.d_in,
        "d_sae": sae.cfg.d_sae,
        "k": sae.cfg.k,
        **target,
        "hook_name": hook_name(target["layer"], target["site"]),
        "model_revision": getattr(info, "revision", None),
        "model_weight_format": _weight_format(sae, info, cache),
    }

    # --- reconstruction
    if tokens > 0:
        if cache is not None and Path(cache).is_dir():
            from ..data.cache import ActivationCache

            c = ActivationCache(cache)
            if (c.layer, c.site) != (target["layer"], target["site"]) or c.d_in != sae.cfg.d_in:
                raise EvalMismatchError(
                    f"cache {cache} holds layer {c.layer} {c.site} (d_in {c.d_in}) but the SAE "
                    f"is evaluated at layer {target['layer']} {target['site']} "
                    f"(d_in {sae.cfg.d_in})")
            result["reconstruction_cache"] = with_min_position(c.identity(), min_position)
        elif cache is not None:
            from .metrics import iter_activation_batches

            first = next(iter(iter_activation_batches(cache, batch_size=1, max_rows=1)), None)
            if first is not None and first.shape[-1] != sae.cfg.d_in:
                raise EvalMismatchError(f"{cache} holds activations of width {first.shape[-1]} "
                                        f"but the SAE expects d_in = {sae.cfg.d_in}")
        if cache is not None:
            rec = evaluate_reconstruction(sae, cache, max_rows=tokens, batch_size=4096,
                                          dense_threshold=dense_threshold, progress=progress,
                                          min_position=min_position)
            result["reconstruction_source"] = str(cache)
        else:
            rec = harvest_reconstruction(
                sae, lm, tok, layer=target["layer"], site=target["site"], n_tokens=tokens,
                context_size=target["context_size"], source=source, batch_size=batch_size,
                keep_special=splice_bos, dense_threshold=dense_threshold, progress=progress,
                min_position=min_position)
            result["reconstruction_source"] = f"{source}:heldout"
        result.update(rec.summary)
        result["min_position"] = min_position

    # --- loss recovered
    if contexts > 0:
        from ..data.tokens import ContextStream, bos_token_id

        skip = {bos_token_id(tok)}
        if getattr(tok, "pad_token_id", None) is not None:
            skip.add(int(tok.pad_token_id))
        stream = ContextStream(tok, source, "heldout", target["context_size"])
        mix: dict[int, int] = {}

        def ids_counting_sources():
            for ids, src in stream:
                for code, n in zip(*torch.unique(src, return_counts=True), strict=True):
                    mix[int(code)] = mix.get(int(code), 0) + int(n)
                yield ids

        lr = evaluate_loss_recovered(
            sae, lm, itertools.islice(ids_counting_sources(), contexts), layer=target["layer"],
            site=target["site"], n_contexts=contexts, batch_size=min(batch_size, 4),
            skip_token_ids=skip, splice_bos=splice_bos, min_position=min_position,
            progress=progress)
        total = sum(mix.values()) or 1
        lr["lr_source_mix"] = {stream.labels[c]: round(n / total, 4)
                               for c, n in sorted(mix.items())}
        if lr["lr_contexts"] < contexts:
            result["warning"] = (f"only {lr['lr_contexts']} held-out contexts available "
                                 f"(asked for {contexts})")
        result.update(lr)
        result["splice_bos"] = splice_bos

    # --- probing tasks (helper registry)
    if task_fns:
        result["tasks"] = {}
        for name, fn in task_fns.items():
            kw = {"n_examples": task_examples} if task_examples else {}
            result["tasks"][name] = fn(sae, lm, tok, layer=target["layer"], site=target["site"],
                                       device=device, progress=progress, **kw)
    result["seconds"] = round(time.perf_counter() - t0, 2)
    return result
