"""``abstopk train``: train an SAE on an activation matrix (or, later, an activation cache)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from ..train.config import TrainConfig
from . import UserError, field_help
from .options import config_kwargs, config_options
from .outputs import check_output

__all__ = ["register", "train_command"]


#: files of a training run in its out folder (removed by --force before a fresh run)
RUN_FILES = ("cfg.json", "sae_weights.safetensors", "train_config.json", "metrics.jsonl",
             "checkpoint")


@config_options(TrainConfig)
def train_command(
    activations: Path | None = typer.Option(
        None, "--activations", help="Activation matrix [N, d_in]: a .npy or .safetensors file "
        "(memory-mapped), or an activation cache folder (manifest.json)."),
    cache: Path | None = typer.Option(
        None, "--cache", help="Activation cache folder written by `abstopk harvest` "
        "(same as --activations FOLDER)."),
    out: Path = typer.Option(..., "--out", help=field_help(TrainConfig, "out")),
    key: str | None = typer.Option(
        None, "--key", help="Name of the matrix inside a .safetensors file holding several."),
    force: bool = typer.Option(
        False, "--force", help="Replace a run already in --out (its files are deleted first)."),
    **fields: Any,
) -> None:
    """Train an SAE on activations; writes cfg.json + sae_weights.safetensors into --out."""
    from ..data.open import open_source
    from ..errors import NonFiniteError
    from ..train.trainer import Trainer

    if (activations is None) == (cache is None):
        raise UserError("give exactly one of --activations FILE and --cache FOLDER")
    if cache is not None:
        if not (cache / "manifest.json").is_file():
            raise UserError(f"{cache}: not an activation cache (no manifest.json)")
        activations = cache
    if force and fields["resume"]:
        raise UserError("give at most one of --force (start over) and --resume (continue)")
    check_output(out, what="a trained SAE", finished=("sae_weights.safetensors",),
                 inputs=[activations], force=force, resume=fields["resume"])
    try:
        cfg = TrainConfig(**config_kwargs(TrainConfig, fields, activations=str(activations),
                                          out=str(out)))
    except ValueError as e:
        raise UserError(str(e)) from None
    if force:
        _remove_run(out)
    try:
        source = open_source(activations, cfg.batch_size, cfg.seed,
                             skip_nonfinite=cfg.skip_nonfinite, progress=cfg.progress, key=key)
        n_bad = getattr(source, "n_nonfinite", 0)
        if n_bad:
            typer.echo(f"skipping {n_bad} rows holding NaN/Inf values", err=True)
        trainer = Trainer(cfg, source, sae_metadata=_metadata(activations))
        trainer.prepare()
    except NonFiniteError as e:
        raise UserError(f"{e.detail} (use --skip-nonfinite to drop them)") from None
    except (FileNotFoundError, ValueError) as e:
        raise UserError(str(e)) from None
    if trainer.resumed_from is not None:
        typer.echo(f"resuming from step {trainer.resumed_from}", err=True)
    try:
        trainer.fit()
    except NonFiniteError as e:
        raise UserError(f"{e.detail} (use --skip-nonfinite to drop them)") from None
    m = trainer.last_metrics or {}
    summary = ", ".join(
        f"{name} {m[name]:.4g}" for name in ("fvu", "l0", "dead_frac") if name in m)
    typer.echo(f"saved {cfg.architecture} SAE (d_sae {cfg.d_sae}) to {out}"
               + (f" [{summary}]" if summary else ""))


def _remove_run(out: Path) -> None:
    """Delete the files of a previous run in ``out`` (only those a run writes)."""
    import shutil

    for name in RUN_FILES:
        p = out / name
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        elif p.exists() or p.is_symlink():
            p.unlink()


def _metadata(activations: Path) -> dict:
    """SAEConfig metadata for cfg.json: the cache's model, layer, site, context and identity."""
    if not (Path(activations) / "manifest.json").is_file():
        return {"dataset": str(activations)}
    from ..data.cache import ActivationCache
    from ..lm.load import recorded_weight_format

    c = ActivationCache(activations)
    m = c.manifest
    return {
        "dataset": c.identity(),
        "model_name": m.get("model"),
        "model_revision": m.get("model_revision"),
        "model_weight_format": m.get("model_weight_format")
        or recorded_weight_format(m.get("model"), m.get("model_revision")),
        "model_dtype": m.get("model_dtype"),
        "hook_layer": m.get("layer"),
        "hook_site": m.get("site"),
        "hook_name": m.get("hook_name"),
        "context_size": m.get("context_size"),
        "keep_bos": m.get("keep_bos"),
    }


def register(app: typer.Typer) -> None:
    """Add ``train`` to the ``abstopk`` app."""
    app.command("train")(train_command)
