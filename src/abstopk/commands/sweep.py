"""``abstopk sweep``: train and evaluate SAEs over a sparsity grid (NMSE / loss recovered vs L0)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from ..experiments.sweep_config import SweepConfig
from . import UserError, field_help
from .options import config_kwargs, config_options
from .outputs import check_output

__all__ = ["register", "sweep_command"]


@config_options(SweepConfig)
def sweep_command(
    cache: Path | None = typer.Option(
        None, "--cache", help=field_help(SweepConfig, "cache") + " Omitted: harvest --tokens "
        "rows of --model at --layer from the embedded corpus into OUT/cache_L<layer>_<tokens> "
        "first (reused when complete)."),
    model: str = typer.Option("smollm2-135m", "--model",
                              help="Model to harvest with when --cache is omitted."),
    layer: int = typer.Option(9, "--layer", help="Block to harvest when --cache is omitted."),
    tokens: int = typer.Option(200_000, "--tokens",
                               help="Rows to harvest when --cache is omitted."),
    out: Path = typer.Option(..., "--out", help=field_help(SweepConfig, "out")),
    eval_cache: Path | None = typer.Option(None, "--eval-cache",
                                           help=field_help(SweepConfig, "eval_cache")),
    force: bool = typer.Option(False, "--force", help="Replace a finished sweep in --out."),
    **fields: Any,
) -> None:
    """Train one SAE per (architecture, k, seed) on --cache in one pass per seed, evaluate on
    held-out activations (+ loss recovered) and at inference-time k; write sweep.csv,
    sweep.json, sweep.png and sweep.md into --out and print mean ± std over seeds."""
    from ..experiments.sweep import run_sweep

    if cache is not None and not (cache / "manifest.json").is_file():
        raise UserError(f"{cache}: not an activation cache (no manifest.json)")
    if eval_cache is not None and not (eval_cache / "manifest.json").is_file():
        raise UserError(f"{eval_cache}: not an activation cache (no manifest.json)")
    check_output(out, what="a finished sweep", finished=("sweep.json",),
                 inputs=[cache, eval_cache], force=force)
    device = fields["device"]
    progress = fields["progress"]
    try:
        cfg = SweepConfig(**config_kwargs(
            SweepConfig, fields, cache=str(cache or out / f"cache_L{layer}_{tokens}"),
            out=str(out), eval_cache=str(eval_cache) if eval_cache else None))
    except ValueError as e:
        raise UserError(str(e)) from None
    loaded = None
    if cache is None:
        from ..data.harvest import HarvestConfig, harvest
        from ..lm.load import load_model

        try:
            hcfg = HarvestConfig(model=model, layers=[layer], tokens=tokens, out=cfg.cache,
                                 device=device, progress=progress)
        except ValueError as e:
            raise UserError(str(e)) from None
        loaded = load_model(model, device=device)
        harvest(hcfg, model=loaded[0], tokenizer=loaded[1], info=loaded[2])
    try:
        res = run_sweep(cfg, loaded=loaded)
    except (ValueError, FileNotFoundError) as e:
        raise UserError(str(e)) from None
    typer.echo(f"sweep done in {res['seconds']:.0f} s: " + ", ".join(
        f"{k} {v}" for k, v in res["files"].items()))


def register(app: typer.Typer) -> None:
    """Add ``abstopk sweep`` to the app."""
    app.command("sweep")(sweep_command)
