"""Benchmark: bf16 against fp32 — harvest, training step, encoder GEMM, NMSE after a fixed run.

Four measurements, each printed as one JSON line (``--json OUT`` also writes them to a file):

* ``harvest``: the embedded SmolLM2-135M-Instruct (GGUF Q4_1, dequantised to float32) run
  to layer ``--layer`` on ``--harvest-contexts`` held-out contexts of 128 tokens, loaded in
  float32 and in bfloat16: tokens/s of the truncated forward (``abstopk.lm.run_to_layer``)
  and the error of the bf16 activations against the fp32 ones (relative Frobenius error over
  all non-BOS rows, and the mean per-token relative error).
* ``gemm``: the encoder GEMM [B, 576]·[576, d_sae] in fp32 (``addmm``) and in bf16 (``mm``
  of bf16 operands, what the bf16 autocast runs), median of ``--repeats``.
* ``step``: one training step of AbsTopK (fused kernels) at B, d_sae, k 32, fp32 against
  ``autocast="bf16"``, median of ``--repeats`` after one warm-up step.
* ``nmse``: a fixed run (``--steps`` steps, seed ``--nmse-seed``, lr ``--nmse-lr``) of each architecture of
  ``--nmse-archs`` on the first rows of an activation cache (``--cache``, default: the shared
  1M-token layer-6 cache) in fp32 and bf16, evaluated on ``--eval-rows`` rows of
  ``--heldout`` with per-token NMSE ‖x−x̂‖²/‖x‖². With ``--cache-bf16`` (the same rows
  harvested with ``--model-dtype bfloat16``) also the whole bf16 pipeline: bf16 training on
  the bf16 harvest, evaluated on the same fp32 held-out rows.
* ``cachediff``: the error of a bf16 harvest (``--cache-bf16``) against the fp32 harvest of
  the same rows (``--cache``) over their first ``--diff-rows`` rows: relative Frobenius error
  and mean per-token relative error, as ``harvest`` reports for its few contexts.

Usage (the figures of docs/benchmarks.md, section Precision)::

    OMP_NUM_THREADS=1 PYTHONPATH=src python bench/precision.py --json runs/precision.json
    python bench/precision.py --only gemm,step --batch 1024      # a part
    python bench/precision.py --only gemm,step --batch 4096 --device cuda   # on a GPU
    python bench/precision.py --only cachediff --cache FP32_CACHE --cache-bf16 BF16_CACHE
    python bench/precision.py --only nmse --cache FP32_CACHE --cache-bf16 BF16_CACHE \
        --heldout HELDOUT --steps 244 --nmse-batch 4096 --nmse-d-sae 4608 --nmse-lr 4e-3 \
        --nmse-archs topk,abstopk          # the AMX rows of docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch

#: process CPU seconds of the last :func:`_median_time` (median over the repeats): on a shared
#: machine wall time includes waiting for the cores, CPU time does not
LAST_CPU: list[float] = [0.0]


def _median_time(fn, repeats: int, device: str = "cpu") -> float:
    """Median wall seconds of ``fn()`` over ``repeats`` calls after one warm-up call (the
    median CPU seconds go to :data:`LAST_CPU`); on CUDA each call ends with a synchronize."""
    def sync() -> None:
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    fn()
    sync()
    times, cpus = [], []
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        fn()
        sync()
        times.append(time.perf_counter() - t)
        cpus.append(time.process_time() - c)
    LAST_CPU[0] = statistics.median(cpus)
    return statistics.median(times)


def _rel_errors(ref: torch.Tensor, low: torch.Tensor) -> dict:
    """Error of ``low`` against ``ref`` (both [N, d]): ‖low − ref‖ / ‖ref‖ (Frobenius) and the
    mean over rows of ‖low_n − ref_n‖ / ‖ref_n‖."""
    return {"rel_error_frobenius": float((low - ref).norm() / ref.norm()),
            "rel_error_per_token_mean": float(((low - ref).norm(dim=1)
                                               / ref.norm(dim=1)).mean())}


def bench_harvest(layer: int, n_contexts: int) -> dict:
    from abstopk.data.tokens import iter_contexts
    from abstopk.lm import load_model, run_to_layer

    out: dict = {"what": "harvest", "layer": layer, "contexts": n_contexts, "context_size": 128}
    acts = {}
    for dtype in ("float32", "bfloat16"):
        model, tok, info = load_model(dtype=dtype)
        it = iter_contexts(tok, "embedded", "heldout", 128, prepend_bos=True)
        ids = torch.stack([next(it) for _ in range(n_contexts)])
        keep = ids != tok.bos_token_id
        run_to_layer(model, ids[:1], None, [layer], "resid_post")            # warm-up
        t, c = time.perf_counter(), time.process_time()
        with torch.no_grad():
            a = torch.cat([run_to_layer(model, ids[i:i + 2], None, [layer], "resid_post")[layer]
                           for i in range(0, n_contexts, 2)])
        secs = time.perf_counter() - t
        out[f"{dtype}_cpu_tokens_per_s"] = round(int(ids.numel()) / (time.process_time() - c), 1)
        acts[dtype] = a[keep].float()
        out[f"{dtype}_tokens_per_s"] = round(int(ids.numel()) / secs, 1)
        out["weight_format"] = info.weight_format
        del model
    ref, low = acts["float32"], acts["bfloat16"]
    out["rows"] = int(ref.shape[0])
    out.update(_rel_errors(ref, low))
    out["speedup_bf16"] = round(out["bfloat16_tokens_per_s"] / out["float32_tokens_per_s"], 3)
    return out


def bench_gemm(batch: int, d_sae: int, repeats: int, dev: str = "cpu") -> dict:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 576, generator=g).to(dev)
    W = (0.04 * torch.randn(576, d_sae, generator=g)).to(dev)
    b = torch.zeros(d_sae, device=dev)
    xb, Wb = x.bfloat16(), W.bfloat16()
    fp32 = _median_time(lambda: torch.addmm(b, x, W), repeats, dev)
    fp32_cpu = LAST_CPU[0]
    bf16 = _median_time(lambda: torch.mm(xb, Wb), repeats, dev)
    return {"what": "gemm", "device": dev, "batch": batch, "d_in": 576, "d_sae": d_sae,
            "fp32_ms": round(1e3 * fp32, 2), "bf16_ms": round(1e3 * bf16, 2),
            "fp32_cpu_ms": round(1e3 * fp32_cpu, 2), "bf16_cpu_ms": round(1e3 * LAST_CPU[0], 2),
            "speedup_bf16": round(fp32 / bf16, 3)}


def bench_step(batch: int, d_sae: int, repeats: int, dev: str = "cpu") -> dict:
    from abstopk.train.config import TrainConfig
    from abstopk.train.state import TrainState

    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 576, generator=g) @ (0.1 * torch.randn(576, 576, generator=g))
    x = x.to(dev)
    out = {"what": "step", "device": dev, "architecture": "abstopk", "batch": batch,
           "d_sae": d_sae, "k": 32}
    for ac in ("off", "bf16"):
        cfg = TrainConfig(architecture="abstopk", k=32, d_sae=d_sae, batch_size=batch,
                          steps=1000, autocast=ac, progress=False, device=dev)
        st = TrainState.from_config(cfg, 576)
        st.initialize([x])
        key = "fp32" if ac == "off" else "bf16"
        out[f"{key}_ms"] = round(1e3 * _median_time(lambda st=st: st.step(x), repeats, dev), 2)
        out[f"{key}_cpu_ms"] = round(1e3 * LAST_CPU[0], 2)
    out["speedup_bf16"] = round(out["fp32_ms"] / out["bf16_ms"], 3)
    return out


def _cache_rows(path: str, n: int) -> torch.Tensor:
    """The first ``n`` rows of the activation cache at ``path`` as float32 [n, d_in]."""
    from abstopk.data.cache import ActivationCache

    c = ActivationCache(path)
    parts, got = [], 0
    for i, s in enumerate(c.shards):
        take = min(s["rows"], n - got)
        parts.append(c.open_shard(i)["activations"].rows(0, take))
        got += take
        if got >= n:
            break
    return torch.cat([torch.as_tensor(p) for p in parts]).float()


def bench_nmse(cache: str, heldout: str, steps: int, batch: int, d_sae: int,
               eval_rows: int, archs: list[str], lr: float,
               cache_bf16: str | None = None, seed: int = 0) -> list[dict]:
    from abstopk.sae import SAE
    from abstopk.train.config import TrainConfig
    from abstopk.train.trainer import Trainer

    train = {"fp32": _cache_rows(cache, steps * batch).numpy()}
    if cache_bf16:
        train["bf16"] = _cache_rows(cache_bf16, steps * batch).numpy()
    test = _cache_rows(heldout, eval_rows)
    # (label, autocast, harvest): fp32 everywhere, bf16 training, bf16 harvest + training
    runs = [("fp32", "off", "fp32"), ("bf16", "bf16", "fp32")]
    runs += [("bf16_pipeline", "bf16", "bf16")] if cache_bf16 else []
    results = []
    for arch in archs:
        out = {"what": "nmse", "cache": cache, "cache_bf16": cache_bf16, "heldout": heldout,
               "steps": steps, "batch": batch, "d_sae": d_sae, "k": 32, "lr": lr,
               "seed": seed, "architecture": arch, "eval_rows": int(test.shape[0])}
        for key, ac, harvest in runs:
            cfg = TrainConfig(architecture=arch, k=32, d_sae=d_sae, batch_size=batch,
                              steps=steps, seed=seed, lr=lr, autocast=ac, progress=False)
            t, c = time.perf_counter(), time.process_time()
            sae: SAE = Trainer(cfg, train[harvest]).fit().eval()
            secs, cpu = time.perf_counter() - t, time.process_time() - c
            with torch.no_grad():
                xh = sae(test).x_hat
            out[f"{key}_nmse"] = float(((xh - test).pow(2).sum(1) / test.pow(2).sum(1)).mean())
            out[f"{key}_seconds"] = round(secs, 1)
            out[f"{key}_cpu_seconds"] = round(cpu, 1)
        for key in [k for k, _, _ in runs[1:]]:
            out[f"{key}_rel_diff"] = (out[f"{key}_nmse"] - out["fp32_nmse"]) / out["fp32_nmse"]
        results.append(out)
        print(json.dumps(out), flush=True)
    return results


def bench_cachediff(cache: str, cache_bf16: str, n: int) -> dict:
    ref, low = _cache_rows(cache, n), _cache_rows(cache_bf16, n)
    if ref.shape != low.shape:
        raise SystemExit(f"the caches differ in shape: {tuple(ref.shape)} vs {tuple(low.shape)}")
    return {"what": "cachediff", "cache": cache, "cache_bf16": cache_bf16,
            "rows": int(ref.shape[0]), **_rel_errors(ref, low)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--only", default="harvest,gemm,step,nmse")
    p.add_argument("--layer", type=int, default=9)
    p.add_argument("--harvest-contexts", type=int, default=4)
    p.add_argument("--batch", type=int, default=1024)
    p.add_argument("--d-sae", type=int, default=4608)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--cache", default="/work/shared-runs/cache-L6-1M")
    p.add_argument("--heldout", default="/work/shared-runs/cache-L6-heldout-16k")
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--nmse-batch", type=int, default=512)
    p.add_argument("--nmse-d-sae", type=int, default=1152)
    p.add_argument("--eval-rows", type=int, default=16384)
    p.add_argument("--nmse-archs", default="abstopk", help="comma-separated architectures")
    p.add_argument("--nmse-lr", type=float, default=4e-4)
    p.add_argument("--nmse-seed", type=int, default=0)
    p.add_argument("--cache-bf16", default=None,
                   help="the --cache rows harvested in bfloat16 (nmse: the bf16 pipeline row; "
                   "cachediff: the cache compared)")
    p.add_argument("--diff-rows", type=int, default=1 << 20)
    p.add_argument("--json", default=None)
    p.add_argument("--device", default="cpu", help="device of the gemm and step measurements "
                   "(harvest and nmse run on the CPU)")
    a = p.parse_args(argv)
    from abstopk.precision import bf16_units

    results = [{"what": "machine", "bf16_units_cpu": bf16_units("cpu"), "device": a.device,
                "bf16_units_device": bf16_units(a.device),
                "torch": torch.__version__, "threads": torch.get_num_threads()}]
    print(json.dumps(results[0]), flush=True)
    todo = a.only.split(",")
    jobs = {
        "harvest": lambda: bench_harvest(a.layer, a.harvest_contexts),
        "gemm": lambda: bench_gemm(a.batch, a.d_sae, a.repeats, a.device),
        "step": lambda: bench_step(a.batch, a.d_sae, a.repeats, a.device),
        "nmse": lambda: bench_nmse(a.cache, a.heldout, a.steps, a.nmse_batch, a.nmse_d_sae,
                                   a.eval_rows, a.nmse_archs.split(","), a.nmse_lr,
                                   a.cache_bf16, a.nmse_seed),
        "cachediff": lambda: bench_cachediff(a.cache, a.cache_bf16, a.diff_rows),
    }
    for name in todo:
        if name == "cachediff" and not a.cache_bf16:
            raise SystemExit("cachediff needs --cache-bf16")
        r = jobs[name]()
        if isinstance(r, list):   # nmse: one row per architecture, printed as they finish
            results.extend(r)
        else:
            results.append(r)
            print(json.dumps(r), flush=True)
        if a.json:
            with open(a.json, "w") as f:
                json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
