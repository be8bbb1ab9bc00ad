"""``abstopk experiment claim1``: the resumable claim-1 pipeline at scale (issue 10, item 7).

Steps and outputs: :mod:`abstopk.experiments.claim1`.
"""

from __future__ import annotations

from pathlib import Path

import typer

from . import UserError
from .outputs import check_output

__all__ = ["claim1_command", "register"]

experiment_app = typer.Typer(help="Long experiments composed of named, resumable steps.",
                             no_args_is_help=True)


@experiment_app.command("claim1")
def claim1_command(
    out: Path = typer.Option(..., "--out", help="Folder of the run (caches, SAEs, "
                             "evaluations, claim1.md/.csv, scaling.png, timings.jsonl)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out: finished "
                                "steps are skipped, a partial one continues from its last "
                                "checkpoint or shard."),
    steps: str = typer.Option("", "--steps", help="Comma-separated steps to run (default: all, "
                              "in order): harvest-1M, heldout, lr-sweep, scaling, harvest-10M, "
                              "k32-10M, scaling-10M, k-sweep, batch, jumprelu, summary."),
) -> None:
    """TopK vs AbsTopK (and BatchTopK, JumpReLU) at 0.1M-10M training tokens on layer 6 of
    the embedded model, each at its own best learning rate; see docs/results.md."""
    from ..experiments.claim1 import run_plan

    check_output(out, what="a claim-1 run", resume=resume,
                 finished=lambda p: any(p.iterdir()))
    try:
        run_plan(out, steps=[s.strip() for s in steps.split(",") if s.strip()] or None)
    except (ValueError, FileNotFoundError) as e:
        raise UserError(str(e)) from None


def register(app: typer.Typer) -> None:
    """Add ``abstopk experiment`` to the app."""
    app.add_typer(experiment_app, name="experiment")
