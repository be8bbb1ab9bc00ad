"""The sparse autoencoder: one (or ``n_steps``) unrolled proximal-gradient step(s).

Shapes: ``x`` [B, d_in] → ``u`` [B, d_sae] → ``z`` [B, d_sae] → ``x̂`` [B, d_in]::

    x_s = normalise(x)                               # scalar scale, per-token LN, or none
    u   = (x_s − b_dec) @ W_enc + b_enc              # pre-encoder bias (apply_b_dec_to_input)
    z   = prox(u)                                    # the architecture's sparsity operator
    for t in 1 .. n_steps−1:                         # untied ISTA / IHT refinement
        z = prox(z + μ·(x_s − (z @ W_dec + b_dec)) @ W_enc)
    x̂   = denormalise(z @ W_dec + b_dec)

With ``W_enc = W_decᵀ`` the refinement is exactly a proximal-gradient step on
``½‖x − (Dz + b)‖² + λR(z)``; untied, the encoder matrix stands in for ``Dᵀ`` as in the first
step. Saved folders follow the SAELens naming (``cfg.json`` + ``sae_weights.safetensors``
with ``W_enc, b_enc, W_dec, b_dec`` [+ ``threshold``]); the scalar input scale is folded into
the weights on save so the saved SAE works on raw activations.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from .. import __version__, kernels
from ..files import atomic_save_safetensors, atomic_write_json
from ..sparsity import abs_step, step, topk_select
from .config import CFG_FILE, WEIGHTS_FILE, SAEConfig

__all__ = ["SAE", "SAEOutput", "remove_parallel_grad"]

@torch.no_grad()
def remove_parallel_grad(W_dec: Tensor) -> None:
    """W_dec.grad[i] −= (⟨g_i, d_i⟩ / ‖d_i‖²)·d_i for every decoder row d_i (F×D layout).

    Keeps the update tangent to the unit sphere of each row (the rows are renormalised after
    the optimiser step). Row-wise reductions over the contiguous [d_sae, d_in] matrix and one
    in-place ``addcmul_``: no per-row loop, one [d_sae, d_in] temporary (the product g·W).
    """
    g = W_dec.grad
    if g is None:
        return
    dots = (g * W_dec).sum(1)
    n2 = torch.linalg.vector_norm(W_dec, dim=1).square_().clamp_min_(1e-12)
    g.addcmul_(W_dec, (dots / n2).unsqueeze(1), value=-1.0)


class SAEOutput(NamedTuple):
    """What one forward pass gives the trainer and the user.

    x_hat: [B, d_in] reconstruction in the raw input space.
    z: [B, d_sae] dense code, or None when the sparse path was asked not to densify.
    values, indices: [B, m] kept values and their latent indices (sparse paths), else None.
        m = k per row for TopK/AbsTopK; for the batch-level operators and the JumpReLU family
        (training) m is the widest row's count and shorter rows are padded with value 0
        (JumpReLU also keeps its band entries, |u| − θ within ε/2, with value 0).
    pre_acts: [B, d_sae] pre-activations u (dense path only), else None.
    aux_values, aux_indices: [B, k_aux] AuxK selection among dead latents, else None.
    l0: scalar differentiable L0 surrogate (JumpReLU family, training), else None.
    x_s: [B, d_in] the normalised input the loss is computed in.
    x_hat_s: [B, d_in] the reconstruction in normalised space.
    counts: [B] int64 real entries per row of a padded (batch-level) values/indices: row b's
        first counts[b] entries are kept, the rest is padding; None when there is no padding.
    selection, aux_selection: the sparse path's :class:`~abstopk.kernels.Selection` of
        ``indices`` (with ``counts``) and of ``aux_indices``, else None. Give them to
        :func:`~abstopk.kernels.sparse_decode` so that its layouts are shared with the
        encoder's backward.
    """

    x_hat: Tensor
    z: Tensor | None
    values: Tensor | None
    indices: Tensor | None
    pre_acts: Tensor | None
    aux_values: Tensor | None
    aux_indices: Tensor | None
    l0: Tensor | None
    x_s: Tensor
    x_hat_s: Tensor
    counts: Tensor | None = None
    selection: kernels.Selection | None = None
    aux_selection: kernels.Selection | None = None


class SAE(nn.Module):
    """Sparse autoencoder with a proximal-operator encoder. See the module docstring."""

    def __init__(self, cfg: SAEConfig, *, device: str | torch.device | None = None,
                 dtype: torch.dtype = torch.float32, seed: int | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.op = cfg.operator
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        d_in, d_sae = cfg.d_in, cfg.d_sae
        W_dec = torch.randn(d_sae, d_in, generator=gen, dtype=torch.float32)
        W_dec /= W_dec.norm(dim=1, keepdim=True).clamp_min(1e-12)
        self.W_dec = nn.Parameter(W_dec.to(dtype))
        self.W_enc = nn.Parameter(W_dec.t().contiguous().to(dtype))
        self.b_enc = nn.Parameter(torch.zeros(d_sae, dtype=dtype))
        self.b_dec = nn.Parameter(torch.zeros(d_in, dtype=dtype))
        if self.op.needs_threshold:
            self.threshold = nn.Parameter(torch.full((d_sae,), cfg.jumprelu_init_threshold, dtype=dtype))
        elif self.op.batch_level:
            # inference threshold, NaN until the first training batch sets it
            self.register_buffer("threshold", torch.full((d_sae,), float("nan"), dtype=dtype))
        else:
            self.threshold = None
        self.register_buffer("input_scale", torch.ones((), dtype=torch.float32))
        #: dtype of the encoder/decoder products in :meth:`forward` (None: the weights'
        #: dtype). ``torch.bfloat16`` (set by training's bf16 autocast): the fused encoder's
        #: GEMM runs in bf16 and returns fp32 values; the dense path runs under
        #: ``torch.autocast``. The weights themselves stay in their dtype (fp32 masters).
        self.compute_dtype: torch.dtype | None = None
        if device is not None:
            self.to(device)

    # ------------------------------------------------------------------ helpers
    @property
    def device(self) -> torch.device:
        return self.W_enc.device

    @property
    def dtype(self) -> torch.dtype:
        return self.W_enc.dtype

    def _use_kernels(self) -> bool:
        """Sparse encode/decode: fixed-k family, one step; batch-level ones in training only
        (eval mode applies their threshold rule on the dense path)."""
        cfg, op = self.cfg, self.op
        return (cfg.use_sparse_kernels and op.k_sparse and cfg.n_steps == 1
                and (not op.batch_level or self.training))

    def _use_threshold_kernels(self, aux: bool = False) -> bool:
        """The JumpReLU family's sparse training path (:mod:`abstopk.kernels.jumprelu`):
        training, one step, no AuxK in the encoder (``aux``), CPU (elsewhere the crossover
        is not measured). Eval mode and the rest use the dense threshold path."""
        cfg = self.cfg
        return (cfg.use_sparse_kernels and self.op.needs_threshold and self.training
                and cfg.n_steps == 1 and not aux and self.device.type == "cpu")

    def _autocast(self):
        """``torch.autocast`` to :attr:`compute_dtype` on the SAE's device (or a no-op)."""
        import contextlib

        if self.compute_dtype is None or self.compute_dtype == self.dtype:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.compute_dtype)

    def normalize(self, x: Tensor) -> tuple[Tensor, tuple[Tensor, Tensor] | None]:
        """Map raw x [B, d_in] to the SAE's space; return (x_s, per-token stats or None)."""
        x = x.to(self.dtype)
        mode = self.cfg.normalize_activations
        if mode == "layer_norm":
            mu = x.mean(-1, keepdim=True)
            sd = x.std(-1, keepdim=True) + 1e-5
            return (x - mu) / sd, (mu, sd)
        if mode == "scalar":
            return x * self.input_scale.to(x.dtype), None
        return x, None

    def denormalize(self, x_s: Tensor, stats: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """Inverse of :meth:`normalize` (``stats`` required for layer_norm)."""
        mode = self.cfg.normalize_activations
        if mode == "layer_norm":
            if stats is None:
                raise ValueError("layer_norm SAE: denormalize needs the per-token stats")
            mu, sd = stats
            return x_s * sd + mu
        if mode == "scalar":
            return x_s / self.input_scale.to(x_s.dtype)
        return x_s

    def pre_acts(self, x_s: Tensor) -> Tensor:
        """u [B, d_sae] = (x_s − b_dec) @ W_enc + b_enc (b_dec subtracted if configured)."""
        x_c = x_s - self.b_dec if self.cfg.apply_b_dec_to_input else x_s
        u = torch.addmm(self.b_enc, x_c.reshape(-1, x_c.shape[-1]), self.W_enc)
        return u.reshape(*x_c.shape[:-1], -1)

    def activation(self, u: Tensor) -> Tensor:
        """Apply the sparsity operator (prox) to u [..., d_sae] → z (dense).

        Batch-level operators use the batch rule in training mode (and update the EMA
        inference threshold) and the threshold rule in eval mode.
        """
        op, cfg = self.op, self.cfg
        if op.needs_threshold:
            return op.fn(u, self.threshold, cfg.jumprelu_bandwidth)
        if op.batch_level:
            if self.training:
                z = op.fn(u, cfg.k)
                self._update_batch_threshold(z)
                return z
            if torch.isnan(self.threshold).any():
                raise RuntimeError(
                    f"{cfg.architecture} SAE has no inference threshold yet: train it first "
                    "(or call .train() to use the batch rule)"
                )
            a = u.abs() if op.signed else u
            return u * (a > self.threshold).to(u.dtype)
        if op.needs_k:
            return op.fn(u, cfg.k)
        return op.fn(u)

    @torch.no_grad()
    def _update_batch_threshold(self, z: Tensor) -> None:
        """θ ← EMA of the smallest kept non-zero |value|; ``z`` dense [B, F] or kept values."""
        nz = z[z != 0]
        if nz.numel() == 0:
            return
        smallest = nz.abs().min().to(self.threshold.dtype)
        if torch.isnan(self.threshold).any():
            self.threshold.fill_(smallest)
        else:
            m = self.cfg.batch_threshold_momentum
            self.threshold.mul_(1 - m).add_(m * smallest)

    # ------------------------------------------------------------------ public API
    def encode(self, x: Tensor) -> Tensor:
        """Raw activations x [..., d_in] → dense code z [..., d_sae]."""
        shape = x.shape
        return self.forward(x.reshape(-1, shape[-1])).z.reshape(*shape[:-1], -1)

    def decode(self, z: Tensor, stats: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """Dense code z [..., d_sae] → reconstruction x̂ [..., d_in] in raw space."""
        return self.denormalize(z.to(self.dtype) @ self.W_dec + self.b_dec, stats)

    def forward(
        self,
        x: Tensor,
        *,
        dense_code: bool = True,
        aux_mask: Tensor | None = None,
        k_aux: int = 0,
    ) -> SAEOutput:
        """Encode and decode a batch x [B, d_in] (raw activations).

        Args:
            dense_code: also return the dense z (set False in training on the sparse path).
            aux_mask: [d_sae] bool of latents eligible for AuxK (dead); with ``k_aux`` > 0 the
                output carries the AuxK selection (ranked by |u| for signed operators).
        """
        if x.dim() != 2 or x.shape[-1] != self.cfg.d_in:
            raise ValueError(f"expected x of shape [B, {self.cfg.d_in}], got {tuple(x.shape)}")
        x_s, stats = self.normalize(x)
        cfg, op = self.cfg, self.op
        values = indices = counts = u = aux_v = aux_i = l0 = z = selection = aux_selection = None
        threshold_path = self._use_threshold_kernels(aux_mask is not None and k_aux > 0)
        if self._use_kernels() or threshold_path:
            shift = self.b_dec if cfg.apply_b_dec_to_input else None
            if threshold_path:  # JumpReLU family in training (with AuxK: the dense path)
                enc = kernels.threshold_encode(
                    x_s, self.W_enc, self.b_enc, self.threshold, cfg.jumprelu_bandwidth,
                    op.signed, shift=shift, compute_dtype=self.compute_dtype)
                l0 = enc.l0
            else:  # batch-level operators: training only (eval: threshold rule, dense path)
                enc = kernels.fused_topk_encode(
                    x_s, self.W_enc, self.b_enc, cfg.k, op.signed, aux_mask, k_aux,
                    batch=op.batch_level, shift=shift, compute_dtype=self.compute_dtype)
                aux_v, aux_selection = enc.aux_values, enc.aux_selection
                aux_i = aux_selection.indices if aux_selection is not None else None
                if op.batch_level:
                    self._update_batch_threshold(enc.values)
            selection = enc.selection
            if selection is None:  # a wide JumpReLU selection: dense code, decoded by a GEMM
                z = enc.values
                x_hat_s = z @ self.W_dec + self.b_dec
            else:
                values, indices, counts = enc.values, selection.indices, selection.counts
                # the encoder's selection: the decode skips the padding and shares its
                # layouts (compaction, CSC sort) with the encoder's backward
                x_hat_s = kernels.sparse_decode(values, selection, self.W_dec, self.b_dec)
                if dense_code:  # scatter_add: padding (value 0) may repeat an index
                    z = torch.zeros(x.shape[0], cfg.d_sae, dtype=values.dtype,
                                    device=values.device).scatter_add(1, indices, values)
        else:
            with self._autocast():   # bf16 products under training's autocast, else no-op
                u = self.pre_acts(x_s)
                z = self.activation(u)
                for _ in range(cfg.n_steps - 1):
                    resid = x_s - (z @ self.W_dec + self.b_dec)
                    z = self.activation(z + cfg.step_size * (resid @ self.W_enc))
                x_hat_s = z @ self.W_dec + self.b_dec
            if x_hat_s.dtype != x_s.dtype:   # losses and metrics in the weights' dtype
                u, z, x_hat_s = u.to(x_s.dtype), z.to(x_s.dtype), x_hat_s.to(x_s.dtype)
            if op.needs_threshold and self.training:
                cnt = (abs_step if op.signed else step)(u, self.threshold, cfg.jumprelu_bandwidth)
                l0 = cnt.sum(-1).mean()
            if aux_mask is not None and k_aux > 0:
                n_dead = int(aux_mask.sum())
                ka = min(k_aux, n_dead)
                if ka > 0:
                    masked = u.masked_fill(~aux_mask, 0.0)
                    aux_v, aux_i = topk_select(masked, ka, signed=op.signed)
        x_hat = self.denormalize(x_hat_s, stats)
        return SAEOutput(x_hat, z, values, indices, u, aux_v, aux_i, l0, x_s, x_hat_s, counts,
                         selection, aux_selection)

    # ------------------------------------------------------------------ decoder norm
    @torch.no_grad()
    def set_decoder_norm_to_unit_norm(self) -> None:
        """Renormalise each decoder row W_dec[i] to unit ℓ2 norm."""
        self.W_dec.div_(self.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-12))

    def remove_gradient_parallel_to_decoder_directions(self) -> None:
        """Project out of W_dec.grad the component parallel to each decoder row."""
        remove_parallel_grad(self.W_dec)

    # ------------------------------------------------------------------ save / load
    def folded_state(self) -> dict[str, Tensor]:
        """Weights with the scalar input scale folded in (so the SAE works on raw x)."""
        s = float(self.input_scale) if self.cfg.normalize_activations == "scalar" else 1.0
        out = {
            "W_enc": self.W_enc.detach() * s,
            "b_enc": self.b_enc.detach().clone(),
            "W_dec": self.W_dec.detach() / s,
            "b_dec": self.b_dec.detach() / s,
        }
        if self.threshold is not None:
            out["threshold"] = self.threshold.detach().clone()
        return out

    def save(self, path: str | Path) -> Path:
        """Write ``cfg.json`` + ``sae_weights.safetensors`` (atomically) into folder ``path``.

        A scalar input scale is folded into the weights and recorded in cfg.json as
        ``normalize_activations = "none"`` with ``folded_input_scale`` for reference.
        """
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        tensors = self.folded_state()
        cfg = self.cfg.to_dict()
        if cfg["normalize_activations"] == "scalar":
            cfg["normalize_activations"] = "none"
            cfg["folded_input_scale"] = float(self.input_scale)
        cfg["abstopk_version"] = __version__
        atomic_save_safetensors(path / WEIGHTS_FILE, tensors, metadata={"format": "pt"})
        atomic_write_json(path / CFG_FILE, cfg)
        return path

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device | None = None,
             dtype: torch.dtype = torch.float32) -> SAE:
        """Load a folder written by :meth:`save` (safetensors only; no pickle).

        Raises ``FileNotFoundError`` for a missing file and ``ValueError`` when the tensors
        disagree with cfg.json (naming the mismatch).
        """
        from safetensors.torch import load_file

        path = Path(path)
        for f in (CFG_FILE, WEIGHTS_FILE):
            if not (path / f).is_file():
                raise FileNotFoundError(f"{path / f} not found: not a saved SAE folder")
        with open(path / CFG_FILE) as f:
            raw = json.load(f)
        cfg = SAEConfig.from_dict(raw)
        return cls.from_tensors(cfg, load_file(str(path / WEIGHTS_FILE)), source=path,
                                device=device, dtype=dtype)

    @classmethod
    def from_tensors(cls, cfg: SAEConfig, tensors: dict[str, Tensor], *, source: Any = "SAE",
                     device: str | torch.device | None = None,
                     dtype: torch.dtype = torch.float32, allow_extra: bool = False) -> SAE:
        """An SAE of ``cfg`` holding ``tensors`` (W_enc [d_in, d_sae], b_enc [d_sae], W_dec
        [d_sae, d_in], b_dec [d_in], and threshold [d_sae] for JumpReLU and the batch-level
        operators). Raises ``ValueError`` naming ``source`` when a tensor is missing, has
        another shape, or (unless ``allow_extra``) is not one of these.
        """
        expected = {
            "W_enc": (cfg.d_in, cfg.d_sae),
            "b_enc": (cfg.d_sae,),
            "W_dec": (cfg.d_sae, cfg.d_in),
            "b_dec": (cfg.d_in,),
        }
        op = cfg.operator
        if op.needs_threshold or op.batch_level:
            expected["threshold"] = (cfg.d_sae,)
        missing = sorted(set(expected) - set(tensors))
        extra = [] if allow_extra else sorted(set(tensors) - set(expected))
        if missing or extra:
            raise ValueError(
                f"{source}: tensors disagree with cfg.json (architecture {cfg.architecture!r}): "
                f"missing {missing}, unexpected {extra}"
            )
        for name, shape in expected.items():
            if tuple(tensors[name].shape) != shape:
                raise ValueError(
                    f"{source}: tensor {name} has shape {tuple(tensors[name].shape)} but cfg.json "
                    f"(d_in={cfg.d_in}, d_sae={cfg.d_sae}) implies {shape}"
                )
        sae = cls(cfg, dtype=dtype)
        with torch.no_grad():
            for name in expected:
                getattr(sae, name).copy_(tensors[name].to(dtype))
        if device is not None:
            sae.to(device)
        return sae
