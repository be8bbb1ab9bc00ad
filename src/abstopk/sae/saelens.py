"""One loader for saved SAEs: this project's folders and SAELens folders alike.

:func:`load_sae` reads a folder with ``cfg.json`` + ``sae_weights.safetensors``:

* written by :meth:`abstopk.sae.SAE.save` (``cfg.json`` has no ``metadata`` block) — loaded
  as it is;
* in SAELens ≥ 6's layout (``cfg.json`` with ``architecture`` among ``standard``, ``topk``,
  ``jumprelu`` and a ``metadata`` block holding ``hook_name``, ``model_name``, …; tensors
  ``W_enc`` [d_in, d_sae], ``b_enc``, ``W_dec`` [d_sae, d_in], ``b_dec`` [+ ``threshold``])
  — converted: ``standard`` → ``relu``, ``topk`` → ``topk`` (SAELens's TopK keeps the k
  largest pre-activations and ReLUs them, as ours), ``jumprelu`` → ``jumprelu``
  (relu(u)·1[u > θ] equals u·1[u > θ] for θ ≥ 0; a negative θ is refused). The hook name
  ``blocks.L.hook_SITE`` gives ``hook_layer`` L and ``hook_site`` SITE.
* a signed SAE exported by ``abstopk export --format saelens`` (``metadata.
  abstopk_architecture`` ``abstopk`` / ``absjumprelu`` / ``batchabstopk``): the export is an
  unsigned SAE of twice the width with weights [W, −W] (:mod:`abstopk.export`); when the
  tensors have exactly that form the signed SAE is restored (first half; ``abstopk`` with
  the same k, the two others as ``absjumprelu`` with θ), so one signed latent stays one
  latent. Otherwise it loads as the unsigned SAE it is.

Unsupported SAELens options (``rescale_acts_by_decoder_norm``, normalisations other than
``none`` / ``layer_norm``, gated SAEs) raise ``ValueError`` naming them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from .config import CFG_FILE, WEIGHTS_FILE, SAEConfig

__all__ = ["is_saelens_cfg", "load_sae", "sae_summary"]

_ARCH = {"standard": "relu", "topk": "topk", "jumprelu": "jumprelu"}
_SIGNED = {"abstopk": "abstopk", "absjumprelu": "absjumprelu", "batchabstopk": "absjumprelu"}


def is_saelens_cfg(cfg: dict[str, Any]) -> bool:
    """Whether a cfg.json dict is in SAELens's layout (it has a ``metadata`` block)."""
    return isinstance(cfg.get("metadata"), dict)


def _read_cfg(path: Path) -> dict[str, Any]:
    for f in (CFG_FILE, WEIGHTS_FILE):
        if not (path / f).is_file():
            raise FileNotFoundError(f"{path / f} not found: not a saved SAE folder")
    return json.loads((path / CFG_FILE).read_text())


def _site_layer(hook: str | None) -> tuple[int | None, str | None]:
    parts = (hook or "").split(".")
    if len(parts) == 3 and parts[0] == "blocks" and parts[1].isdigit() \
            and parts[2].startswith("hook_"):
        return int(parts[1]), parts[2][len("hook_"):]
    return None, None


def _undouble(t: dict[str, torch.Tensor]) -> dict[str, torch.Tensor] | None:
    """The first half of [W, −W]-form weights, or None when they are not of that form."""
    d2 = t["W_enc"].shape[1]
    if d2 % 2:
        return None
    d = d2 // 2
    pairs = [(t["W_enc"][:, :d], t["W_enc"][:, d:]), (t["b_enc"][:d], t["b_enc"][d:]),
             (t["W_dec"][:d], t["W_dec"][d:])]
    if not all(torch.equal(a, -b) for a, b in pairs):
        return None
    if "threshold" in t and not torch.equal(t["threshold"][:d], t["threshold"][d:]):
        return None
    out = {"W_enc": t["W_enc"][:, :d], "b_enc": t["b_enc"][:d], "W_dec": t["W_dec"][:d],
           "b_dec": t["b_dec"]}
    if "threshold" in t:
        out["threshold"] = t["threshold"][:d]
    return out


def _convert(raw: dict[str, Any], tensors: dict[str, torch.Tensor], where: Path
             ) -> tuple[SAEConfig, dict[str, torch.Tensor]]:
    md = raw["metadata"]
    arch = raw.get("architecture")
    if arch not in _ARCH:
        raise ValueError(f"{where}: SAELens architecture {arch!r} is not supported (standard, "
                         "topk, jumprelu)")
    if raw.get("rescale_acts_by_decoder_norm"):
        raise ValueError(f"{where}: rescale_acts_by_decoder_norm is not supported")
    norm = raw.get("normalize_activations") or "none"
    if norm not in ("none", "layer_norm"):
        raise ValueError(f"{where}: normalize_activations {norm!r} is not supported")
    if raw.get("reshape_activations", "none") not in ("none", None):
        raise ValueError(f"{where}: reshape_activations {raw['reshape_activations']!r} is not "
                         "supported")
    ours, k = _ARCH[arch], raw.get("k")
    signed = _SIGNED.get(md.get("abstopk_architecture") or "")
    if signed:
        half = _undouble(tensors)
        if half is not None:
            tensors, ours = half, signed
    if ours in ("relu", "topk", "abstopk"):
        tensors.pop("threshold", None)
    if "threshold" in tensors and (tensors["threshold"] < 0).any():
        raise ValueError(f"{where}: negative JumpReLU thresholds cannot be loaded exactly")
    layer, site = _site_layer(md.get("hook_name"))
    if md.get("hook_layer") is not None:
        layer = int(md["hook_layer"])
    cfg = SAEConfig(
        d_in=int(raw["d_in"]), d_sae=int(tensors["W_enc"].shape[1]), architecture=ours,
        k=int(k) if ours in ("topk", "abstopk") else None,
        apply_b_dec_to_input=bool(raw.get("apply_b_dec_to_input", True)),
        normalize_activations=norm, model_name=md.get("model_name"),
        model_revision=md.get("abstopk_model_revision"), hook_layer=layer, hook_site=site,
        hook_name=md.get("hook_name"), context_size=md.get("context_size"),
        dataset=md.get("dataset_path"),
        keep_bos=(None if md.get("exclude_special_tokens") is None
                  else not md["exclude_special_tokens"]))
    return cfg, tensors


def load_sae(path: str | Path, device: str | torch.device | None = None,
             dtype: torch.dtype = torch.float32):
    """An :class:`abstopk.sae.SAE` from a saved folder of either layout (module docstring).

    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` for an SAE that
    cannot be expressed here or tensors that disagree with ``cfg.json``.
    """
    from safetensors.torch import load_file

    from .model import SAE

    path = Path(path)
    raw = _read_cfg(path)
    if not is_saelens_cfg(raw):
        return SAE.load(path, device=device, dtype=dtype)
    tensors = load_file(str(path / WEIGHTS_FILE))
    missing = sorted({"W_enc", "b_enc", "W_dec", "b_dec"} - set(tensors))
    if missing:
        raise ValueError(f"{path}: SAELens weights lack {missing}")
    cfg, tensors = _convert(raw, dict(tensors), path)
    return SAE.from_tensors(cfg, tensors, source=path, device=device, dtype=dtype,
                            allow_extra=True).eval()


def sae_summary(path: str | Path) -> dict[str, Any] | None:
    """{"architecture" (this project's name), "layer", "site", "format"} of a saved folder
    read from its cfg.json alone (no weights), or None when it is not a readable SAE folder.
    A signed SAE exported to SAELens reports its signed architecture."""
    try:
        raw = _read_cfg(Path(path))
    except (OSError, ValueError):
        return None
    if not is_saelens_cfg(raw):
        return {"architecture": raw.get("architecture"), "layer": raw.get("hook_layer"),
                "site": raw.get("hook_site"), "format": "abstopk"}
    md = raw["metadata"]
    layer, site = _site_layer(md.get("hook_name"))
    if md.get("hook_layer") is not None:
        layer = int(md["hook_layer"])
    arch = _SIGNED.get(md.get("abstopk_architecture") or "") or _ARCH.get(raw.get("architecture"))
    return {"architecture": arch, "layer": layer, "site": site, "format": "saelens"}
