"""``abstopk experiment claim1``: the resumable claim-1 pipeline at scale (issue 10, item 7),
on layer 6 (the whole plan) or another layer (the deciding subset); ``abstopk experiment
claim1-harvest``: the train caches of several layers' runs continued in one pass;
``abstopk experiment claim1-layers``: the runs of several layers side by side.

Steps and outputs: :mod:`abstopk.experiments.claim1`.
"""

from __future__ import annotations

from pathlib import Path

import typer

from . import UserError
from .outputs import check_output, check_output_file

__all__ = ["claim1_command", "claim1_harvest_command", "claim1_layers_command", "register"]

experiment_app = typer.Typer(help="Long experiments composed of named, resumable steps.",
                             no_args_is_help=True)


@experiment_app.command("claim1")
def claim1_command(
    out: Path = typer.Option(..., "--out", help="Folder of the run (caches, SAEs, "
                             "evaluations, claim1.md/.csv, scaling.png, frontier.png, timings.jsonl)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out: finished "
                                "steps are skipped, a partial one continues from its last "
                                "checkpoint or shard."),
    steps: str = typer.Option("", "--steps", help="Comma-separated steps to run (default: all "
                              "of the layer's plan, in order): harvest-1M, heldout, lr-sweep, "
                              "scaling, ablation, harvest-10M, k32-10M, lr-10M, scaling-10M, "
                              "nosink-10M, k-sweep, batch, jumprelu, summary (k-sweep, batch "
                              "and jumprelu on layer 6 only)."),
    layer: int = typer.Option(6, "--layer", min=0, help="Block whose resid_post is harvested. "
                              "Layer 6 runs the whole plan; any other layer the deciding subset: "
                              "harvest-1M, heldout, lr-sweep (the same 5 learning rates), "
                              "scaling at 0.1M and 1M x seeds 0-2, ablation, harvest-10M, "
                              "k32-10M (TopK vs AbsTopK, seed 0), lr-10M, scaling-10M (seed 1 "
                              "only), nosink-10M (seeds 0-1), summary; same sizes, so the layers compare. "
                              "One --out per layer."),
    precision: str | None = typer.Option(
        None, "--precision", help="Dtype of the LM forward (harvest, loss recovered, KL) and of "
        "the SAEs' encoder GEMM in training: float32 (a new run's default; the published runs), "
        "bfloat16, or auto (bfloat16 where the CPU has bf16 units: AMX / AVX512-BF16; 2.8x "
        "faster harvest, 1.6x faster training on an AMX Xeon). Recorded in plan.json; a "
        "continuation keeps the run's own (omit the option), another is refused."),
) -> None:
    """TopK vs AbsTopK (and BatchTopK, JumpReLU) at 0.1M-10M training tokens on one layer
    (6 by default) of the embedded model, each at its own best learning rate; see
    docs/results.md."""
    from ..experiments.claim1 import run_plan

    check_output(out, what="a claim-1 run", resume=resume,
                 finished=lambda p: any(p.iterdir()))
    try:
        run_plan(out, steps=[s.strip() for s in steps.split(",") if s.strip()] or None,
                 layer=layer, precision=precision)
    except (ValueError, FileNotFoundError) as e:
        raise UserError(str(e)) from None


@experiment_app.command("claim1-harvest")
def claim1_harvest_command(
    runs: list[Path] = typer.Argument(..., help="Claim-1 run folders of different layers, each "
                                      "past its harvest-1M step (their own claim1 processes "
                                      "stopped)."),
) -> None:
    """Continue the train caches of several claim-1 runs to the plan's 10.5M rows in one
    forward pass per batch (the deepest layer's cost; the shallower layers' rows come free).

    A cache behind the others is first harvested alone to their row count. Each cache ends
    as its own harvest-10M step would leave it, so the runs then continue with --resume.
    Resumable: run the same command again after a kill."""
    from ..experiments.claim1_joint import joint_harvest

    try:
        joint_harvest(runs, log=lambda s: typer.echo(s, err=True))
    except (ValueError, FileNotFoundError) as e:
        raise UserError(str(e)) from None


@experiment_app.command("claim1-layers")
def claim1_layers_command(
    runs: list[Path] = typer.Argument(..., help="Claim-1 run folders (or their claim1.csv), "
                                      "one per layer."),
    plot: Path | None = typer.Option(None, "--plot", help="Also write the scaling plot (PNG), "
                                     "one line per layer: the AbsTopK - TopK gap in nmse (% of "
                                     "TopK's) and in loss recovered against training tokens."),
    force: bool = typer.Option(False, "--force", help="Replace an existing --plot file."),
) -> None:
    """Print the claim-1 runs of several layers side by side as Markdown.

    Columns: layer, architecture, k, tokens, seeds, nmse, fvu, L0, loss recovered (zero and
    mean ablation), KL (mean ± sd over seeds); then the AbsTopK - TopK gap per layer and token
    count."""
    from ..report.claim1_layers import layers_markdown, layers_plot

    md = layers_markdown(runs)
    if plot is not None:
        layers_plot(runs, check_output_file(plot, what="a scaling plot", inputs=runs,
                                            force=force))
    typer.echo(md, nl=False)


def register(app: typer.Typer) -> None:
    """Add ``abstopk experiment`` to the app."""
    app.add_typer(experiment_app, name="experiment")
