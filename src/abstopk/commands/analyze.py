"""``abstopk analyze``: per-latent statistics (the dashboard's data) and minimal pairs."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import typer

from . import UserError
from .options import config_kwargs, config_options
from .outputs import check_output, check_output_file

analyze_app = typer.Typer(help="Analyses of saved SAEs: per-latent statistics with "
                          "bidirectionality labels, minimal pairs.", no_args_is_help=True)


def _configs(fields: dict[str, Any]):
    from ..analysis.bidirectionality import BidirConfig
    from ..analysis.latent_stats import StatsConfig

    try:
        return (StatsConfig(**config_kwargs(StatsConfig, fields)),
                BidirConfig(**config_kwargs(BidirConfig, fields)))
    except ValueError as e:
        raise UserError(str(e)) from None


def _stats_options():
    from ..analysis.bidirectionality import BidirConfig
    from ..analysis.latent_stats.config import StatsConfig

    return config_options(StatsConfig, BidirConfig)


@analyze_app.command("latents")
@_stats_options()
def latents_cmd(
    sae: Path = typer.Option(..., "--sae", help="Saved SAE folder."),
    cache: Path = typer.Option(..., "--cache", help="Activation cache folder (with per-row "
                               "positions, cache format 2)."),
    out: Path = typer.Option(..., "--out", help="Stats folder to write (index.json + latents/)."),
    model: str | None = typer.Option(None, "--model", help="Model for the tokenizer and "
                                     "unembedding (default: the SAE's model_name)."),
    force: bool = typer.Option(False, "--force", help="Replace a stats folder already in --out."),
    **fields: Any,
) -> None:
    """Per-latent statistics in one pass: top ± contexts, quantile samples, signed histogram,
    frequencies per sign, ± logits, bidirectionality score and label."""
    from ..analysis.latent_stats import compute_and_write
    from ..report.latent_tables import render_bidir
    from ..report.tables import table_console

    check_output(out, what="latent statistics", finished=("index.json",), inputs=[sae, cache],
                 force=force)
    stats, bidir = _configs(fields)
    path = compute_and_write(sae, cache, out, model=model, force=force, bidir=bidir,
                             progress=True, **dataclasses.asdict(stats))
    import json

    ix = json.loads((path / "index.json").read_text())
    console = table_console()
    console.print(render_bidir([(str(sae), ix)]))
    console.print(f"wrote {path} ({ix['cache']['rows_read']:,} rows, "
                    f"{ix['seconds']['pass']:.0f} s pass)")


@analyze_app.command("pairs")
def pairs_cmd(
    sae: list[Path] = typer.Option(..., "--sae", help="Saved SAE folder (repeat to compare)."),
    model: str | None = typer.Option(None, "--model", help="Model to run the templates through "
                                     "(default: the SAE's model_name)."),
    json_out: Path | None = typer.Option(None, "--json", help="Write the results (with the "
                                         "latents per pair) to this JSON file."),
    force: bool = typer.Option(False, "--force", help="Replace an existing --json file."),
) -> None:
    """Minimal pairs: latents that flip sign (signed SAEs) or switch on/off (non-negative
    ones) between man/woman, good/bad, ...; coverage per SAE."""
    from ..analysis.minimal_pairs import analyze_sae
    from ..files import atomic_write_json
    from ..lm import load_model
    from ..report.latent_tables import render_pairs
    from ..report.tables import table_console
    from ..sae import SAE

    check_output_file(json_out, what="a results file", inputs=sae, force=force)
    saes = []
    for s in sae:
        try:
            saes.append(SAE.load(s))
        except (FileNotFoundError, ValueError) as e:
            raise UserError(str(e)) from None
    refs = {model or x.cfg.model_name for x in saes}
    if None in refs:
        raise UserError("an SAE records no model_name; name the model to run")
    loaded = {r: load_model(r)[:2] for r in refs}
    results = []
    for path, x in zip(sae, saes, strict=True):
        m, tok = loaded[model or x.cfg.model_name]
        results.append((str(path), analyze_sae(x, m, tok)))
    console = table_console()
    console.print(render_pairs(results))
    for name, r in results:
        if r["max_pairs_one_latent"] == 0:
            continue
        console.print(f"{name}: latent {r['best_latent']} covers "
                        f"{', '.join(r['best_latent_pairs'][:12])}")
    if json_out is not None:
        atomic_write_json(json_out, {name: r for name, r in results})


def register(app: typer.Typer) -> None:
    app.add_typer(analyze_app, name="analyze")
