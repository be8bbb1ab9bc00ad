"""``abstopk eval``: reconstruction, loss recovered and probing tasks of a saved SAE."""

from __future__ import annotations

from pathlib import Path

import typer

from . import UserError
from .options import DEVICE_HELP, resolve_device
from .outputs import check_output_file


def eval_cmd(
    sae: Path = typer.Option(..., "--sae", help="Saved SAE folder (cfg.json + sae_weights.safetensors)."),
    model: str | None = typer.Option(None, help="Model reference (default: the SAE's model_name)."),
    layer: int | None = typer.Option(None, help="Block index (default: the SAE's hook_layer)."),
    site: str | None = typer.Option(None, help="Hook site (default: the SAE's hook_site)."),
    context_size: int | None = typer.Option(None, help="Context length (default: the SAE's)."),
    cache: Path | None = typer.Option(
        None, help="Activation cache (or .safetensors/.npy matrix) for the reconstruction "
        "metrics instead of harvesting held-out text."),
    tokens: int = typer.Option(65536, help="Tokens (activation rows) for the reconstruction metrics; 0 skips."),
    contexts: int = typer.Option(
        64, help="Held-out contexts for loss recovered / KL (zero and mean ablation, 95 % "
        "bootstrap intervals over contexts); 0 skips."),
    batch_size: int = typer.Option(8, help="Contexts per LM forward."),
    device: str = typer.Option("cpu", help=f"Device: cpu, cuda, cuda:1, ... {DEVICE_HELP}"),
    source: str = typer.Option("embedded", help="Text source whose held-out split is used."),
    tasks: str | None = typer.Option(None, help="Comma-separated probing tasks to run."),
    task_examples: int | None = typer.Option(
        None, help="Examples per probing task (default: each task's own)."),
    splice_bos: bool | None = typer.Option(
        None, "--splice-bos/--no-splice-bos",
        help="Also splice/evaluate BOS and pad positions (default: as the SAE's training "
        "cache did, keep_bos; else no)."),
    dense_threshold: float = typer.Option(0.1, help="A latent firing on more than this fraction of tokens is dense."),
    min_position: int = typer.Option(
        0, "--min-position", min=0,
        help="Leave rows at context positions below this out of the reconstruction metrics "
        "(1 drops each context's first token, the attention sink of mid layers); a cache "
        "needs per-row positions. Loss recovered keeps those positions' clean activation in "
        "its spliced and ablated runs."),
    json_out: Path | None = typer.Option(
        None, "--json", "--out", help="Write the result as one JSON object to this file."),
    force: bool = typer.Option(False, "--force", help="Replace an existing --json file."),
) -> None:
    """Evaluate an SAE: reconstruction (MSE, NMSE, explained variance, L0, dead/dense latents,
    sign statistics), loss recovered (zero and mean ablation) and KL when spliced into the LM,
    and probing tasks."""
    from rich.console import Console

    from .. import sae as sae_mod
    from ..eval.run import evaluate_sae, json_safe
    from ..files import atomic_write_json
    from ..report.eval_table import render_table

    device = resolve_device(device)
    check_output_file(json_out, what="an evaluation result", force=force,
                      inputs=[sae / "cfg.json", sae / "sae_weights.safetensors"])
    try:
        sae_obj = sae_mod.SAE.load(sae)
    except (FileNotFoundError, ValueError) as e:
        raise UserError(str(e)) from None
    if cache is not None and not cache.exists():
        raise UserError(f"{cache} does not exist")
    task_list = [t.strip() for t in tasks.split(",") if t.strip()] if tasks else None
    try:
        result = evaluate_sae(
            sae_obj, model=model, layer=layer, site=site, context_size=context_size,
            cache=cache, tokens=tokens, contexts=contexts, batch_size=batch_size,
            device=device, source=source, tasks=task_list, task_examples=task_examples,
            splice_bos=splice_bos,
            dense_threshold=dense_threshold, progress=True, min_position=min_position)
    except (ValueError, FileNotFoundError) as e:
        raise UserError(str(e)) from None
    result["sae"] = str(sae)
    Console().print(render_table(result))
    if "warning" in result:
        Console(stderr=True).print(f"warning: {result['warning']}")
    if json_out is not None:
        atomic_write_json(json_out, json_safe(result))
        Console().print(f"wrote {json_out}")


def register(app: typer.Typer) -> None:
    app.command("eval")(eval_cmd)
