"""Statistics of directions (DiM, probe or steering vectors) over a cache, for the dashboard.

A direction v ∈ R^d (d = the cache's d_in, at the cache's hook) is read through its unit
vector v̂ = v/‖v‖: a cache row x projects to p = ⟨x, v̂⟩. In one streaming pass over the rows
(the same :class:`~.stream.TopN` buffers as the latents, K directions at once, p = X V̂ᵀ
[B, K]) the pass keeps the ``top_n`` rows with the largest p (``top_pos``) and the most
negative p (``top_neg``), and the mean and standard deviation of p. The tokens a direction
promotes and suppresses are the top and bottom of W_U (γ ⊙ v̂) (:func:`.logits.logit_effects`).

Directions come as a mapping ``name → [d] tensor``, as objects with ``vector``/``name``/
``layer`` (``abstopk.steer.directions.Direction``), or from a ``.safetensors`` file of named
1-D tensors (:func:`load_directions`; optional metadata ``layer``, ``site``; written by
:func:`save_directions`). Records follow the dashboard's direction contract: ``{name, layer,
site, top_pos, top_neg, logits_pos, logits_neg, description, norm, mean, std}``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ...data.cache import ActivationCache
from ...errors import UserError
from .collect import _batches
from .contexts import RowIndex, TokenDecoder
from .logits import final_norm_gain, logit_effects, unembedding
from .stream import TopN

__all__ = ["direction_records", "load_directions", "project_topn", "save_directions"]


def save_directions(path: str | Path, vectors: Mapping[str, Tensor], *, layer: int | None = None,
                    site: str | None = None) -> Path:
    """Write named 1-D vectors to a ``.safetensors`` file (metadata: layer, site)."""
    from safetensors.torch import save_file

    meta = {k: str(v) for k, v in (("layer", layer), ("site", site)) if v is not None}
    p = Path(path)
    tmp = p.with_name(p.name + ".tmp")
    save_file({k: v.detach().float().contiguous().cpu() for k, v in vectors.items()}, str(tmp),
              metadata=meta or None)
    tmp.replace(p)
    return p


def load_directions(path: str | Path) -> tuple[dict[str, Tensor], dict[str, str]]:
    """``(name → [d] float32 vector, metadata)`` from a ``.safetensors`` file;
    :class:`UserError` for a missing file or a tensor that is not 1-D."""
    from safetensors import safe_open

    p = Path(path)
    if not p.is_file():
        raise UserError(f"directions file {p} does not exist")
    try:
        with safe_open(str(p), framework="pt") as f:
            meta = dict(f.metadata() or {})
            vecs = {k: f.get_tensor(k).float() for k in f.keys()}  # noqa: SIM118
    except Exception as e:  # safetensors raises its own error types
        raise UserError(f"directions file {p} is not a readable safetensors file ({e})") \
            from None
    for k, v in vecs.items():
        if v.ndim != 1:
            raise UserError(f"directions file {p}: '{k}' has shape {tuple(v.shape)}, not [d]")
    if not vecs:
        raise UserError(f"directions file {p} holds no vectors")
    return vecs, meta


def _as_named(directions: Mapping[str, Tensor] | Iterable[Any]) -> list[tuple[str, Tensor, Any]]:
    if isinstance(directions, Mapping):
        return [(str(k), torch.as_tensor(v).float().flatten(), None)
                for k, v in directions.items()]
    out = []
    for j, d in enumerate(directions):
        out.append((getattr(d, "name", "") or f"direction {j}", d.vector.float().flatten(),
                    getattr(d, "layer", None)))
    return out


@torch.no_grad()
def project_topn(V: Tensor, batches: Iterable[tuple[int, Tensor]], top_n: int
                 ) -> tuple[TopN, TopN, Tensor, Tensor, int]:
    """One pass: ``(top_pos, top_neg, mean [K], std [K], rows)`` of p = X V̂ᵀ."""
    U = V / V.norm(dim=1, keepdim=True).clamp_min(1e-12)
    K = U.shape[0]
    tp, tn = TopN(K, top_n), TopN(K, top_n)
    s1 = torch.zeros(K, dtype=torch.float64)
    s2 = torch.zeros(K, dtype=torch.float64)
    n = 0
    for start, x in batches:
        p = x.float() @ U.T
        rows = torch.arange(start, start + x.shape[0])
        tp.update(p, p, rows)
        tn.update(-p, p, rows)
        s1 += p.double().sum(0)
        s2 += (p.double() ** 2).sum(0)
        n += x.shape[0]
    mean = s1 / max(n, 1)
    std = (s2 / max(n, 1) - mean ** 2).clamp_min(0).sqrt()
    return tp, tn, mean, std, n


def direction_records(directions: Mapping[str, Tensor] | Iterable[Any], cache_dir: str | Path,
                      *, model: str | None = None, layer: int | None = None, top_n: int = 20,
                      context_window: int = 8, n_logits: int = 10, max_rows: int | None = None,
                      batch_rows: int = 4096, lm=None, tokenizer=None) -> list[dict[str, Any]]:
    """The dashboard records of ``directions`` over the cache at ``cache_dir``.

    ``layer``: the directions' layer when known (checked against the cache's); ``model``: for
    the unembedding and tokenizer (default: the cache's model; or pass ``lm``/``tokenizer``).
    """
    cache = ActivationCache(cache_dir)
    named = _as_named(directions)
    c_layer = cache.manifest.get("layer")
    for name, v, d_layer in named:
        if v.shape[0] != cache.d_in:
            raise UserError(f"direction '{name}' has {v.shape[0]} dimensions; the cache rows "
                            f"have {cache.d_in}")
        want = d_layer if d_layer is not None else layer
        if want is not None and c_layer is not None and int(want) != int(c_layer):
            raise UserError(f"direction '{name}' is for layer {want}; the cache holds layer "
                            f"{c_layer}")
    index = RowIndex(cache, max_rows)
    if lm is None:
        from ...lm import load_model

        ref = model or cache.manifest.get("model")
        if not ref:
            raise UserError(f"{cache_dir}: the cache records no model; name the model to decode with")
        lm, tokenizer, _ = load_model(ref)
    decode = TokenDecoder.from_tokenizer(tokenizer)
    V = torch.stack([v for _, v, _ in named])
    tp, tn, mean, std, n = project_topn(V, _batches(cache, batch_rows, max_rows), top_n)
    U = V / V.norm(dim=1, keepdim=True).clamp_min(1e-12)
    tv, ti, bv, bi = logit_effects(U, unembedding(lm), final_norm_gain(lm), n_logits)

    def ctx(v: float, r: int) -> dict[str, Any]:
        ids, focus = index.window(r, context_window)
        return {"value": v, "tokens": decode(ids), "focus": focus, "row": r}

    out = []
    for k, (name, v, d_layer) in enumerate(named):
        out.append({
            "name": name, "layer": d_layer if d_layer is not None else (layer or c_layer),
            "site": cache.manifest.get("site"),
            "description": f"projection ⟨x, v/‖v‖⟩ of {n:,} cache rows; ‖v‖ = "
                           f"{float(v.norm()):.4g}, mean {float(mean[k]):+.3g}, "
                           f"std {float(std[k]):.3g}",
            "norm": float(v.norm()), "mean": float(mean[k]), "std": float(std[k]),
            "top_pos": [ctx(val, r) for val, r in tp.entries(k)],
            "top_neg": [ctx(val, r) for val, r in tn.entries(k)],
            "logits_pos": [{"token": t, "value": float(x)}
                           for t, x in zip(decode(ti[k].tolist()), tv[k], strict=False)],
            "logits_neg": [{"token": t, "value": float(x)}
                           for t, x in zip(decode(bi[k].tolist()), bv[k], strict=False)],
        })
    return out
