"""``abstopk export``: write a saved SAE in another library's format (SAELens)."""

from __future__ import annotations

from pathlib import Path

import typer

from . import UserError
from .outputs import check_output

FORMATS = ("saelens",)

#: files whose presence marks a folder as a finished SAE (ours or an export)
SAE_FILES = ("cfg.json", "sae_weights.safetensors")


def _one(option: Path | None, positional: Path | None, flag: str) -> Path:
    """The path given as ``flag`` or positionally (exactly one of them)."""
    if option is not None and positional is not None and option != positional:
        raise UserError(f"give {flag} once (as {flag} or positionally), not both")
    path = option if option is not None else positional
    if path is None:
        raise UserError(f"missing {flag}")
    return path


def export_cmd(
    sae_arg: Path | None = typer.Argument(
        None, metavar="SAE", help="Saved SAE folder (same as --sae)."),
    out_arg: Path | None = typer.Argument(None, metavar="OUT", help="Output folder (same as --out)."),
    sae_opt: Path | None = typer.Option(
        None, "--sae", help="Saved SAE folder (cfg.json + sae_weights.safetensors)."),
    out_opt: Path | None = typer.Option(
        None, "--out", help="Output folder (created; never the SAE's own folder)."),
    format: str = typer.Option("saelens", "--format", "-f", help="Target format: saelens."),
    model_name: str | None = typer.Option(
        None, help="Model name to record for SAELens/SAEBench (default: the SAE's model_name)."
    ),
    hook_name: str | None = typer.Option(
        None, help="TransformerLens hook name to record (default: blocks.L.hook_SITE)."
    ),
    force: bool = typer.Option(
        False, "--force", help="Replace the cfg.json and weights of an SAE already in --out."),
    native_abstopk: bool = typer.Option(
        False, "--native-abstopk/--doubled-topk",
        help="AbsTopK as SAELens's own 'abstopk' architecture, same width (SAELens versions "
             "that register it, e.g. 6.54); default: a ReLU-TopK of twice the width, which "
             "every SAELens >= 6 loads. The two differ only in which latent exact ties at the "
             "k-th |u| keep (docs/export.md)."),
) -> None:
    """Export an SAE. AbsTopK becomes an exactly equivalent ReLU-TopK of twice the width
    (or, with --native-abstopk, SAELens's own AbsTopK)."""
    from rich.console import Console

    from ..export import export_saelens
    from ..sae import SAE

    sae_dir = _one(sae_opt, sae_arg, "--sae")
    out = _one(out_opt, out_arg, "--out")
    if format not in FORMATS:
        raise UserError(f"unknown format {format!r}; known: {', '.join(FORMATS)}")
    check_output(out, what="an SAE", finished=SAE_FILES, inputs=[sae_dir], force=force)
    try:
        sae = SAE.load(sae_dir)
    except (FileNotFoundError, ValueError) as e:
        raise UserError(str(e)) from None
    try:
        path = export_saelens(sae, out, model_name=model_name, hook_name=hook_name,
                              native_abstopk=native_abstopk)
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
