"""``abstopk train``: train an SAE on an activation matrix (or, later, an activation cache)."""

from __future__ import annotations

from pathlib import Path

import typer

from . import UserError, field_help

__all__ = ["register", "train_command"]


def _h(name: str) -> str:
    from ..train.config import TrainConfig

    return field_help(TrainConfig, name)


def _d(name: str):
    """The TrainConfig default of field ``name`` (one source of truth for CLI defaults)."""
    import dataclasses

    from ..train.config import TrainConfig

    return next(f.default for f in dataclasses.fields(TrainConfig) if f.name == name)


def train_command(
    activations: Path | None = typer.Option(
        None, "--activations", help="Activation matrix [N, d_in]: a .npy or .safetensors file "
        "(memory-mapped), or an activation cache folder (manifest.json)."),
    cache: Path | None = typer.Option(
        None, "--cache", help="Activation cache folder written by `abstopk harvest` "
        "(same as --activations FOLDER)."),
    out: Path = typer.Option(..., "--out", help=_h("out")),
    architecture: str = typer.Option(_d("architecture"), "--architecture", help=_h("architecture")),
    k: int | None = typer.Option(None, "--k", help=_h("k")),
    d_sae: int = typer.Option(_d("d_sae"), "--d-sae", help=_h("d_sae")),
    d_in: int | None = typer.Option(None, "--d-in", help=_h("d_in")),
    steps: int = typer.Option(_d("steps"), "--steps", help=_h("steps")),
    batch_size: int = typer.Option(_d("batch_size"), "--batch-size", help=_h("batch_size")),
    lr: float = typer.Option(_d("lr"), "--lr", help=_h("lr")),
    seed: int = typer.Option(_d("seed"), "--seed", help=_h("seed")),
    resume: bool = typer.Option(False, "--resume", help=_h("resume")),
    target_l0: float | None = typer.Option(None, "--target-l0", help=_h("target_l0")),
    penalty_coeff: float | None = typer.Option(None, "--penalty-coeff", help=_h("penalty_coeff")),
    threshold_lr_factor: float = typer.Option(_d("threshold_lr_factor"), "--threshold-lr-factor",
        help=_h("threshold_lr_factor")),
    skip_nonfinite: bool = typer.Option(False, "--skip-nonfinite", help=_h("skip_nonfinite")),
    key: str | None = typer.Option(
        None, "--key", help="Name of the matrix inside a .safetensors file holding several."),
    n_steps: int = typer.Option(_d("n_steps"), "--n-steps", help=_h("n_steps")),
    normalize: str = typer.Option(_d("normalize_activations"), "--normalize",
        help=_h("normalize_activations")),
    b_dec_init: str = typer.Option(_d("b_dec_init"), "--b-dec-init", help=_h("b_dec_init")),
    aux_k: int | None = typer.Option(None, "--aux-k", help=_h("aux_k")),
    aux_coeff: float = typer.Option(_d("aux_coeff"), "--aux-coeff", help=_h("aux_coeff")),
    dead_tokens: int = typer.Option(_d("dead_tokens"), "--dead-tokens", help=_h("dead_tokens")),
    warmup_frac: float = typer.Option(_d("lr_warmup_frac"), "--warmup-frac",
        help=_h("lr_warmup_frac")),
    decay_frac: float = typer.Option(_d("lr_decay_frac"), "--decay-frac", help=_h("lr_decay_frac")),
    lr_decay: str = typer.Option(_d("lr_decay"), "--lr-decay", help=_h("lr_decay")),
    beta1: float = typer.Option(_d("adam_beta1"), "--beta1", help=_h("adam_beta1")),
    beta2: float = typer.Option(_d("adam_beta2"), "--beta2", help=_h("adam_beta2")),
    log_every: int = typer.Option(_d("log_every"), "--log-every", help=_h("log_every")),
    checkpoint_every: int = typer.Option(_d("checkpoint_every"), "--checkpoint-every",
        help=_h("checkpoint_every")),
    device: str = typer.Option(_d("device"), "--device", help=_h("device")),
    bf16: bool = typer.Option(False, "--bf16", help=_h("autocast_bf16")),
    progress: bool = typer.Option(True, "--progress/--no-progress", help=_h("progress")),
) -> None:
    """Train an SAE on activations; writes cfg.json + sae_weights.safetensors into --out."""
    from ..data.open import open_source
    from ..train.config import TrainConfig
    from ..train.trainer import Trainer

    if (activations is None) == (cache is None):
        raise UserError("give exactly one of --activations FILE and --cache FOLDER")
    if cache is not None:
        if not (cache / "manifest.json").is_file():
            raise UserError(f"{cache}: not an activation cache (no manifest.json)")
        activations = cache
    try:
        cfg = TrainConfig(
            architecture=architecture, d_sae=d_sae, k=k, d_in=d_in, n_steps=n_steps,
            normalize_activations=normalize, b_dec_init=b_dec_init, steps=steps,
            batch_size=batch_size, lr=lr, adam_beta1=beta1, adam_beta2=beta2,
            lr_warmup_frac=warmup_frac, lr_decay_frac=decay_frac, lr_decay=lr_decay,
            seed=seed, penalty_coeff=penalty_coeff, target_l0=target_l0,
            threshold_lr_factor=threshold_lr_factor,
            dead_tokens=dead_tokens, aux_k=aux_k, aux_coeff=aux_coeff,
            skip_nonfinite=skip_nonfinite, activations=str(activations), out=str(out),
            resume=resume, log_every=log_every, checkpoint_every=checkpoint_every,
            device=device, autocast_bf16=bf16, progress=progress,
        )
    except ValueError as e:
        raise UserError(str(e)) from None
    try:
        source = open_source(activations, cfg.batch_size, cfg.seed,
                             skip_nonfinite=cfg.skip_nonfinite, progress=cfg.progress, key=key)
        n_bad = getattr(source, "n_nonfinite", 0)
        if n_bad:
            typer.echo(f"skipping {n_bad} rows holding NaN/Inf values", err=True)
        trainer = Trainer(cfg, source, sae_metadata=_metadata(activations))
        trainer.prepare()
    except (FileNotFoundError, ValueError) as e:
        raise UserError(str(e)) from None
    if trainer.resumed_from is not None:
        typer.echo(f"resuming from step {trainer.resumed_from}", err=True)
    trainer.fit()
    m = trainer.last_metrics or {}
    summary = ", ".join(
        f"{name} {m[name]:.4g}" for name in ("nmse", "l0", "dead_frac") if name in m)
    typer.echo(f"saved {cfg.architecture} SAE (d_sae {cfg.d_sae}) to {out}"
               + (f" [{summary}]" if summary else ""))


def _metadata(activations: Path) -> dict:
    """SAEConfig metadata for cfg.json: the cache's model, layer, site, context and identity."""
    if not (Path(activations) / "manifest.json").is_file():
        return {"dataset": str(activations)}
    from ..data.cache import ActivationCache

    c = ActivationCache(activations)
    m = c.manifest
    return {
        "dataset": c.identity(),
        "model_name": m.get("model"),
        "model_revision": m.get("model_revision"),
        "hook_layer": m.get("layer"),
        "hook_site": m.get("site"),
        "hook_name": m.get("hook_name"),
        "context_size": m.get("context_size"),
        "keep_bos": m.get("keep_bos"),
    }


def register(app: typer.Typer) -> None:
    """Add ``train`` to the ``abstopk`` app."""
    app.command("train")(train_command)
