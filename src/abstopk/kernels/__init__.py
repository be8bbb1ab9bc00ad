"""Sparse kernels: the fixed-k family (TopK, AbsTopK, their batch-level versions) and the
JumpReLU family in training.

Interface (used by :mod:`abstopk.sae` and the training step):

* :func:`fused_topk_encode` — ``u = x_c @ W_enc + b_enc`` and the per-row top-k (or, with
  ``batch``, the batch-level top-k·B) selection by ``u`` or by ``|u|``, optionally also an
  AuxK selection among masked ("dead") latents. Returns the kept values and their
  :class:`Selection`; gradients reach ``x_c``, ``W_enc`` and ``b_enc`` through the selected
  entries only. :func:`topk_encode` / :func:`batch_topk_encode` return bare indices instead.
* :func:`threshold_encode` — the same GEMM with the JumpReLU / two-sided JumpReLU rule:
  the entries that fire (key > θ) or lie in the band of θ's pseudo-gradient, rows padded
  with counts, and the differentiable L0 surrogate; gradients also reach θ
  (:mod:`.jumprelu`).
* :func:`sparse_decode` — ``x̂ = Σ_j values[:, j] · W_dec[indices[:, j]] + b_dec``, given
  the encoder's selection (or bare indices).

Notation: B rows, D = d_in, F = d_sae, m entries per row. A selection is the sparsity
pattern of a sparse S [B, F] (``indices`` [B, m], ``counts`` [B] when rows are padded to the
widest); every backward product is a product with S or Sᵀ (:mod:`.sparse_ops`):

==========================  ===========================  =====================================
quantity                    math                         computed as
==========================  ===========================  =====================================
encoder ∂x_c  [B, D]        G · W_encᵀ                   :func:`spmm` (``embedding_bag``)
encoder ∂W_enc [D, F]       x_cᵀ · G                     (Gᵀ · x_c)ᵀ, :func:`spmm_t` (CSC)
encoder ∂b_enc [F]          Σ_b G[b, :]                  :func:`column_sums`
encoder ∂shift [D]          −W_enc · Σ_b G[b, :]         one mat-vec
decoder x̂     [B, D]        Z · W_dec                    :func:`spmm`
decoder ∂W_dec [F, D]       Zᵀ · ∂x̂                      :func:`spmm_t`
decoder ∂values [B, m]      (∂x̂ · W_decᵀ) on the support  :func:`sddmm`
==========================  ===========================  =====================================

The encoder's forward makes the :class:`Selection` once; its backward and the decoder
(forward and backward) take the same object, which computes each derived layout (CSR
compaction, CSC sort) once and caches it.

Modules: :mod:`.selection` (the selection object), :mod:`.sparse_ops` (the products),
:mod:`.encoder_gemm` (blocked encoder GEMM and its settings), :mod:`.aux_dense` (AuxK over
a few dead latents as GEMMs over their columns), :mod:`.row_topk` (exact per-row
top-k through group maxima), :mod:`.batch_select` (exact batch-level selection), :mod:`.encode` (the fused encoder), :mod:`.decode` (the decoder),
:mod:`.jumprelu` (the JumpReLU family's encoder), :mod:`.encoder_grads` (the encoders'
input gradients, shared), :mod:`.reference` (dense references the tests compare against).
"""

from __future__ import annotations

from .aux_dense import dead_column_decode, dense_aux_columns
from .batch_select import BATCH_CANDIDATES
from .decode import sparse_decode
from .encode import EncoderOutput, batch_topk_encode, fused_topk_encode, topk_encode
from .encoder_gemm import onednn_available
from .jumprelu import ThresholdOutput, threshold_encode
from .reference import sparse_decode_reference, topk_encode_reference
from .selection import Selection
from .sparse_ops import column_sums, sddmm, spmm, spmm_t

__all__ = [
    "BATCH_CANDIDATES",
    "EncoderOutput",
    "Selection",
    "ThresholdOutput",
    "batch_topk_encode",
    "column_sums",
    "dead_column_decode",
    "dense_aux_columns",
    "fused_topk_encode",
    "onednn_available",
    "sddmm",
    "sparse_decode",
    "sparse_decode_reference",
    "spmm",
    "spmm_t",
    "threshold_encode",
    "topk_encode",
    "topk_encode_reference",
]
