"""``abstopk harvest``: run a model over a corpus and store one layer's activations."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from ..data.harvest import HarvestConfig
from ..errors import OutputExistsError
from . import UserError, field_help
from .options import config_kwargs, config_options
from .outputs import check_output

__all__ = ["cache_is_complete", "harvest_command", "register"]


def cache_is_complete(out: Path) -> bool:
    """True when ``out`` (or one of its ``layer_L`` folders) holds a complete cache."""
    import json

    for mp in (out / "manifest.json", *sorted(out.glob("layer_*/manifest.json"))):
        try:
            if json.loads(mp.read_text()).get("complete"):
                return True
        except (OSError, ValueError, AttributeError):
            continue
    return False


@config_options(HarvestConfig)
def harvest_command(
    out: Path = typer.Option(..., "--out", help=field_help(HarvestConfig, "out")),
    force: bool = typer.Option(
        False, "--force", help="Start over, replacing any cache in --out (also a complete one)."),
    **fields: Any,
) -> None:
    """Harvest activations of --model at --layer into the cache folder --out (resumable)."""
    from ..data.harvest import harvest

    corpus = Path(fields["corpus"])
    check_output(out, what="a complete activation cache", finished=cache_is_complete,
                 inputs=[corpus if corpus.exists() else None], force=force,
                 resume=fields["resume"] and not force)
    if force:
        fields["resume"] = False
    try:
        cfg = HarvestConfig(**config_kwargs(HarvestConfig, fields, out=str(out)))
    except ValueError as e:
        raise UserError(str(e)) from None
    try:
        harvest(cfg)
    except OutputExistsError as e:
        raise OutputExistsError(f"{e}; choose another --out, or --force to start it over") \
            from None


def register(app: typer.Typer) -> None:
    app.command("harvest")(harvest_command)
