"""``abstopk train``: train an SAE on an activation matrix or an activation cache.

Data parallel: under torchrun (``torchrun --nproc-per-node N -m abstopk.cli train …``) every
process trains as one rank (:mod:`abstopk.train.distributed`); ``--nproc N`` (N > 1) starts
that torchrun itself on this machine with the same options. ``--nproc 1`` trains here.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import typer

from ..experiments.checkpoint_eval import CheckpointEvalConfig, checkpoint_evaluator
from ..train.config import TrainConfig
from ..train.distributed import DistConfig
from . import UserError, field_help
from .options import config_kwargs, config_options
from .outputs import check_output

__all__ = ["register", "train_command"]


#: files of a training run in its out folder (removed by --force before a fresh run)
RUN_FILES = ("cfg.json", "sae_weights.safetensors", "train_config.json", "metrics.jsonl",
             "checkpoint")


@config_options(TrainConfig, DistConfig, CheckpointEvalConfig)
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
    from ..train.distributed import DistContext, resume_statement, under_torchrun
    from ..train.trainer import Trainer

    if (activations is None) == (cache is None):
        raise UserError("give exactly one of --activations FILE and --cache FOLDER")
    if cache is not None:
        if not (cache / "manifest.json").is_file():
            raise UserError(f"{cache}: not an activation cache (no manifest.json)")
        activations = cache
    if force and fields["resume"]:
        raise UserError("give at most one of --force (start over) and --resume (continue)")
    try:
        cfg = TrainConfig(**config_kwargs(TrainConfig, fields, activations=str(activations),
                                          out=str(out)))
        dcfg = DistConfig(**config_kwargs(DistConfig, fields))
        ecfg = CheckpointEvalConfig(**config_kwargs(CheckpointEvalConfig, fields))
    except ValueError as e:
        raise UserError(str(e)) from None
    torchrun = under_torchrun()
    if torchrun and dcfg.nproc > 1:
        raise UserError("already running under torchrun: its --nproc-per-node sets the number "
                        "of processes, not --nproc")
    ctx = DistContext.from_env(dcfg, cfg.device) if torchrun else None
    main = ctx is None or ctx.is_main
    check_output(out, what="a trained SAE", finished=("sae_weights.safetensors",),
                 inputs=[activations], force=force, resume=fields["resume"])
    if ctx is not None:
        ctx.barrier()  # every rank checked --out before rank 0 changes it
    if force and main:
        _remove_run(out)
    if ctx is not None and force:
        ctx.barrier()  # the old run is gone before any rank looks at --out again
    if dcfg.nproc > 1:
        _launch_torchrun(dcfg, cfg, ecfg, activations, cache is not None, out, key)
        return
    try:
        source = open_source(activations, cfg.batch_size, cfg.seed,
                             skip_nonfinite=cfg.skip_nonfinite, progress=cfg.progress, key=key,
                             min_position=cfg.min_position)
        n_bad = getattr(source, "n_nonfinite", 0)
        if n_bad:
            typer.echo(f"skipping {n_bad} rows holding NaN/Inf values", err=True)
        hook = checkpoint_evaluator(ecfg, cfg.device) if main else None
        trainer = Trainer(cfg, source, sae_metadata=_metadata(activations, cfg.min_position),
                          dist=ctx,
                          on_checkpoint=hook)
        with ctx.errors() if ctx is not None else contextlib.nullcontext():
            trainer.prepare()
    except NonFiniteError as e:
        raise UserError(f"{e.detail} (use --skip-nonfinite to drop them)") from None
    except (FileNotFoundError, ValueError) as e:
        raise UserError(str(e)) from None
    if trainer.resumed_from is not None and main:
        typer.echo(resume_statement(trainer.resumed_from, trainer.resumed_world_size or 1,
                                    1 if ctx is None else ctx.world_size), err=True)
    try:
        with ctx.errors() if ctx is not None else contextlib.nullcontext():
            trainer.fit()
    except NonFiniteError as e:
        raise UserError(f"{e.detail} (use --skip-nonfinite to drop them)") from None
    if ctx is not None:
        ctx.close()
        if not main:
            return
    m = trainer.last_metrics or {}
    summary = ", ".join(
        f"{name} {m[name]:.4g}" for name in ("fvu", "l0", "dead_frac") if name in m)
    typer.echo(f"saved {cfg.architecture} SAE (d_sae {cfg.d_sae}) to {out}"
               + (f" [{summary}]" if summary else ""))


def _launch_torchrun(dcfg: DistConfig, cfg: TrainConfig, ecfg: CheckpointEvalConfig,
                     data: Path, is_cache: bool, out: Path, key: str | None) -> None:
    """Run this training as ``torchrun --standalone --nproc-per-node N -m abstopk.cli train``
    with the same options (rebuilt from the configs); exit with torchrun's status."""
    import os
    import subprocess
    import sys

    args = ["--cache" if is_cache else "--activations", str(data), "--out", str(out)]
    if key is not None:
        args += ["--key", key]
    for obj, skip in ((cfg, {"out", "activations"}), (ecfg, set()),
                      (dcfg, {"nproc"})):
        args += _config_args(obj, skip)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc-per-node={dcfg.nproc}", "-m", "abstopk.cli", "train", *args]
    typer.echo(f"launching {dcfg.nproc} processes: torchrun --standalone "
               f"--nproc-per-node={dcfg.nproc} -m abstopk.cli train {' '.join(args)}", err=True)
    env = dict(os.environ)
    if cfg.device == "cpu" and "OMP_NUM_THREADS" not in env:  # the cores shared by the ranks
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // dcfg.nproc))
    code = subprocess.call(cmd, env=env)
    if code:
        raise typer.Exit(code)


def _config_args(obj: Any, skip: set[str]) -> list[str]:
    """Command-line options that rebuild the dataclass ``obj`` (fields at their default and
    those in ``skip`` left out)."""
    import dataclasses

    from .options import field_flags

    args: list[str] = []
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        if f.name in skip or v == f.default:
            continue
        flag = field_flags(f.name)[-1]
        if isinstance(v, bool):
            args.append(flag if v else f"--no-{flag[2:]}")
        elif v is not None:
            args.append(f"{flag}={v}")
    return args


def _remove_run(out: Path) -> None:
    """Delete the files of a previous run in ``out`` (only those a run writes)."""
    import shutil

    for name in RUN_FILES:
        p = out / name
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        elif p.exists() or p.is_symlink():
            p.unlink()


def _metadata(activations: Path, min_position: int = 0) -> dict:
    """SAEConfig metadata for cfg.json: the cache's model, layer, site, context and identity
    (with ``[positions>=p]`` when rows at context positions below p were skipped)."""
    if not (Path(activations) / "manifest.json").is_file():
        return {"dataset": str(activations)}
    from ..data.cache import ActivationCache
    from ..data.loader import with_min_position
    from ..lm.load import recorded_weight_format

    c = ActivationCache(activations)
    m = c.manifest
    return {
        "dataset": with_min_position(c.identity(), min_position),
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
