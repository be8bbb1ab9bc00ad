"""The state of one SAE in training, and the one optimisation step every driver takes.

A :class:`TrainState` holds an SAE [d_in → d_sae], its optimiser, the step and token counters,
the AuxK dead-latent counters, an LR schedule and (optionally) a penalty controller. Its
:meth:`~TrainState.step` is the body of every training loop of the project —
:class:`~abstopk.train.trainer.Trainer` (one SAE, with out folder and checkpoints),
:class:`~abstopk.train.multi.MultiTrainer` (several SAEs in lock-step on one batch stream) and
the synthetic benchmark's ``train_sae``. One step on a batch x [B, d_in], at 0-based step t::

    lr_t   = schedule(t)                               set on every Adam group (× lr_factor)
    c_t    = controller.coeff  (or the fixed coefficient; 0 for operators without penalty)
    dead   = tokens_since_fired ≥ dead_tokens          [d_sae] bool, only once tokens ≥ dead_tokens
    train_step(x; c_t, dead, k_aux, aux_coeff)         forward, loss, AuxK, backward, Adam
    tokens += B ;  tokens_since_fired ← (tokens_since_fired + B)·1[latent did not fire]
    controller.update(L0 of the step)

("fired" means z ≠ 0 for some row of the batch.) Nothing in a step reads the device unless
the controller does (:class:`~abstopk.train.schedule.MultiplicativeL0Controller`), so the hot
loop does not synchronise; :meth:`~TrainState.metrics` reads the step's tensors when a
driver logs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..sae import SAE
from .config import B_DEC_INITS, TrainConfig
from .schedule import L0Controller, LRSchedule, PenaltyController, WarmupDecayLR
from .step import StepResult, make_optimizer, set_lr, train_step

__all__ = ["StepReport", "TrainState", "geometric_median", "geometric_median_step"]


def geometric_median(x: Tensor, iters: int = 100, tol: float = 1e-6) -> Tensor:
    """argmin_m Σ_i ‖x_i − m‖ of rows x [N, d] by Weiszfeld's iteration (float64 inside)."""
    x64 = x.double()
    m = x64.mean(0)
    for _ in range(iters):
        m, done = geometric_median_step(x64, m, tol)
        if done:
            break
    return m.to(x.dtype)


def geometric_median_step(x64: Tensor, m: Tensor, tol: float = 1e-6, *,
                          reduce: Callable[[Tensor], Tensor] | None = None
                          ) -> tuple[Tensor, bool]:
    """One Weiszfeld update m ← Σ_i w_i x_i / Σ_i w_i, w_i = 1/‖x_i − m‖, and whether it moved
    m by at most ``tol``·‖m‖. ``reduce`` sums both sums over data-parallel ranks."""
    w = 1.0 / (x64 - m).norm(dim=1).clamp_min(1e-12)
    num, den = (w[:, None] * x64).sum(0), w.sum()
    if reduce is not None:
        num, den = reduce(num), reduce(den)
    m_new = num / den
    return m_new, bool((m_new - m).norm() <= tol * m.norm().clamp_min(1e-12))


@dataclass
class StepReport:
    """What one :meth:`TrainState.step` did.

    Attributes:
        result: the step's tensors (loss, mse, aux_loss, penalty, l0, fired [d_sae]).
        x: [B, d_in] the batch as trained on (float32, on the SAE's device).
        lr: the peak-group learning rate of the step.
    """

    result: StepResult
    x: Tensor
    lr: float


class TrainState:
    """One SAE in training: model, optimiser, counters, LR schedule, penalty controller.

    Args:
        sae: the SAE to train (its device is the state's device).
        optimizer: its optimiser (see :func:`~abstopk.train.step.make_optimizer`).
        lr_schedule: ``step -> lr`` for 0-based steps (:mod:`abstopk.train.schedule`).
        controller: adapts the penalty coefficient from each step's L0 (None: fixed).
        penalty_coeff: the fixed coefficient when there is no controller.
        k_aux: AuxK width (0: no AuxK); aux_coeff: its loss coefficient.
        dead_tokens: a latent is dead when it has not fired for this many tokens; AuxK runs
            once ``tokens ≥ dead_tokens``.
        b_dec_init: ``mean``, ``geometric_median`` or ``zeros`` (see :meth:`initialize`).
        compute_dtype: dtype of the SAE's encoder/decoder products (``"bfloat16"``: bf16
            autocast, see :attr:`abstopk.sae.SAE.compute_dtype`; ``"float32"``: none). The
            weights, Adam's moments and the gradients stay float32.
        cfg: the :class:`~abstopk.train.config.TrainConfig` the state was built from, if any
            (kept for the drivers; the state itself reads only the arguments above).

    Attributes: ``steps_done``, ``tokens`` (rows trained on), ``tokens_since_fired`` [d_sae]
    int64, ``initialized`` (whether :meth:`initialize` ran), ``last_metrics`` (the last record
    of :meth:`metrics`, or None).
    """

    def __init__(self, sae: SAE, optimizer: torch.optim.Optimizer, lr_schedule: LRSchedule, *,
                 controller: PenaltyController | None = None, penalty_coeff: float = 0.0,
                 k_aux: int = 0, aux_coeff: float = 1.0 / 32, dead_tokens: int = 10_000_000,
                 b_dec_init: str = "mean", compute_dtype: str = "float32",
                 cfg: TrainConfig | None = None) -> None:
        if b_dec_init not in B_DEC_INITS:
            raise ValueError(f"b_dec_init must be one of {B_DEC_INITS}, got {b_dec_init!r}")
        if k_aux < 0 or dead_tokens < 1 or not aux_coeff >= 0:
            raise ValueError(f"need k_aux ≥ 0, dead_tokens ≥ 1 and aux_coeff ≥ 0, got "
                             f"{k_aux!r}, {dead_tokens!r}, {aux_coeff!r}")
        self.sae, self.optimizer, self.lr_schedule = sae, optimizer, lr_schedule
        self.controller = controller
        self.fixed_penalty_coeff = float(penalty_coeff)
        self.k_aux, self.aux_coeff, self.dead_tokens = int(k_aux), aux_coeff, int(dead_tokens)
        self.b_dec_init, self.cfg = b_dec_init, cfg
        self.compute_dtype = str(compute_dtype)
        sae.compute_dtype = None if self.compute_dtype == "float32" else \
            getattr(torch, self.compute_dtype)
        self.steps_done = 0
        self.tokens = 0
        self.initialized = False
        self.tokens_since_fired = torch.zeros(sae.cfg.d_sae, dtype=torch.int64,
                                              device=self.device)
        self.last_metrics: dict[str, Any] | None = None
        #: data-parallel hooks (:class:`~abstopk.train.distributed.DataParallel`) when this
        #: state is one of N ranks; None in a single process
        self.dp: Any = None

    @classmethod
    def from_config(cls, cfg: TrainConfig, d_in: int, *,
                    sae_metadata: dict[str, Any] | None = None) -> TrainState:
        """The state of a fresh run of ``cfg`` on data of width ``d_in``: SAE seeded with
        ``cfg.seed``, Adam, :class:`WarmupDecayLR`, and the PI :class:`L0Controller` when
        ``cfg.target_l0`` is set. ``sae_metadata``: extra SAEConfig fields (model, hook, …)."""
        device = torch.device(cfg.device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {cfg.device!r} requested but CUDA is not available")
        sae = SAE(cfg.sae_config(d_in, **(sae_metadata or {})), seed=cfg.seed, device=device)
        optimizer = make_optimizer(sae, cfg.lr, betas=(cfg.adam_beta1, cfg.adam_beta2),
                                   eps=cfg.adam_eps, threshold_lr_factor=cfg.threshold_lr_factor)
        controller = None
        if cfg.target_l0 is not None:
            controller = L0Controller(
                cfg.target_l0, cfg.initial_penalty_coeff, ki=cfg.resolved_l0_controller_ki(),
                kp=cfg.l0_controller_kp, beta=cfg.l0_ema_beta,
                band=cfg.resolved_l0_controller_band(),
                c_min=cfg.penalty_coeff_min, c_max=cfg.penalty_coeff_max, device=device)
        return cls(sae, optimizer, WarmupDecayLR.from_config(cfg), controller=controller,
                   penalty_coeff=cfg.initial_penalty_coeff,
                   k_aux=cfg.resolved_aux_k(d_in) if cfg.aux_coeff > 0 else 0,
                   aux_coeff=cfg.aux_coeff, dead_tokens=cfg.dead_tokens,
                   b_dec_init=cfg.b_dec_init, compute_dtype=cfg.compute_dtype(str(device)),
                   cfg=cfg)

    # ------------------------------------------------------------------ read-outs
    @property
    def device(self) -> torch.device:
        return self.sae.W_dec.device

    @property
    def penalty_coeff(self) -> float | Tensor:
        """Coefficient of the next step's penalty: the controller's (a tensor the controller
        updates in place, or a float), else the fixed one; 0.0 when the operator has none."""
        if self.sae.op.penalty is None:
            return 0.0
        return self.controller.coeff if self.controller is not None else self.fixed_penalty_coeff

    def dead_mask(self) -> Tensor:
        """[d_sae] bool: latents that have not fired for ``dead_tokens`` tokens."""
        return self.tokens_since_fired >= self.dead_tokens

    # ------------------------------------------------------------------ training
    @torch.no_grad()
    def initialize(self, batches: Sequence[Tensor]) -> None:
        """Set the input scale and ``b_dec`` from the first batches (concatenated, X [N, d_in]).

        Scalar normalisation: s = sqrt(d_in / mean_i ‖x_i‖²), so that E‖s·x‖² = d_in. Then
        ``b_dec`` = mean or geometric median (Weiszfeld) of the normalised rows, or stays 0.
        The batches are not trained on here; the caller steps on them afterwards.
        """
        if self.dp is not None:
            return self.dp.initialize(self, batches)
        if not batches:
            raise ValueError("the data source yielded no batch")
        sae = self.sae
        x = torch.cat(list(batches)).to(self.device, torch.float32)
        if sae.cfg.normalize_activations == "scalar":
            ms = x.pow(2).sum(-1).mean()
            sae.input_scale.fill_(float(torch.sqrt(sae.cfg.d_in / ms.clamp_min(1e-30))))
        x_s, _ = sae.normalize(x)
        if self.b_dec_init == "mean":
            sae.b_dec.copy_(x_s.mean(0))
        elif self.b_dec_init == "geometric_median":
            sae.b_dec.copy_(geometric_median(x_s))
        self.initialized = True

    def step(self, x: Tensor) -> StepReport:
        """One optimisation step on the batch x [B, d_in] (raw activations; see the module
        docstring for the order of the updates)."""
        x = x.to(self.device, torch.float32, non_blocking=True)
        lr = self.lr_schedule(self.steps_done)
        set_lr(self.optimizer, lr)
        use_aux = self.k_aux > 0 and self.tokens >= self.dead_tokens
        res = train_step(self.sae, self.optimizer, x, penalty_coeff=self.penalty_coeff,
                         dead_mask=self.dead_mask() if use_aux else None,
                         k_aux=self.k_aux if use_aux else 0, aux_coeff=self.aux_coeff,
                         dp=self.dp)
        B = x.shape[0] if self.dp is None else self.dp.global_rows
        self.steps_done += 1
        self.tokens += B
        self.tokens_since_fired.add_(B).masked_fill_(res.fired, 0)
        if self.controller is not None:
            self.controller.update(res.l0)
        return StepReport(res, x, lr)

    @torch.no_grad()
    def metrics(self, report: StepReport, tokens_per_s: float) -> dict[str, Any]:
        """The metrics record of the step just taken (reads the device; also ``last_metrics``).

        ``fvu`` = mse / var with var = mean over rows and features of (x_s − x̄_s)² of the
        normalised batch (the batch's fraction of variance unexplained; the paper's per-token
        ``nmse`` is measured by :mod:`abstopk.eval.metrics`); ``dead_frac`` = fraction of latents that are dead after the step;
        ``penalty_coeff`` = the coefficient of the next step; the controller may add keys
        (``l0_ema``).
        """
        res = report.result
        x_s, _ = self.sae.normalize(report.x)
        var = (float((x_s - x_s.mean(0)).pow(2).mean()) if self.dp is None
               else self.dp.batch_variance(x_s))
        mse = float(res.mse)
        rec = {
            "step": self.steps_done,
            "tokens": self.tokens,
            "loss": float(res.loss),
            "mse": mse,
            "fvu": mse / var if var > 0 else float("nan"),
            "l0": float(res.l0),
            "aux_loss": float(res.aux_loss),
            "penalty": float(res.penalty),
            "penalty_coeff": float(self.penalty_coeff),
            "dead_frac": float(self.dead_mask().float().mean()),
            "lr": report.lr,
            "tokens_per_s": tokens_per_s,
        }
        if self.controller is not None:
            rec.update(self.controller.metrics())
        self.last_metrics = rec
        return rec

    def calibrate(self, batches) -> dict[str, Any] | None:
        """After the last step: set a batch-level SAE's inference threshold so that its mean
        L0 is k on the first ``cfg.threshold_calibration_tokens`` rows of ``batches``
        (:func:`abstopk.sae.calibrate.calibrate_batch_threshold`). Returns its record, or
        None when there is nothing to calibrate (other operators, 0 rows, no batch)."""
        from ..sae.calibrate import calibrate_batch_threshold

        rows = self.cfg.threshold_calibration_tokens if self.cfg is not None else 65536
        if not self.sae.op.batch_level or rows <= 0:
            return None
        try:
            return calibrate_batch_threshold(self.sae, batches, rows=rows)
        except ValueError:   # the source had no batch left
            return None

    # ------------------------------------------------------------------ checkpoint pieces
    def state_dict(self) -> tuple[dict[str, Tensor], dict[str, Any]]:
        """(tensors, JSON-serialisable rest) of everything the future of the run depends on.

        Tensors: ``model.<name>``, ``optim.<param id>.<key>`` (Adam moments),
        ``dead.tokens_since_fired``, ``controller.<name>``. JSON: ``step``, ``tokens``,
        ``initialized``, ``optimizer`` (param groups, scalar state, tensor keys),
        ``controller`` (None without one).
        """
        tensors: dict[str, Tensor] = {f"model.{n}": t for n, t in self.sae.state_dict().items()}
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
        tensors["dead.tokens_since_fired"] = self.tokens_since_fired
        ctrl_json = None
        if self.controller is not None:
            for name, t in self.controller.state_tensors().items():
                tensors[f"controller.{name}"] = t
            ctrl_json = self.controller.state_json()
        meta = {
            "step": self.steps_done,
            "tokens": self.tokens,
            "initialized": self.initialized,
            "optimizer": {"param_groups": osd["param_groups"], "state": opt_json,
                          "tensor_keys": opt_tensor_keys},
            "controller": ctrl_json,
        }
        return tensors, meta

    def load_state_dict(self, tensors: dict[str, Tensor], meta: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (``meta`` may hold more keys)."""
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
                raise ValueError("the saved state has no penalty-controller state")
            self.controller.load({k[len("controller."):]: v for k, v in tensors.items()
                                  if k.startswith("controller.")}, meta["controller"])
        self.steps_done, self.tokens = int(meta["step"]), int(meta["tokens"])
        self.initialized = bool(meta["initialized"])
