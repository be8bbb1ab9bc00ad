"""``abstopk harvest``: run a model over a corpus and store one layer's activations."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import typer

from ..data.harvest import HarvestConfig
from ..errors import OutputExistsError
from . import UserError, field_help
from .options import config_kwargs, config_options, field_flags
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
    nproc: int = typer.Option(
        1, "--nproc", min=1, help="Processes to split the harvest over: launches torchrun "
        "--standalone --nproc-per-node N (batch b goes to process b mod N; one cache, the "
        "same rows as one process). Under torchrun already: ignored."),
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
    if nproc > 1 and int(os.environ.get("WORLD_SIZE", "1") or 1) <= 1:
        if not force:
            _refuse_other_size(out, cfg.tokens)
        _launch_torchrun(cfg, nproc, force)
        return
    try:
        harvest(cfg)
    except OutputExistsError as e:
        raise OutputExistsError(f"{e}; choose another --out, or --force to start it over") \
            from None


def _cli_args(cfg: HarvestConfig) -> list[str]:
    """``cfg`` as ``abstopk harvest`` arguments (the inverse of the generated options)."""
    args: list[str] = []
    for f in dataclasses.fields(HarvestConfig):
        v = getattr(cfg, f.name)
        flag = field_flags(f.name)[-1]
        if isinstance(v, bool):
            args.append(flag if v else "--no-" + flag[2:])
        elif isinstance(v, (list, tuple)):
            args += [flag, ",".join(map(str, v))]
        else:
            args += [flag, str(v)]
    return args


def _refuse_other_size(out: Path, tokens: int) -> None:
    """Before launching processes: a complete cache of another row count is refused here,
    once, rather than by every rank."""
    import json

    for mp in (out / "manifest.json", *sorted(out.glob("layer_*/manifest.json"))):
        try:
            m = json.loads(mp.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(m, dict) and m.get("complete"):
            done = int(m.get("total_rows", -1))
            if tokens not in (done, int(m.get("requested_tokens", -1))):
                raise OutputExistsError(f"{mp.parent} is a complete cache of {done} rows, not "
                                        f"the {tokens} requested; choose another --out, or "
                                        f"--force to start it over")


def _launch_torchrun(cfg: HarvestConfig, nproc: int, force: bool) -> None:
    """Run this harvest as ``torchrun --standalone --nproc-per-node nproc -m abstopk.cli
    harvest …`` (same settings) and wait for it; its exit status becomes ours."""
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc-per-node={nproc}", "-m", "abstopk.cli", "harvest", *_cli_args(cfg)]
    if force:
        cmd.append("--force")
    rc = subprocess.call(cmd)
    if rc != 0:
        raise UserError(f"the sharded harvest over {nproc} processes failed (torchrun exit "
                        f"status {rc}; the ranks' errors are above); once fixed, the same "
                        f"command resumes it")


def register(app: typer.Typer) -> None:
    app.command("harvest")(harvest_command)
