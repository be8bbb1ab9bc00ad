"""Export a saved SAE to other libraries' formats (currently SAELens ≥ 6).

SAELens has no signed activation, so a signed SAE is exported as an unsigned SAE of
twice the width that computes the same function. With ``u = (x − b_dec) W + b`` [d_sae]::

    W' = [W, −W]  [d_in, 2·d_sae]      b' = [b, −b]      D' = [D; −D]  [2·d_sae, d_in]
    u' = [u, −u]

* ``abstopk`` → SAELens ``topk`` with the same k: the k largest entries of ``[u, −u]`` are
  ``|u_i|`` for the k largest ``|u_i|`` (the other copy, ``−|u_i|``, is ≤ 0 and the ReLU of
  the TopK clips whatever non-positive entries fill the k slots), and
  ``|u_i|·(±D_i) = u_i·D_i`` — the same reconstruction, exactly.
* ``absjumprelu`` (``u·1[|u| > θ]``) → ``jumprelu`` of twice the width with θ' = [θ, θ]:
  ``relu(u')·1[u' > θ']`` keeps ``u_i`` on the first copy when ``u_i > θ_i`` and ``−u_i`` on the
  second when ``−u_i > θ_i``.
* ``batchabstopk`` → the same doubled ``jumprelu`` with its EMA inference threshold on |u|.
* ``topk`` → ``topk``; ``relu`` → ``standard``; ``jumprelu`` → ``jumprelu``;
  ``batchtopk`` → ``jumprelu`` with its EMA threshold (what SAELens itself does).

The folder's ``cfg.json`` carries in ``metadata`` everything SAELens and SAEBench read to
load and evaluate it without extra arguments: ``model_name``, ``hook_name`` (TransformerLens
naming, ``blocks.L.hook_SITE``), ``hook_layer``, ``hook_head_index``, ``context_size``,
``prepend_bos``, ``exclude_special_tokens``, ``model_class_name``,
``model_from_pretrained_kwargs``, ``seqpos_slice``, ``dataset_path``; unknown values are taken
from the manifest of the activation cache the SAE was trained on, when it can be found, and
a missing hook name or model name gives a warning.

``native_abstopk=True`` writes an ``abstopk`` SAE as SAELens's own ``abstopk`` architecture
instead (same width and weights; SAELens versions that register it, e.g. 6.54).

Ties: AbsTopK keeps exactly k latents per token — every latent whose |u| exceeds t, the k-th
largest |u|, then latents with |u| = t until k are kept, signed. Which tied latents is
``torch.topk``'s choice on the row it is given. abstopk and SAELens's native ``abstopk`` call
it on the same |u| row, so they agree on exact ties too; the doubled ReLU-TopK ranks
``[u, −u]``, where the tied latents sit elsewhere, and may keep a different tied latent (x̂
then differs by ``u_i·D_i − u_j·D_j`` with |u_i| = |u_j| = t). Near ties are ordered alike
wherever the pre-activations are computed exactly; closer than the GEMMs' rounding they may
not be (``docs/evaluation.md``, "Ties at the k-th |u|"; ``tests/test_export_ties.py``).

Not exportable: ``n_steps > 1`` (SAELens has no unrolled encoder). ``layer_norm`` SAEs are
exported with SAELens's ``layer_norm`` mode, which differs from ours in one place: the
output is rescaled by ``std`` instead of ``std + 1e-5`` (a relative difference of
``1e-5/std`` per token); everything else is exact. A one-sided JumpReLU with a negative
threshold cannot be exact in SAELens (which applies a ReLU first): a warning is issued.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from . import __version__
from .files import atomic_save_safetensors, atomic_write_json

__all__ = ["SAELENS_FORMAT_VERSION", "export_saelens", "hook_name_for", "layer_of_hook",
           "to_saelens"]

#: SAELens version whose folder format we write (``metadata.sae_lens_version``): any
#: version ≥ 6.0 reads it without the pre-6 conversion.
SAELENS_FORMAT_VERSION = "6.0.0"

_SITES = {"resid_post", "resid_pre", "mlp_out", "attn_out", "resid_mid"}


def hook_name_for(layer: int | None, site: str | None) -> str | None:
    """TransformerLens hook name ``blocks.{layer}.hook_{site}`` (None if unknown)."""
    if layer is None or site is None:
        return None
    return f"blocks.{layer}.hook_{site}"


def layer_of_hook(hook: str | None) -> int | None:
    """The block index L of a hook name ``blocks.L.hook_…`` (None if it has no such form)."""
    parts = (hook or "").split(".")
    if len(parts) >= 3 and parts[0] == "blocks" and parts[1].isdigit():
        return int(parts[1])
    return None


def _training_manifest(dataset: str | None) -> dict[str, Any]:
    """Manifest of the activation cache an SAE was trained on ({} if it is not a cache)."""
    import json

    if not dataset:
        return {}
    try:
        m = json.loads((Path(dataset) / "manifest.json").read_text())
    except (OSError, ValueError):
        return {}
    return m if isinstance(m, dict) else {}


def _double(t: dict[str, Tensor]) -> dict[str, Tensor]:
    """Weights of the twice-as-wide unsigned SAE equal to a signed one (see module doc)."""
    out = {
        "W_enc": torch.cat([t["W_enc"], -t["W_enc"]], dim=1),
        "b_enc": torch.cat([t["b_enc"], -t["b_enc"]]),
        "W_dec": torch.cat([t["W_dec"], -t["W_dec"]], dim=0),
        "b_dec": t["b_dec"].clone(),
    }
    if "threshold" in t:
        out["threshold"] = torch.cat([t["threshold"], t["threshold"]])
    return out


def to_saelens(sae, *, model_name: str | None = None, hook_name: str | None = None,
               native_abstopk: bool = False) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """(cfg.json dict, state dict) of the SAELens SAE that computes the same x̂ as ``sae``.

    ``sae``: an :class:`abstopk.sae.SAE`. ``model_name`` / ``hook_name`` override what its
    config records (SAEBench loads the model by ``metadata.model_name``).
    ``native_abstopk``: an ``abstopk`` SAE becomes SAELens's own ``abstopk`` architecture
    (same width and weights; only SAELens versions that register it can load it) instead of
    the doubled ReLU-TopK (module docstring, "Ties").
    Raises ``ValueError`` when the SAE cannot be expressed in SAELens.
    """
    cfg = sae.cfg
    arch = cfg.architecture
    if cfg.n_steps != 1:
        raise ValueError(f"an SAE with n_steps = {cfg.n_steps} has no SAELens equivalent "
                         "(SAELens encoders are one step)")
    t = {k: v.detach().to(torch.float32).cpu().clone() for k, v in sae.folded_state().items()}
    extra: dict[str, Any] = {}
    if arch in ("batchtopk", "batchabstopk", "jumprelu", "absjumprelu"):
        th = t["threshold"]
        if torch.isnan(th).any():
            raise ValueError(f"{arch} SAE has no inference threshold yet (train it first)")
        if arch in ("jumprelu", "batchtopk") and (th < 0).any():
            warnings.warn(
                f"{int((th < 0).sum())} latents have a negative threshold: SAELens's JumpReLU "
                "clips negative pre-activations, so those latents will not match exactly",
                stacklevel=2,
            )
    if arch == "abstopk" and native_abstopk:
        sl_arch, extra = "abstopk", {"k": cfg.k, "rescale_acts_by_decoder_norm": False}
    elif arch == "abstopk":
        t, sl_arch, extra = _double(t), "topk", {"k": cfg.k, "rescale_acts_by_decoder_norm": False}
    elif arch == "topk":
        sl_arch, extra = "topk", {"k": cfg.k, "rescale_acts_by_decoder_norm": False}
    elif arch == "relu":
        sl_arch = "standard"
    elif arch in ("jumprelu", "batchtopk"):
        sl_arch = "jumprelu"
    elif arch in ("absjumprelu", "batchabstopk"):
        t, sl_arch = _double(t), "jumprelu"
    else:  # pragma: no cover - registry and this table are kept in step by the tests
        raise ValueError(f"no SAELens export for architecture {arch!r}")
    if sl_arch != "jumprelu":
        t.pop("threshold", None)
    d_sae = t["W_enc"].shape[1]
    norm = cfg.normalize_activations if cfg.normalize_activations == "layer_norm" else "none"
    # metadata the cfg lacks: from the manifest of the cache it was trained on, if present
    man = _training_manifest(cfg.dataset)
    layer = cfg.hook_layer if cfg.hook_layer is not None else man.get("layer")
    site = cfg.hook_site or man.get("site")
    hook = (hook_name or cfg.hook_name or man.get("hook_name")
            or hook_name_for(layer, site))
    if hook_name is not None and layer_of_hook(hook_name) is not None:
        layer = layer_of_hook(hook_name)    # an explicit hook name decides the layer
    elif layer is None:
        layer = layer_of_hook(hook)
    model = model_name or cfg.model_name or man.get("model")
    missing = [n for n, v in (("hook name", hook), ("model name", model)) if v is None]
    if missing:
        warnings.warn(f"the SAE records no {' and no '.join(missing)}: SAELens and SAEBench "
                      "will need it given when loading the export", stacklevel=2)
    keep_bos = cfg.keep_bos if cfg.keep_bos is not None else man.get("keep_bos", False)
    metadata = {
        "sae_lens_version": SAELENS_FORMAT_VERSION,
        "sae_lens_training_version": SAELENS_FORMAT_VERSION,
        "model_name": model,
        "model_class_name": "HookedTransformer",
        "model_from_pretrained_kwargs": {},
        "hook_name": hook,
        "hook_layer": layer,              # SAEBench reads it from the metadata
        "hook_head_index": None,
        "context_size": cfg.context_size or man.get("context_size"),
        "prepend_bos": True,
        "exclude_special_tokens": not keep_bos,
        "seqpos_slice": [None],
        "neuronpedia_id": None,
        "dataset_path": cfg.dataset,
        "exported_by": f"abstopk {__version__}",
        "abstopk_architecture": arch,
        "abstopk_d_sae": cfg.d_sae,
        "abstopk_model_revision": cfg.model_revision or man.get("model_revision"),
    }
    sl_cfg: dict[str, Any] = {
        "architecture": sl_arch,
        "d_in": cfg.d_in,
        "d_sae": d_sae,
        "dtype": "float32",
        "device": "cpu",
        "apply_b_dec_to_input": bool(cfg.apply_b_dec_to_input),
        "normalize_activations": norm,
        "reshape_activations": "none",
        **extra,
        "metadata": metadata,
    }
    return sl_cfg, {k: v.contiguous() for k, v in t.items()}


def export_saelens(sae_or_dir, out: str | Path, *, model_name: str | None = None,
                   hook_name: str | None = None, native_abstopk: bool = False) -> Path:
    """Write a SAELens folder (``cfg.json`` + ``sae_weights.safetensors``) to ``out``.

    ``sae_or_dir``: an :class:`abstopk.sae.SAE` or the path of a saved SAE folder.
    Files are written atomically. Returns ``out``.
    """
    from .sae import SAE

    sae = sae_or_dir if isinstance(sae_or_dir, SAE) else SAE.load(sae_or_dir)
    cfg, tensors = to_saelens(sae, model_name=model_name, hook_name=hook_name,
                              native_abstopk=native_abstopk)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_save_safetensors(out / "sae_weights.safetensors", tensors, metadata={"format": "pt"})
    atomic_write_json(out / "cfg.json", cfg)
    return out
