"""``abstopk harvest``: run a model over a corpus and store one layer's activations."""

from __future__ import annotations

import typer

from . import UserError, field_help

__all__ = ["harvest_command", "register"]


def _h(name: str) -> str:
    from ..data.harvest import HarvestConfig

    return field_help(HarvestConfig, name)


def harvest_command(
    out: str = typer.Option(..., "--out", help=_h("out")),
    model: str = typer.Option("smollm2-135m", "--model", help=_h("model")),
    layer: str = typer.Option("9", "--layer", help=_h("layers")),
    site: str = typer.Option("resid_post", "--site", help=_h("site")),
    tokens: int = typer.Option(1_000_000, "--tokens", help=_h("tokens")),
    context_size: int = typer.Option(128, "--context-size", help=_h("context_size")),
    batch_size: int = typer.Option(16, "--batch-size", help=_h("batch_size")),
    dtype: str = typer.Option("float32", "--dtype", help=_h("dtype")),
    corpus: str = typer.Option("embedded", "--corpus", help=_h("corpus")),
    split: str = typer.Option("train", "--split", help=_h("split")),
    keep_bos: bool = typer.Option(False, "--keep-bos", help=_h("keep_bos")),
    device: str = typer.Option("cpu", "--device", help=_h("device")),
    model_dtype: str = typer.Option("float32", "--model-dtype", help=_h("model_dtype")),
    shard_rows: int = typer.Option(65536, "--shard-rows", help=_h("shard_rows")),
    resume: bool = typer.Option(True, "--resume/--no-resume", help=_h("resume")),
    progress: bool = typer.Option(True, "--progress/--no-progress", help=_h("progress")),
) -> None:
    """Harvest activations of --model at --layer into the cache folder --out (resumable)."""
    from ..data.harvest import HarvestConfig, harvest, parse_layers

    try:
        cfg = HarvestConfig(
            model=model, layers=parse_layers(layer), site=site, tokens=tokens,
            context_size=context_size, batch_size=batch_size, dtype=dtype, out=out,
            corpus=corpus, split=split, keep_bos=keep_bos, device=device,
            model_dtype=model_dtype, shard_rows=shard_rows, resume=resume, progress=progress,
        )
    except ValueError as e:
        raise UserError(str(e)) from None
    harvest(cfg)


def register(app: typer.Typer) -> None:
    app.command("harvest")(harvest_command)
