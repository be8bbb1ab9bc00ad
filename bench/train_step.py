"""Benchmark W1: one SAE training step, abstopk side by side with the floor and the peers.

Workload W1 (see ../shared/docs/perf-anchors.md §2): d_in 576, d_sae 9216, k 32, batch 4096,
fp32, Adam, CPU threads = cores. Data X = Z·A + 0.3·ε + μ (Z [N, 64] standard normal, A
[64, 576] with std 2/8, μ std 0.5), four batches of 4096 rows made with seed 0, used in turn.

Each variant runs in its own subprocess (so peak RSS is its own): build, ``--warmup`` steps,
then ``--steps`` timed steps; a variant's figure is the median step time (with
``--repeats`` the median and the min over the repeats' medians; ``load`` = the highest
1-minute load average seen at the end of a repeat). AuxK rows force
the worst case (every latent dead, k_aux = 288). Each child also records its CPU
utilisation, process CPU time / (wall × threads) over the timed steps, so contention by
other jobs on the machine is visible (≈ 1.0 = it had the cores to itself).

Usage::

    python bench/train_step.py                 # full W1 table (~10 min on 2 cores)
    python bench/train_step.py --quick         # small smoke run (seconds)
    python bench/train_step.py --only abstopk_abstopk,gemm_matmul --repeats 3
    python bench/train_step.py --device cuda   # same workload on a GPU (peers skipped)

On CUDA every timed step ends with ``torch.cuda.synchronize()``, the peak column is
``torch.cuda.max_memory_allocated`` and the oneDNN row is skipped.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass

# ----------------------------------------------------------------------------- variants
#: name -> (description, group); groups: gemm, select, plain, abstopk, saelens, sparsify
VARIANTS: dict[str, tuple[str, str]] = {
    "gemm_matmul": ("encoder GEMM `x @ W` (MKL, fresh output)", "gemm"),
    "gemm_addmm_out": ("encoder GEMM `addmm(b, x, W, out=buf)` (MKL, reused output)", "gemm"),
    "gemm_onednn": ("encoder GEMM `mkldnn._linear_pointwise` (oneDNN)", "gemm"),
    "abstopk_topk": ("abstopk `topk`", "abstopk"),
    "abstopk_topk_aux": ("abstopk `topk` + AuxK", "abstopk"),
    "abstopk_abstopk": ("abstopk `abstopk`", "abstopk"),
    "abstopk_abstopk_aux": ("abstopk `abstopk` + AuxK", "abstopk"),
    "abstopk_abstopk_aux10": ("abstopk `abstopk` + AuxK, 10 % of latents dead", "abstopk"),
    "abstopk_abstopk_aux3": ("abstopk `abstopk` + AuxK, 3 % of latents dead", "abstopk"),
    "abstopk_topk_aux3": ("abstopk `topk` + AuxK, 3 % of latents dead", "abstopk"),
    "abstopk_topk_aux10": ("abstopk `topk` + AuxK, 10 % of latents dead", "abstopk"),
    "sparsify_topk": ("sparsify SparseCoder, Adam (per-step sequence of its Trainer)", "sparsify"),
    "sparsify_topk_aux": ("sparsify SparseCoder, AuxK forced (auxk_alpha 1/32)", "sparsify"),
    "sparsify_topk_aux10": ("sparsify SparseCoder, AuxK, 10 % of latents dead", "sparsify"),
    "sparsify_topk_aux3": ("sparsify SparseCoder, AuxK, 3 % of latents dead", "sparsify"),
    "saelens_topk": ("SAELens TopKTrainingSAE + SAETrainer.step", "saelens"),
    "saelens_topk_aux": ("SAELens TopK, AuxK forced (dead_feature_window −1)", "saelens"),
    "saelens_topk_aux10": ("SAELens TopK, AuxK, 10 % of latents dead", "saelens"),
    "saelens_topk_aux3": ("SAELens TopK, AuxK, 3 % of latents dead", "saelens"),
    "plain_topk_dense": ("plain PyTorch dense TopK step (Adam default)", "plain"),
    "plain_topk_dense_aux": ("… + AuxK (dense, all dead, k_aux 288)", "plain"),
    "abstopk_batchabstopk": ("abstopk `batchabstopk` (batch kernel)", "abstopk"),
    "abstopk_batchabstopk_aux": ("abstopk `batchabstopk` + AuxK (batch kernel)", "abstopk"),
    "abstopk_batchabstopk_dense": ("abstopk `batchabstopk`, dense path (no kernels)", "abstopk"),
    "select_topk": ("kernels.topk_encode forward only (GEMM + TopK selection)", "select"),
    "select_abstopk": ("kernels.topk_encode forward only (GEMM + AbsTopK selection)", "select"),
    "abstopk_abstopk_aux_onednn": ("… + AuxK, encoder GEMM through oneDNN", "abstopk"),
    "abstopk_abstopk_aux_nochunk": ("… + AuxK, whole-batch GEMM (no row blocks)", "abstopk"),
    "abstopk_abstopk_flat": ("abstopk `abstopk`, one-level `torch.topk` (no group maxima)",
                             "abstopk"),
    "abstopk_abstopk_aux_flat": ("… + AuxK, all dead, one-level `torch.topk`", "abstopk"),
    "abstopk_abstopk_aux10_gathers": ("… + AuxK, 10 % dead, k_aux-wide gathers (no GEMMs over "
                                      "the dead columns)", "abstopk"),
    "abstopk_jumprelu": ("abstopk `jumprelu`, θ planted for L0 ≈ k, sparse path (the rule)",
                         "abstopk"),
    "abstopk_jumprelu_dense": ("abstopk `jumprelu`, θ planted for L0 ≈ k, dense path",
                               "abstopk"),
    "abstopk_absjumprelu": ("abstopk `absjumprelu`, θ planted for L0 ≈ k, sparse path (the "
                            "rule)", "abstopk"),
    "abstopk_absjumprelu_dense": ("abstopk `absjumprelu`, θ planted for L0 ≈ k, dense path",
                                  "abstopk"),
}

#: JumpReLU rows at another planted L0, and the product form forced (the crossover of
#: kernels.jumprelu.SPARSE_MAX_FRACTION): e.g. ``abstopk_jumprelu_l0256_sparseprod``.
JUMPRELU_ROW = re.compile(r"abstopk_(abs)?jumprelu_l0(\d+)(_sparseprod|_denseprod|_dense)?$")


def describe(name: str) -> tuple[str, str]:
    """(description, group) of a variant: VARIANTS, or a JUMPRELU_ROW name."""
    if name in VARIANTS:
        return VARIANTS[name]
    m = JUMPRELU_ROW.match(name)
    if m is None:
        raise KeyError(name)
    how = {"_sparseprod": "sparse products forced", "_denseprod": "dense products forced",
           "_dense": "dense path", None: "the rule"}[m.group(3)]
    return f"abstopk `{(m.group(1) or '')}jumprelu`, θ planted for L0 ≈ {m.group(2)}, {how}", \
        "abstopk"


@dataclass
class Shape:
    B: int
    D: int
    F: int
    k: int
    k_aux: int


W1 = Shape(B=4096, D=576, F=9216, k=32, k_aux=288)
QUICK = Shape(B=512, D=96, F=768, k=16, k_aux=48)


def make_batches(s: Shape, n_batches: int = 4, device: str = "cpu"):
    """Low-rank + noise data: X = Z·A + 0.3·ε + μ (seed 0), as ``n_batches`` [B, D] tensors."""
    import torch

    g = torch.Generator().manual_seed(0)
    n = s.B * n_batches
    Z = torch.randn(n, 64, generator=g)
    A = torch.randn(64, s.D, generator=g) * (2 / 8)
    mu = torch.randn(s.D, generator=g) * 0.5
    X = Z @ A + 0.3 * torch.randn(n, s.D, generator=g) + mu
    return [X[i * s.B:(i + 1) * s.B].contiguous().to(device) for i in range(n_batches)]


def dead_fraction(name: str) -> float:
    """Share of latents marked dead for variant ``name``: ``…_aux`` (or ``…_aux_<option>``)
    1.0, ``…_aux10`` 0.1, ``…_aux3`` 0.03; no ``_aux`` 0."""
    m = re.search(r"_aux(\d*)(?:_|$)", name)
    if m is None:
        return 0.0
    return int(m.group(1)) / 100 if m.group(1) else 1.0


def dead_mask(s: Shape, frac: float, device: str = "cpu"):
    """[F] bool: a fixed random ``frac`` of the latents (all of them for 1.0)."""
    import torch

    if frac >= 1.0:
        return torch.ones(s.F, dtype=torch.bool, device=device)
    g = torch.Generator().manual_seed(123)
    mask = torch.zeros(s.F, dtype=torch.bool)
    mask[torch.randperm(s.F, generator=g)[:int(round(frac * s.F))]] = True
    return mask.to(device)


# ----------------------------------------------------------------------------- builders
def build(name: str, s: Shape, device: str = "cpu"):
    """Return a zero-argument callable running one step of variant ``name`` on batch i."""
    import torch

    batches = make_batches(s, device=device)
    it = {"i": 0}

    def next_batch():
        x = batches[it["i"] % len(batches)]
        it["i"] += 1
        return x

    frac = dead_fraction(name)
    aux = frac > 0
    if name.startswith("gemm_"):
        g = torch.Generator().manual_seed(1)
        W = (torch.randn(s.D, s.F, generator=g) / s.D**0.5).to(device)
        b = torch.zeros(s.F, device=device)
        if name == "gemm_matmul":
            return lambda: next_batch() @ W
        if name == "gemm_addmm_out":
            out = torch.empty(s.B, s.F, device=device)
            return lambda: torch.addmm(b, next_batch(), W, out=out)
        from abstopk.kernels import onednn_available

        if device != "cpu" or not onednn_available():
            raise RuntimeError("oneDNN linear not available")
        Wt = W.t().contiguous()
        return lambda: torch.ops.mkldnn._linear_pointwise(next_batch(), Wt, b, "none", [], "")

    if name.startswith("select_"):
        from abstopk import kernels

        g = torch.Generator().manual_seed(1)
        W = (torch.randn(s.D, s.F, generator=g) / s.D**0.5).to(device)
        b = torch.zeros(s.F, device=device)
        signed = name == "select_abstopk"

        def sel():
            with torch.no_grad():
                return kernels.topk_encode(next_batch(), W, b, s.k, signed)

        return sel

    if name.startswith("plain_"):
        return _plain_dense(s, next_batch, aux, device)

    if "jumprelu" in name:
        return _jumprelu(name, s, batches, next_batch, device)

    if name.startswith("abstopk_"):
        from abstopk.kernels import encoder_gemm
        from abstopk.sae import SAE, SAEConfig
        from abstopk.train import step as step_mod
        from abstopk.train.step import make_optimizer, train_step

        arch = name.split("_")[1]
        if name.endswith("_onednn"):
            encoder_gemm.GEMM_BACKEND = "onednn"
        if name.endswith("_nochunk"):
            encoder_gemm.CPU_CHUNK_ROWS = None
        if name.endswith("_flat"):
            from abstopk.kernels import row_topk

            row_topk.GROUPED = False
        if name.endswith("_gathers"):
            step_mod.AUX_PATH = "fused"
            from abstopk.kernels import aux_dense

            aux_dense.CPU_DEAD_PER_KA = 0.0
        sae = SAE(SAEConfig(d_in=s.D, d_sae=s.F, architecture=arch, k=s.k,
                            use_sparse_kernels=not name.endswith("_dense")), seed=0,
                  device=device)
        opt = make_optimizer(sae, lr=1e-4)
        dead = dead_mask(s, frac, device) if aux else None

        def step():
            return train_step(sae, opt, next_batch(), dead_mask=dead,
                              k_aux=s.k_aux if aux else 0)

        return step

    if device != "cpu":
        raise RuntimeError("peers are benchmarked on the CPU only")
    if name.startswith("saelens_"):
        return _saelens(s, next_batch, frac)
    if name.startswith("sparsify_"):
        return _sparsify(s, next_batch, frac)
    raise ValueError(f"unknown variant {name!r}")


def _jumprelu(name: str, s: Shape, batches, next_batch, device: str = "cpu"):
    """A JumpReLU-family step with θ planted so that L0 ≈ k (or the name's ``_l0<N>``).

    The SAE is scaled as training scales it (E‖x_s‖² = d_in), b_dec = the batch mean, and
    θ_f = the (1 − L0/F) quantile of latent f's key (u, or |u|) over the first batch, so each
    latent fires on L0/F of its rows. The step's ``report()`` gives the L0 and the selection
    width (entries with key > θ − ε/2, band included) on the first batch after the timing.
    """
    import torch

    from abstopk.kernels import jumprelu as jr
    from abstopk.sae import SAE, SAEConfig
    from abstopk.train.step import make_optimizer, train_step

    m = JUMPRELU_ROW.match(name) or re.match(r"abstopk_(abs)?jumprelu()(_dense)?$", name)
    l0 = int(m.group(2)) if m.group(2) else s.k
    form = m.group(3)
    if form == "_sparseprod":
        jr.SPARSE_MAX_FRACTION = 1.0
    elif form == "_denseprod":
        jr.SPARSE_MAX_FRACTION = -1.0
    arch = "absjumprelu" if m.group(1) else "jumprelu"
    sae = SAE(SAEConfig(d_in=s.D, d_sae=s.F, architecture=arch, normalize_activations="scalar",
                        use_sparse_kernels=form != "_dense"), seed=0, device=device)
    x0 = batches[0]

    def keys():
        u = sae.pre_acts(sae.normalize(x0)[0])
        return u.abs() if sae.op.signed else u

    with torch.no_grad():
        sae.input_scale.fill_(float((s.D / x0.pow(2).sum(1).mean()).sqrt()))
        sae.b_dec.copy_(sae.normalize(x0)[0].mean(0))
        rank = max(1, min(s.B, round(s.B * (1 - l0 / s.F))))
        sae.threshold.copy_(keys().kthvalue(rank, dim=0).values)
    opt = make_optimizer(sae, lr=1e-4, threshold_lr_factor=30.0)

    def step():
        return train_step(sae, opt, next_batch(), penalty_coeff=1e-3)

    def report():
        with torch.no_grad():
            k, th = keys(), sae.threshold
            eps = sae.cfg.jumprelu_bandwidth
            return {"l0": float((k > th).sum(1).float().mean()),
                    "width": float((k > th - eps / 2).sum(1).float().mean())}

    step.report = report
    return step


def _plain_dense(s: Shape, next_batch, aux: bool, device: str = "cpu"):
    """Plain PyTorch: Linear → topk → dense scatter → dense decoder → MSE (+AuxK) → Adam."""
    import torch

    g = torch.Generator().manual_seed(0)
    W_dec = torch.randn(s.F, s.D, generator=g).to(device)
    W_dec /= W_dec.norm(dim=1, keepdim=True)
    W_dec.requires_grad_(True)
    W_enc = W_dec.detach().t().contiguous().requires_grad_(True)
    b_enc = torch.zeros(s.F, requires_grad=True, device=device)
    b_dec = torch.zeros(s.D, requires_grad=True, device=device)
    opt = torch.optim.Adam([W_enc, b_enc, W_dec, b_dec], lr=1e-4)
    dead = torch.ones(s.F, dtype=torch.bool, device=device)

    def step():
        x = next_batch()
        u = (x - b_dec) @ W_enc + b_enc
        v, i = u.topk(s.k, dim=-1)
        z = torch.zeros_like(u).scatter(-1, i, torch.relu(v))
        x_hat = z @ W_dec + b_dec
        loss = (x_hat - x).pow(2).mean()
        if aux:
            e = (x - x_hat).detach()
            va, ia = u.masked_fill(~dead, 0.0).topk(s.k_aux, dim=-1)
            za = torch.zeros_like(u).scatter(-1, ia, torch.relu(va))
            e_hat = za @ W_dec
            loss = loss + (e_hat - e).pow(2).sum() / (e - e.mean(0)).pow(2).sum() / 32
        loss.backward()
        with torch.no_grad():
            gW = W_dec.grad
            gW -= (gW * W_dec).sum(1, keepdim=True) * W_dec
        opt.step()
        opt.zero_grad(set_to_none=True)
        with torch.no_grad():
            W_dec.div_(W_dec.norm(dim=1, keepdim=True))
        return loss

    return step


def _saelens(s: Shape, next_batch, frac: float):
    """SAELens TopKTrainingSAE driven by SAETrainer.step (= SAETrainer.fit minus logging)."""
    import warnings

    warnings.filterwarnings("ignore")
    from sae_lens import TopKTrainingSAE, TopKTrainingSAEConfig
    from sae_lens.config import SAETrainerConfig
    from sae_lens.training.sae_trainer import SAETrainer

    sae = TopKTrainingSAE(TopKTrainingSAEConfig(d_in=s.D, d_sae=s.F, k=s.k))
    window = -1 if frac >= 1.0 else 1000
    cfg = SAETrainerConfig(total_training_samples=s.B * 10**6, train_batch_size_samples=s.B,
                           dead_feature_window=window, lr=3e-4, lr_end=3e-4)
    trainer = SAETrainer(cfg=cfg, sae=sae, data_provider=iter(()))
    dead = dead_mask(s, frac) if 0 < frac < 1 else None

    def step():
        trainer.maybe_reset_sparsity()
        if dead is not None:  # hold the chosen latents dead (> window passes since firing)
            trainer.n_forward_passes_since_fired[dead] = 10**6
        out = trainer.step(next_batch())
        trainer.n_training_steps += 1
        return out

    return step


def _sparsify(s: Shape, next_batch, frac: float):
    """sparsify SparseCoder with the per-step sequence of its Trainer (loss_fn 'fvu', Adam)."""
    import torch
    from sparsify import SparseCoder, SparseCoderConfig
    from transformers import get_linear_schedule_with_warmup

    sae = SparseCoder(s.D, SparseCoderConfig(k=s.k, num_latents=s.F))
    opt = torch.optim.Adam(sae.parameters(), lr=1e-4)
    sched = get_linear_schedule_with_warmup(opt, 1000, 10**6)
    since_fired = torch.zeros(s.F, dtype=torch.long)
    did_fire = torch.zeros(s.F, dtype=torch.bool)
    auxk_alpha = 1 / 32 if frac > 0 else 0.0
    threshold = -1 if frac >= 1.0 else 10_000_000
    fixed = dead_mask(s, frac) if 0 < frac < 1 else None

    def step():
        x = next_batch()
        sae.set_decoder_norm_to_unit_norm()
        dead = since_fired > threshold if auxk_alpha > 0 else None
        if fixed is not None:
            dead = fixed
        out = sae(x=x, y=x, dead_mask=dead)
        did_fire[out.latent_indices.flatten()] = True
        float(out.fvu.detach())
        if auxk_alpha > 0:
            float(out.auxk_loss.detach())
        (out.fvu + auxk_alpha * out.auxk_loss).backward()
        sae.remove_gradient_parallel_to_decoder_directions()
        opt.step()
        opt.zero_grad()
        sched.step()
        with torch.no_grad():
            since_fired.add_(x.shape[0])
            since_fired[did_fire] = 0
            did_fire.zero_()
        return out

    return step


# ----------------------------------------------------------------------------- child
def run_child(name: str, s: Shape, steps: int, warmup: int, threads: int,
              device: str = "cpu") -> dict:
    import torch

    torch.set_num_threads(threads)
    cuda = device != "cpu"

    def sync():
        if cuda:
            torch.cuda.synchronize()

    step = build(name, s, device)
    sync()
    rss_built = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if cuda:
        rss_built = torch.cuda.memory_allocated() / 2**20
    for _ in range(warmup):
        step()
    sync()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    times, cpus = [], []
    c0, w0 = time.process_time(), time.perf_counter()
    for _ in range(steps):
        t0, p0 = time.perf_counter(), time.process_time()
        step()
        sync()
        times.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - p0)
    cpu, wall = time.process_time() - c0, time.perf_counter() - w0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if cuda:
        peak = torch.cuda.max_memory_allocated() / 2**20
    extra = step.report() if hasattr(step, "report") else {}
    return {
        **extra,
        "name": name,
        "ms": 1e3 * statistics.median(times),
        "ms_all": [round(1e3 * t, 3 if cuda else 1) for t in times],
        "cpu_ms": 1e3 * statistics.median(cpus),
        "cpu_util": cpu / (wall * threads),
        "load": os.getloadavg()[0],
        "peak_mib": peak,
        "delta_mib": peak - rss_built,
    }


# ----------------------------------------------------------------------------- parent
def cpu_model() -> str:
    """The CPU's model name (and family) from /proc/cpuinfo, or the platform's processor."""
    import platform

    try:
        with open("/proc/cpuinfo") as f:
            info = dict(ln.split(":", 1) for ln in f.read().split("\n\n")[0].splitlines()
                        if ":" in ln)
        info = {k.strip(): v.strip() for k, v in info.items()}
        return f"{info.get('model name', '?')} (family {info.get('cpu family', '?')})"
    except OSError:
        return platform.processor() or "unknown CPU"


def available(group: str) -> bool:
    import importlib.util

    if group == "saelens":
        return importlib.util.find_spec("sae_lens") is not None
    if group == "sparsify":
        return importlib.util.find_spec("sparsify") is not None
    return True


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, few steps (smoke run)")
    ap.add_argument("--steps", type=int, default=None, help="timed steps per variant (≥10)")
    ap.add_argument("--warmup", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=1, help="round-robin repeats; median")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--only", default="", help="comma-separated variant names")
    ap.add_argument("--json", default="", help="also write the raw results to this file")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (peers: CPU only)")
    ap.add_argument("--d-sae", type=int, default=None, help="d_sae instead of the shape's")
    ap.add_argument("--child", default="", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    s = QUICK if a.quick else W1
    if a.d_sae:
        s = Shape(B=s.B, D=s.D, F=a.d_sae, k=s.k, k_aux=s.k_aux)
    steps = a.steps or (3 if a.quick else 10)
    warmup = a.warmup if a.warmup is not None else (1 if a.quick else 3)
    if a.child:
        res = run_child(a.child, s, steps, warmup, a.threads, a.device)
        print("RESULT " + json.dumps(res), flush=True)
        return 0

    names = [n for n in (a.only.split(",") if a.only else VARIANTS) if n]
    for n in names:
        if n not in VARIANTS and not JUMPRELU_ROW.match(n):
            ap.error(f"unknown variant {n!r}; known: {', '.join(VARIANTS)}")
    on_gpu = a.device != "cpu"
    if on_gpu and not a.only:  # peers and the oneDNN row are CPU-only
        names = [n for n in names if describe(n)[1] not in ("saelens", "sparsify")
                 and n not in ("gemm_onednn", "abstopk_abstopk_aux_onednn",
                               "abstopk_abstopk_aux_nochunk")]
    skipped = [n for n in names if not available(describe(n)[1])]
    names = [n for n in names if n not in skipped]
    env = dict(os.environ, OMP_NUM_THREADS=str(a.threads), MKL_NUM_THREADS=str(a.threads))
    results: dict[str, list[dict]] = {n: [] for n in names}
    failed: dict[str, str] = {}
    print(f"# shape B={s.B} d_in={s.D} d_sae={s.F} k={s.k} k_aux={s.k_aux} threads={a.threads} "
          f"steps={steps} warmup={warmup} repeats={a.repeats}", file=sys.stderr)
    for r in range(a.repeats):
        for n in names:
            if n in failed:
                continue
            cmd = [sys.executable, os.path.abspath(__file__), "--child", n,
                   "--steps", str(steps), "--warmup", str(warmup), "--threads", str(a.threads),
                   "--device", a.device, *(["--d-sae", str(a.d_sae)] if a.d_sae else [])]
            if a.quick:
                cmd.append("--quick")
            p = subprocess.run(cmd, capture_output=True, text=True, env=env)
            line = [ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")]
            if p.returncode != 0 or not line:
                failed[n] = (p.stderr.strip().splitlines() or ["no output"])[-1][:200]
                print(f"  {n}: FAILED {failed[n]}", file=sys.stderr)
                continue
            res = json.loads(line[-1][7:])
            results[n].append(res)
            print(f"  [{r + 1}/{a.repeats}] {n}: {res['ms']:.3f} ms  cpu {res['cpu_ms']:.1f} ms  "
                  f"util {res['cpu_util']:.2f}  load {res['load']:.1f}  "
                  f"peak {res['peak_mib']:.0f} MiB  steps {res['ms_all']}"
                  + (f"  L0 {res['l0']:.1f}  width {res['width']:.1f}" if "l0" in res else ""),
                  file=sys.stderr)

    rows = {}
    for n, rs in results.items():
        if rs:
            rows[n] = {
                "ms": statistics.median(x["ms"] for x in rs),
                "ms_min": min(x["ms"] for x in rs),
                "cpu_ms": statistics.median(x.get("cpu_ms", float("nan")) for x in rs),
                "cpu_min": min(x.get("cpu_ms", float("nan")) for x in rs),
                "util": min(x["cpu_util"] for x in rs),
                "load": max(x.get("load", float("nan")) for x in rs),
                "peak": max(x["peak_mib"] for x in rs),
                "delta": max(x["delta_mib"] for x in rs),
                "sel": (f"; L0 {rs[-1]['l0']:.1f}, width {rs[-1]['width']:.1f}"
                        if "l0" in rs[-1] else ""),
            }
    gemms = {n: v["ms"] for n, v in rows.items() if describe(n)[1] == "gemm"}
    floor_name = min(gemms, key=gemms.get) if gemms else None
    floor = gemms[floor_name] if floor_name else float("nan")
    where = f"{a.threads} threads" if not on_gpu else a.device
    print(f"\nW1-style step, B={s.B}, d_in={s.D}, d_sae={s.F}, k={s.k}, k_aux={s.k_aux}, fp32, "
          f"{where}, {cpu_model()}; {a.repeats} repeat(s), median (min) over repeats; ratio to "
          f"the fastest GEMM ({floor_name}, {floor:.3f} ms)\n")
    mem = "peak GPU MiB (Δ)" if on_gpu else "peak RSS MiB (Δ)"
    digits = 3 if on_gpu else 1
    cfloor = min((rows[n]["cpu_ms"] for n in gemms), default=float("nan"))
    print(f"| variant | what | ms/step (min) | tokens/s | ÷ fastest GEMM | {mem} | cpu util "
          "| load | CPU ms/step (min) | CPU ÷ fastest GEMM |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for n, v in rows.items():
        print(f"| `{n}` | {describe(n)[0]}{v['sel']} | {v['ms']:.{digits}f} ({v['ms_min']:.{digits}f}) | "
              f"{s.B / v['ms'] * 1e3:,.0f} | {v['ms'] / floor:.2f} | "
              f"{v['peak']:,.0f} ({v['delta']:,.0f}) | {v['util']:.2f} | {v['load']:.1f} | "
              f"{v['cpu_ms']:.0f} ({v['cpu_min']:.0f}) | {v['cpu_ms'] / cfloor:.2f} |")
    for n in skipped:
        print(f"| `{n}` | {describe(n)[0]} | not installed | | | | | | |")
    for n, why in failed.items():
        print(f"| `{n}` | {describe(n)[0]} | failed: {why} | | | | | | |")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"shape": s.__dict__, "results": results, "failed": failed}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
