"""Sparse vs dense for the three products of the fixed-k kernels, one device, side by side.

For a selection of m latents per row (indices [B, m], weights [B, m]) of a B×F sparse S:

* decode  ``S · W_dec``        [B, D]  — ``embedding_bag`` vs scatter to B×F + GEMM
* spmm_t  ``Sᵀ · X``           [F, D]  — CSC ``embedding_bag`` vs scatter + GEMM
* sddmm   ``(G · W_decᵀ)[S]``  [B, m]  — sampled / gathered dot products vs GEMM + gather

Shapes follow W1 (B 4096, D 576, F 9216); m = 32 is the TopK selection, 288 (+32) the
AuxK one when every latent is dead. Each sparse op gets a fresh ``kernels.Selection`` (its
CSR/CSC layouts are built in the warm-up call and reused by the timed ones, as in a step).

Usage::

    python bench/sparse_ops.py                  # CPU
    python bench/sparse_ops.py --device cuda
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from abstopk import kernels as K


def _time(fn, device: str, reps: int) -> float:
    sync = torch.cuda.synchronize if device != "cpu" else (lambda: None)
    fn()
    sync()
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        sync()
        ts.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(ts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--B", type=int, default=4096)
    ap.add_argument("--D", type=int, default=576)
    ap.add_argument("--F", type=int, default=9216)
    ap.add_argument("--m", default="32,96,288")
    ap.add_argument("--reps", type=int, default=0, help="timed repeats (default 5 CPU, 50 GPU)")
    a = ap.parse_args()
    dev = a.device
    reps = a.reps or (5 if dev == "cpu" else 50)
    g = torch.Generator().manual_seed(0)
    B, D, Fn = a.B, a.D, a.F
    X = torch.randn(B, D, generator=g).to(dev)
    W = torch.randn(Fn, D, generator=g).to(dev)
    print(f"device {dev}, B {B}, D {D}, F {Fn}; ms (median of {reps})")
    print("| m | op | sparse | dense | dense ÷ sparse |")
    print("|---:|---|---:|---:|---:|")
    for m in (int(v) for v in a.m.split(",")):
        _rows(m, X, W, g, dev, reps)


def _rows(m: int, X, W, g, dev: str, reps: int) -> None:
    """Print the three sparse-vs-dense rows (and CUDA's sampled SDDMM) for width m."""
    B, Fn = X.shape[0], W.shape[0]
    idx = torch.rand(B, Fn, generator=g).topk(m, dim=1).indices.to(dev)
    w = torch.randn(B, m, generator=g).to(dev)

    def dense_s():
        return torch.zeros(B, Fn, device=dev).scatter_(1, idx, w)

    ops = {  # name -> (sparse op on a selection, dense equivalent)
        "decode": (lambda s: K.sparse_decode(w, s, W, None), lambda: dense_s() @ W),
        "spmm_t": (lambda s: K.spmm_t(s, w, X), lambda: dense_s().t() @ X),
        "sddmm": (lambda s: K.sddmm(s, X, W), lambda: (X @ W.t()).gather(1, idx)),
    }
    if dev != "cpu":
        ops["sddmm (cuSPARSE sampled_addmm)"] = (lambda s: K.sddmm(s, X, W, sampled=True),
                                                 lambda: (X @ W.t()).gather(1, idx))
    for name, (sp, de) in ops.items():
        sel = K.Selection(idx, Fn)
        try:
            ts = _time(lambda sp=sp, sel=sel: sp(sel), dev, reps)
        except RuntimeError as e:
            print(f"| {m} | {name} | failed: {str(e)[:60]} | | |")
            continue
        td = _time(de, dev, reps)
        print(f"| {m} | {name} | {ts:.3f} | {td:.3f} | {td / ts:.2f} |", flush=True)


if __name__ == "__main__":
    main()
