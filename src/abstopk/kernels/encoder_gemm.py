"""The encoder GEMM u = x_c @ W_enc + b_enc [B, F], by row blocks into reused buffers.

On CPU the fused encoder never materialises the whole B×F pre-activation: it computes
``chunk_rows`` rows at a time into a cache-sized block that is reused across calls, and
selects in the block while it is hot. Two settings, read at call time (so a script may set
them on this module):

* :data:`CPU_CHUNK_ROWS` — rows per block (environment ``ABSTOPK_CHUNK_ROWS``).
* :data:`GEMM_BACKEND` — "addmm" or "onednn" (environment ``ABSTOPK_GEMM``).

Under bf16 autocast (``compute_dtype=torch.bfloat16`` of the fused encoder) the blocks are
bf16 GEMMs whose results are widened to float32 as the bias is added (:func:`u_blocks`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import torch
from torch import Tensor

__all__ = ["CPU_CHUNK_ROWS", "GEMM_BACKEND", "gemm_settings", "onednn_available", "u_blocks"]

#: Rows of the encoder GEMM computed per block on CPU (block = chunk_rows × d_sae floats,
#: reused across calls). ``None`` or ``0`` = whole batch in one block.
CPU_CHUNK_ROWS: int | None = int(os.environ.get("ABSTOPK_CHUNK_ROWS", "1024")) or None

#: Encoder GEMM backend on CPU: "addmm" (MKL/OpenBLAS through torch.addmm) or "onednn"
#: (``torch.ops.mkldnn._linear_pointwise``, private op; falls back to addmm when missing).
GEMM_BACKEND: str = os.environ.get("ABSTOPK_GEMM", "addmm")

_BUFFERS: dict[tuple, tuple[Tensor, Tensor]] = {}


def onednn_available() -> bool:
    """True when oneDNN's fused linear op can be called on CPU."""
    try:
        return bool(torch.backends.mkldnn.is_available()) and hasattr(
            torch.ops.mkldnn, "_linear_pointwise"
        )
    except (AttributeError, RuntimeError):
        return False


def gemm_settings(x_c: Tensor, chunk_rows: int | None, backend: str | None,
                  compute_dtype: torch.dtype | None) -> tuple[int | None, str]:
    """``(chunk_rows, backend)`` for an encoder on ``x_c``: −1 → :data:`CPU_CHUNK_ROWS`,
    None → :data:`GEMM_BACKEND`; "onednn" falls back to "addmm" where it does not apply
    (off the CPU, not float32, a bf16 ``compute_dtype``). ``ValueError`` for another name."""
    if chunk_rows == -1:
        chunk_rows = CPU_CHUNK_ROWS
    backend = backend or GEMM_BACKEND
    if backend not in ("addmm", "onednn"):
        raise ValueError(f"unknown GEMM backend {backend!r} (addmm, onednn)")
    if backend == "onednn" and not (x_c.device.type == "cpu" and onednn_available()
                                    and x_c.dtype == torch.float32
                                    and compute_dtype in (None, torch.float32)):
        backend = "addmm"
    return chunk_rows, backend


def _block_buffers(device: torch.device, dtype: torch.dtype, rows: int, cols: int,
                   ) -> tuple[Tensor, Tensor]:
    """Two reused [rows, cols] scratch blocks (u and |u|) per (device, dtype, shape)."""
    key = (device, dtype, rows, cols)
    bufs = _BUFFERS.get(key)
    if bufs is None:
        if len(_BUFFERS) > 8:  # different shapes over a session: keep memory bounded
            _BUFFERS.clear()
        bufs = (torch.empty(rows, cols, device=device, dtype=dtype),
                torch.empty(rows, cols, device=device, dtype=dtype))
        _BUFFERS[key] = bufs
    return bufs


def _gemm_block(x: Tensor, W: Tensor, Wt: Tensor | None, b: Tensor, out: Tensor) -> Tensor:
    """out ← x @ W + b (addmm into ``out``), or oneDNN's linear when ``Wt`` is given."""
    if Wt is not None:
        return torch.ops.mkldnn._linear_pointwise(x, Wt, b, "none", [], "")
    return torch.addmm(b, x, W, out=out)


def u_blocks(x_c: Tensor, W_enc: Tensor, Wt: Tensor | None, b_enc: Tensor, rows: int,
             use_buf: bool, out_dtype: torch.dtype | None = None,
             ) -> Iterator[tuple[int, int, Tensor, Tensor | None]]:
    """Yield ``(s, e, u, a_out)`` for the row blocks ``[s, e)`` of ``u = x_c @ W_enc + b_enc``.

    ``x_c`` [B, D], ``W_enc`` [D, F], ``b_enc`` [F]; ``Wt`` = ``W_enc``ᵀ contiguous for the
    oneDNN backend, else None. ``u`` [e − s, F] lives in the reused block buffer when
    ``use_buf`` (CPU, several blocks), else in a fresh tensor; ``a_out`` is the second reused
    block (scratch for |u|) or None. Each block is valid only until the next one is produced.

    ``out_dtype`` (default ``x_c.dtype``): the dtype of ``u``. When ``x_c``/``W_enc`` are in a
    lower precision (bf16 autocast: the caller casts them once per step), the product
    ``x_c[s:e] @ W_enc`` runs in that precision (bf16 inputs, fp32 accumulation inside the
    GEMM, bf16 result) and ``b_enc`` (fp32) is added into the ``out_dtype`` block, so the
    selection and the kept values are fp32 numbers.
    """
    nb, n = x_c.shape[0], W_enc.shape[1]
    out_dtype = out_dtype or x_c.dtype
    low = out_dtype != x_c.dtype
    if use_buf:
        buf_u, buf_a = _block_buffers(x_c.device, out_dtype, rows, n)
    for s in range(0, nb, rows):
        e = min(nb, s + rows)
        c = e - s
        out = buf_u[:c] if use_buf else torch.empty(c, n, device=x_c.device, dtype=out_dtype)
        if low:
            u = torch.add(torch.mm(x_c[s:e], W_enc), b_enc, out=out)
        else:
            u = _gemm_block(x_c[s:e], W_enc, Wt, b_enc, out)
        yield s, e, u, (buf_a[:c] if use_buf else None)
