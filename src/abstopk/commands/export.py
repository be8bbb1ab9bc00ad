"""``abstopk export``: write a saved SAE in another library's format (SAELens)."""

from __future__ import annotations

from pathlib import Path

import typer

from . import UserError

FORMATS = ("saelens",)


def export_cmd(
    sae_dir: Path = typer.Argument(..., help="Saved SAE folder (cfg.json + sae_weights.safetensors)."),
    out: Path = typer.Argument(..., help="Output folder (created; its cfg.json and weights are replaced)."),
    format: str = typer.Option("saelens", "--format", "-f", help="Target format: saelens."),
    model_name: str | None = typer.Option(
        None, help="Model name to record for SAELens/SAEBench (default: the SAE's model_name)."
    ),
    hook_name: str | None = typer.Option(
        None, help="TransformerLens hook name to record (default: blocks.L.hook_SITE)."
    ),
) -> None:
    """Export an SAE. AbsTopK becomes an exactly equivalent ReLU-TopK of twice the width."""
    from rich.console import Console

    from ..export import export_saelens
    from ..sae import SAE

    if format not in FORMATS:
        raise UserError(f"unknown format {format!r}; known: {', '.join(FORMATS)}")
    try:
        sae = SAE.load(sae_dir)
    except (FileNotFoundError, ValueError) as e:
        raise UserError(str(e)) from None
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} exists and is not a folder")
    try:
        path = export_saelens(sae, out, model_name=model_name, hook_name=hook_name)
    except ValueError as e:
        raise UserError(str(e)) from None
    import json

    cfg = json.loads((path / "cfg.json").read_text())
    Console().print(
        f"wrote {path}: SAELens {cfg['architecture']} with d_sae = {cfg['d_sae']} "
        f"(from abstopk {sae.cfg.architecture}, d_sae = {sae.cfg.d_sae})"
    )


def register(app: typer.Typer) -> None:
    app.command("export")(export_cmd)
