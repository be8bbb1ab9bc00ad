"""The training loop around :func:`abstopk.train.step.train_step`.

One :class:`Trainer` runs one :class:`~abstopk.train.config.TrainConfig` on one
:class:`~abstopk.train.data.BatchSource`:

* **initialisation** (fresh runs): the first ``init_batches`` batches give the scalar input
  scale ``s = sqrt(d_in / mean‖x‖²)`` (so E‖s·x‖² = d_in; folded into the weights by
  :meth:`SAE.save`) and ``b_dec`` = mean or geometric median (Weiszfeld) of the normalised
  rows; those batches are then trained on like any other;
* **each step**: LR from :func:`~abstopk.train.schedule.lr_at`, one ``train_step`` (Adam,
  unit-norm decoder rows), dead-latent counters (tokens since each latent last fired,
  ``z != 0``; dead = ≥ ``dead_tokens``) feeding AuxK, and the target-L0 controller;
* **every ``log_every`` steps**: one line of metrics to ``OUT/metrics.jsonl`` and the progress
  bar (the only place device tensors are read, so the hot loop never synchronises);
* **every ``checkpoint_every`` steps and at the end**: a checkpoint in
  ``OUT/checkpoint/step_XXXXXXXXX/`` (``state.safetensors`` for tensors — model, Adam moments,
  torch RNG, dead-latent counters, controller, pending batches — and ``state.json`` for the
  rest — step, tokens, data position, numpy/python RNG, optimizer hyper-parameters), written
  into a temporary folder, renamed into place, then published by an atomic
  ``checkpoint/latest.json``. No pickle anywhere.
* **resume** (``cfg.resume``): continue from ``latest.json`` (or start fresh when there is
  none). Everything the future depends on is restored exactly, so the final weights are
  bit-identical to an uninterrupted run on the same machine and thread count.
* **end**: the SAE is saved with :meth:`SAE.save` into ``OUT`` (``cfg.json`` +
  ``sae_weights.safetensors``), next to ``train_config.json``.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..data.matrix import MatrixSource
from ..data.open import open_source
from ..data.prefetch import PrefetchSource
from ..data.sources import BatchSource
from ..errors import RunMismatchError
from ..files import atomic_save_safetensors, atomic_write_bytes, atomic_write_json
from ..sae import SAE
from .config import TrainConfig
from .schedule import L0Controller, lr_at
from .step import make_optimizer, set_lr, train_step

__all__ = ["RunMismatchError", "Trainer", "geometric_median", "train"]

CHECKPOINT_DIR = "checkpoint"
LATEST = "latest.json"
TRAIN_CONFIG = "train_config.json"
METRICS = "metrics.jsonl"
_RUN_FILES = ("cfg.json", "sae_weights.safetensors", CHECKPOINT_DIR, METRICS)



def geometric_median(x: Tensor, iters: int = 100, tol: float = 1e-6) -> Tensor:
    """argmin_m Σ_i ‖x_i − m‖ of rows x [N, d] by Weiszfeld's iteration (float64 inside)."""
    x64 = x.double()
    m = x64.mean(0)
    for _ in range(iters):
        w = 1.0 / (x64 - m).norm(dim=1).clamp_min(1e-12)
        m_new = (w[:, None] * x64).sum(0) / w.sum()
        if (m_new - m).norm() <= tol * m.norm().clamp_min(1e-12):
            m = m_new
            break
        m = m_new
    return m.to(x.dtype)


class Trainer:
    """Train an SAE as described by ``cfg`` on ``data``.

    Args:
        cfg: the run.
        data: a :class:`BatchSource`, or anything :func:`~abstopk.train.data.open_source`
            accepts (path, tensor, array, iterable of batches).
        sae_metadata: extra :class:`~abstopk.sae.SAEConfig` fields (model name, hook, …).

    Attributes after construction: ``sae``, ``optimizer``, ``source``, ``step`` (steps done),
    ``tokens`` (rows trained on), ``tokens_since_fired`` [d_sae] int64, ``controller``
    (:class:`L0Controller` or None).
    """

    def __init__(self, cfg: TrainConfig, data: Any, *,
                 sae_metadata: dict[str, Any] | None = None) -> None:
        self.cfg = cfg
        self.source: BatchSource = (
            data if _is_source(data)
            else open_source(data, cfg.batch_size, cfg.seed, skip_nonfinite=cfg.skip_nonfinite,
                             progress=cfg.progress)
        )
        self.device = torch.device(cfg.device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {cfg.device!r} requested but CUDA is not available")
        if cfg.prefetch and isinstance(self.source, MatrixSource):
            self.source = PrefetchSource(self.source, cfg.prefetch,
                                         pin_memory=self.device.type == "cuda")
        d_in = int(self.source.d_in)
        self.sae_cfg = cfg.sae_config(d_in, **(sae_metadata or {}))
        self.sae = SAE(self.sae_cfg, seed=cfg.seed, device=self.device)
        self.optimizer = make_optimizer(self.sae, cfg.lr, betas=(cfg.adam_beta1, cfg.adam_beta2),
                                        eps=cfg.adam_eps,
                                        threshold_lr_factor=cfg.threshold_lr_factor)
        self.k_aux = cfg.resolved_aux_k(d_in) if cfg.aux_coeff > 0 else 0
        self.step = 0
        self.tokens = 0
        self.initialized = False
        self.tokens_since_fired = torch.zeros(cfg.d_sae, dtype=torch.int64, device=self.device)
        self.controller: L0Controller | None = None
        if cfg.target_l0 is not None:
            self.controller = L0Controller(
                cfg.target_l0, cfg.initial_penalty_coeff, ki=cfg.l0_controller_ki,
                kp=cfg.l0_controller_kp, beta=cfg.l0_ema_beta, c_min=cfg.penalty_coeff_min,
                c_max=cfg.penalty_coeff_max, device=self.device)
        self._pending: list[Tensor] = []
        self.out = Path(cfg.out) if cfg.out else None
        self.resumed_from: int | None = None
        self._prepared = False
        self.last_metrics: dict[str, Any] | None = None

    # ------------------------------------------------------------------ out folder
    def prepare(self) -> None:
        """Check the out folder (raise :class:`RunMismatchError` for a different run), write
        ``train_config.json`` and, with ``resume``, load the last checkpoint. Idempotent."""
        if self._prepared:
            return
        self._prepared = True
        if self.out is None:
            if self.cfg.resume:
                raise ValueError("resume needs an out folder")
            return
        out = self.out
        if out.exists() and not out.is_dir():
            raise RunMismatchError(f"{out} exists and is not a folder")
        tc = out / TRAIN_CONFIG
        if tc.is_file():
            try:
                prev = TrainConfig.from_dict(json.loads(tc.read_text()))
            except (ValueError, TypeError) as e:
                raise RunMismatchError(f"{tc} is not a valid train config ({e}); "
                                       "choose another --out") from None
            diff = self.cfg.differences(prev)
            if diff:
                shown = ", ".join(f"{k}: {getattr(prev, k)!r} → {getattr(self.cfg, k)!r}"
                                  for k in diff[:4])
                raise RunMismatchError(
                    f"{out} already holds a different run ({shown}); choose another --out"
                )
            if not self.cfg.resume:
                raise RunMismatchError(
                    f"{out} already holds this run; pass --resume to continue it "
                    "or choose another --out"
                )
        else:
            found = [f for f in _RUN_FILES if (out / f).exists()]
            if found:
                raise RunMismatchError(
                    f"{out} holds {', '.join(found)} of another run but no {TRAIN_CONFIG}; "
                    "choose another --out"
                )
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(tc, self.cfg.to_dict())
        if self.cfg.resume and (out / CHECKPOINT_DIR / LATEST).is_file():
            self.load_checkpoint()
        if self.cfg.resume:
            self._truncate_metrics(self.step)  # lines a crashed run logged after its checkpoint

    # ------------------------------------------------------------------ initialisation
    @torch.no_grad()
    def _initialize(self, it: Iterator[Tensor]) -> None:
        cfg, sae = self.cfg, self.sae
        batches = []
        for _ in range(cfg.init_batches):
            b = next(it, None)
            if b is None:
                break
            batches.append(b)
        if not batches:
            raise ValueError("the data source yielded no batch")
        x = torch.cat(batches).to(self.device, torch.float32)
        if cfg.normalize_activations == "scalar":
            ms = x.pow(2).sum(-1).mean()
            sae.input_scale.fill_(float(torch.sqrt(sae.cfg.d_in / ms.clamp_min(1e-30))))
        x_s, _ = sae.normalize(x)
        if cfg.b_dec_init == "mean":
            sae.b_dec.copy_(x_s.mean(0))
        elif cfg.b_dec_init == "geometric_median":
            sae.b_dec.copy_(geometric_median(x_s))
        self._pending = batches
        self.initialized = True

    # ------------------------------------------------------------------ the loop
    def fit(self, until: int | None = None) -> SAE:
        """Train up to ``cfg.steps`` (or stop, without the final save, after global step
        ``until``: an interruption, as if the process had been killed there). Returns the SAE.
        """
        cfg = self.cfg
        self.prepare()
        if not self.initialized:
            _seed_everything(cfg.seed)
        it = iter(self.source)
        if not self.initialized:
            self._initialize(it)
        stop = cfg.steps if until is None else min(cfg.steps, until)
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.steps, initial=self.step, unit="step", desc="train",
                   disable=not cfg.progress, dynamic_ncols=True)
        autocast = (torch.autocast("cuda", dtype=torch.bfloat16)
                    if cfg.autocast_bf16 and self.device.type == "cuda"
                    else contextlib.nullcontext())
        penalised = self.sae.op.penalty is not None
        t_last, tok_last = time.perf_counter(), self.tokens
        exhausted = False
        try:
            while self.step < stop:
                x = self._pending.pop(0) if self._pending else next(it, None)
                if x is None:
                    exhausted = True
                    break
                x = x.to(self.device, torch.float32, non_blocking=True)
                lr = lr_at(self.step, cfg)
                set_lr(self.optimizer, lr)
                coeff: float | Tensor = 0.0
                if penalised:
                    coeff = (self.controller.coeff if self.controller is not None
                             else cfg.initial_penalty_coeff)
                use_aux = self.k_aux > 0 and self.tokens >= cfg.dead_tokens
                dead = self.tokens_since_fired >= cfg.dead_tokens if use_aux else None
                with autocast:
                    res = train_step(self.sae, self.optimizer, x, penalty_coeff=coeff,
                                     dead_mask=dead, k_aux=self.k_aux if use_aux else 0,
                                     aux_coeff=cfg.aux_coeff)
                B = x.shape[0]
                self.step += 1
                self.tokens += B
                self.tokens_since_fired.add_(B).masked_fill_(res.fired, 0)
                if self.controller is not None:
                    self.controller.update(res.l0)
                bar.update(1)
                if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                    now = time.perf_counter()
                    rate = (self.tokens - tok_last) / max(now - t_last, 1e-9)
                    rec = self._log(res, x, lr, coeff, rate)
                    t_last, tok_last = now, self.tokens
                    bar.set_postfix(loss=f"{rec['loss']:.4g}", nmse=f"{rec['nmse']:.4f}",
                                    l0=f"{rec['l0']:.1f}", dead=f"{100 * rec['dead_frac']:.1f}%",
                                    tok_s=f"{rate:,.0f}", refresh=False)
                if (self.out is not None and cfg.checkpoint_every
                        and self.step % cfg.checkpoint_every == 0 and self.step < cfg.steps):
                    self.save_checkpoint()
        finally:
            bar.close()
        if self.step >= cfg.steps or exhausted:
            if exhausted:
                import warnings

                warnings.warn(f"data source exhausted after {self.step} of {cfg.steps} steps",
                              stacklevel=2)
            if self.out is not None:
                self.save_checkpoint()
                self.save_final()
        return self.sae

    # ------------------------------------------------------------------ metrics
    @torch.no_grad()
    def _log(self, res: Any, x: Tensor, lr: float, coeff: float | Tensor,
             rate: float) -> dict[str, Any]:
        x_s, _ = self.sae.normalize(x)
        var = float((x_s - x_s.mean(0)).pow(2).mean())
        mse = float(res.mse)
        dead = self.tokens_since_fired >= self.cfg.dead_tokens
        rec = {
            "step": self.step,
            "tokens": self.tokens,
            "loss": float(res.loss),
            "mse": mse,
            "nmse": mse / var if var > 0 else float("nan"),
            "l0": float(res.l0),
            "aux_loss": float(res.aux_loss),
            "penalty": float(res.penalty),
            "penalty_coeff": float(coeff),
            "dead_frac": float(dead.float().mean()),
            "lr": lr,
            "tokens_per_s": rate,
        }
        if self.controller is not None:
            rec["l0_ema"] = float(self.controller.l0_estimate())
        self.last_metrics = rec
        if self.out is not None:
            with open(self.out / METRICS, "a") as f:
                f.write(json.dumps(rec) + "\n")
        return rec

    def _truncate_metrics(self, step: int) -> None:
        """Drop metric lines logged after ``step`` (by a run that crashed after it)."""
        path = self.out / METRICS
        if not path.is_file():
            return
        keep = []
        for line in path.read_text().splitlines():
            try:
                if json.loads(line)["step"] <= step:
                    keep.append(line)
            except (ValueError, KeyError, TypeError):
                continue
        atomic_write_bytes(path, ("\n".join(keep) + "\n").encode() if keep else b"")

    # ------------------------------------------------------------------ checkpoints
    def checkpoint_state(self) -> tuple[dict[str, Tensor], dict[str, Any]]:
        """Everything a resume needs: (tensors for safetensors, JSON-serialisable rest)."""
        tensors: dict[str, Tensor] = {}
        for name, t in self.sae.state_dict().items():
            tensors[f"model.{name}"] = t
        osd = self.optimizer.state_dict()
        opt_json: dict[str, dict[str, Any]] = {}
        opt_tensor_keys: dict[str, list[str]] = {}
        for pid, st in osd["state"].items():
            for key, v in st.items():
                if isinstance(v, Tensor):
                    tensors[f"optim.{pid}.{key}"] = v
                    opt_tensor_keys.setdefault(str(pid), []).append(key)
                else:
                    opt_json.setdefault(str(pid), {})[key] = v
        tensors["rng.torch"] = torch.get_rng_state()
        n_cuda = 0
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            for i, s in enumerate(torch.cuda.get_rng_state_all()):
                tensors[f"rng.cuda.{i}"] = s
                n_cuda += 1
        tensors["dead.tokens_since_fired"] = self.tokens_since_fired
        ctrl_json = None
        if self.controller is not None:
            for name, t in self.controller.state_tensors().items():
                tensors[f"controller.{name}"] = t
            ctrl_json = self.controller.state_json()
        for i, b in enumerate(self._pending):
            tensors[f"pending.{i}"] = b
        np_state = np.random.get_state()
        py_state = random.getstate()
        meta = {
            "step": self.step,
            "tokens": self.tokens,
            "initialized": self.initialized,
            "n_pending": len(self._pending),
            "data": self.source.state_dict(),
            "optimizer": {"param_groups": osd["param_groups"], "state": opt_json,
                          "tensor_keys": opt_tensor_keys},
            "controller": ctrl_json,
            "rng": {
                "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]),
                          int(np_state[3]), float(np_state[4])],
                "python": [py_state[0], list(py_state[1]), py_state[2]],
                "n_cuda": n_cuda,
            },
            "sae_config": self.sae_cfg.to_dict(),
            "train_config": self.cfg.to_dict(),
        }
        return tensors, meta

    def save_checkpoint(self) -> Path:
        """Write the checkpoint of the current step into ``OUT/checkpoint`` (atomically)."""
        if self.out is None:
            raise ValueError("no out folder to checkpoint into")
        ck = self.out / CHECKPOINT_DIR
        ck.mkdir(parents=True, exist_ok=True)
        name = f"step_{self.step:09d}"
        tmp = ck / f".{name}.tmp"
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        tensors, meta = self.checkpoint_state()
        tensors = {k: v.detach().cpu().clone() for k, v in tensors.items()}
        atomic_save_safetensors(tmp / "state.safetensors", tensors, metadata={"format": "pt"})
        atomic_write_json(tmp / "state.json", meta)
        final = ck / name
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync_dir(ck)
        atomic_write_json(ck / LATEST, {"step": self.step, "dir": name})
        for p in ck.iterdir():
            if p.is_dir() and p.name != name and (p.name.startswith("step_")
                                                  or p.name.startswith(".step_")):
                shutil.rmtree(p, ignore_errors=True)
        return final

    def load_checkpoint(self, path: str | Path | None = None) -> int:
        """Restore the state saved by :meth:`save_checkpoint` (default: ``latest.json``).

        Returns the restored step. Raises ``ValueError`` when the checkpoint belongs to an SAE
        of another shape.
        """
        from safetensors.torch import load_file

        if path is None:
            if self.out is None:
                raise ValueError("no out folder to resume from")
            ck = self.out / CHECKPOINT_DIR
            latest = json.loads((ck / LATEST).read_text())
            path = ck / latest["dir"]
        path = Path(path)
        meta = json.loads((path / "state.json").read_text())
        tensors = load_file(str(path / "state.safetensors"))
        saved = meta["sae_config"]
        for key in ("d_in", "d_sae", "architecture", "k"):
            if saved.get(key) != getattr(self.sae_cfg, key):
                raise ValueError(
                    f"checkpoint {path} has {key} = {saved.get(key)!r} but this run has "
                    f"{getattr(self.sae_cfg, key)!r}"
                )
        dev = self.device
        with torch.no_grad():
            model_sd = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
            self.sae.load_state_dict(model_sd, strict=True)
        opt = meta["optimizer"]
        state: dict[int, dict[str, Any]] = {}
        for pid, keys in opt["tensor_keys"].items():
            state[int(pid)] = {k: tensors[f"optim.{pid}.{k}"].to(dev) for k in keys}
        for pid, kv in opt["state"].items():
            state.setdefault(int(pid), {}).update(kv)
        groups = opt["param_groups"]
        for g in groups:
            if isinstance(g.get("betas"), list):
                g["betas"] = tuple(g["betas"])
        self.optimizer.load_state_dict({"state": state, "param_groups": groups})
        self.tokens_since_fired = tensors["dead.tokens_since_fired"].to(dev)
        if self.controller is not None:
            if meta["controller"] is None:
                raise ValueError(f"checkpoint {path} has no target-L0 controller state")
            self.controller.load(
                {n: tensors[f"controller.{n}"] for n in ("ema", "integral", "coeff")},
                meta["controller"])
        self._pending = [tensors[f"pending.{i}"] for i in range(meta["n_pending"])]
        self.source.load_state_dict(meta["data"])
        torch.set_rng_state(tensors["rng.torch"])
        n_cuda = meta["rng"].get("n_cuda", 0)
        if n_cuda and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([tensors[f"rng.cuda.{i}"] for i in range(n_cuda)])
        npst = meta["rng"]["numpy"]
        np.random.set_state((npst[0], np.asarray(npst[1], dtype=np.uint32), npst[2], npst[3],
                             npst[4]))
        pyst = meta["rng"]["python"]
        random.setstate((pyst[0], tuple(pyst[1]), pyst[2]))
        self.step, self.tokens = int(meta["step"]), int(meta["tokens"])
        self.initialized = bool(meta["initialized"])
        self.resumed_from = self.step
        return self.step

    # ------------------------------------------------------------------ final output
    def save_final(self) -> Path:
        """Save the SAE (``SAE.save``: scale folded) and ``train_config.json`` into OUT."""
        if self.out is None:
            raise ValueError("no out folder to save into")
        self.sae.save(self.out)
        atomic_write_json(self.out / TRAIN_CONFIG, self.cfg.to_dict())
        return self.out


def train(cfg: TrainConfig, data: Any, **kw: Any) -> SAE:
    """Convenience: ``Trainer(cfg, data, **kw).fit()``."""
    return Trainer(cfg, data, **kw).fit()


# ---------------------------------------------------------------------- helpers
def _is_source(obj: Any) -> bool:
    return not isinstance(obj, (str, os.PathLike, Tensor, np.ndarray)) and all(
        hasattr(obj, a) for a in ("d_in", "state_dict", "load_state_dict", "__iter__"))


def _seed_everything(seed: int) -> None:
    """Seed torch, numpy and python RNGs at the start of a fresh run."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

