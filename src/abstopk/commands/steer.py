"""``abstopk steer``: bidirectional concept steering — DiM, a prompt baseline and SAE latents
at signed strengths — or (``--task refusal``) the refusal table."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import typer

from ..steer.config import SteerConfig
from . import UserError
from .options import DEVICE_HELP, config_kwargs, config_options, resolve_device
from .outputs import check_output

__all__ = ["find_saes", "register", "steer_command"]

FILES = ("steer.json", "steer.md", "dose_response.png")


def find_saes(sae_dir: Path | None, architectures: list[str], layer: int) -> dict[str, Path]:
    """{architecture: folder} of saved SAEs under ``sae_dir`` (itself, its sub-folders and
    theirs) at ``layer``, in this project's layout or SAELens's (an exported signed SAE counts
    as its signed architecture); the first folder in sorted order wins for each architecture."""
    from ..sae import sae_summary

    found: dict[str, Path] = {}
    if sae_dir is None or not sae_dir.is_dir():
        return found
    cfgs = sorted([*sae_dir.glob("cfg.json"), *sae_dir.glob("*/cfg.json"),
                   *sae_dir.glob("*/*/cfg.json")])
    for c in cfgs:
        info = sae_summary(c.parent)
        if info is None:
            continue
        arch = info["architecture"]
        if arch in architectures and arch not in found and info["layer"] == layer:
            found[arch] = c.parent
    return found


def _train_missing(missing: list[str], cache: Path, sae_dir: Path, *, d_sae: int, k: int,
                   steps: int, device: str) -> dict[str, Path]:
    """Train one SAE per missing architecture on ``cache`` into ``sae_dir/<arch>``."""
    from ..data.open import open_source
    from ..train.config import TrainConfig
    from ..train.trainer import Trainer
    from .train import _metadata

    out = {}
    for arch in missing:
        folder = sae_dir / arch
        check_output(folder, what="a trained SAE", finished=("sae_weights.safetensors",),
                     inputs=[cache])
        extra: dict[str, Any] = ({"k": k} if arch in ("topk", "abstopk", "batchtopk",
                                                      "batchabstopk") else {"target_l0": k})
        try:
            cfg = TrainConfig(architecture=arch, d_sae=d_sae, steps=steps, batch_size=1024,
                              activations=str(cache), out=str(folder), device=device, **extra)
            source = open_source(cache, cfg.batch_size, cfg.seed)
            trainer = Trainer(cfg, source, sae_metadata=_metadata(cache))
            trainer.prepare()
        except (FileNotFoundError, ValueError) as e:
            raise UserError(str(e)) from None
        typer.echo(f"training a {arch} SAE (d_sae {d_sae}, {steps} steps) into {folder}",
                   err=True)
        trainer.fit()
        out[arch] = folder
    return out


def _provenance(model_info: dict, saes: dict[str, Path]) -> dict[str, Any]:
    import platform
    import subprocess

    import torch

    cpu = platform.processor() or ""
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True,
                                   check=False).stdout.splitlines():
            if line.startswith("Model name:"):
                cpu = line.split(":", 1)[1].strip()
    except OSError:
        pass
    return {"model": f"{model_info.get('ref')} ({model_info.get('source')}, revision "
                     f"{str(model_info.get('revision'))[:16]})",
            "machine": f"{cpu}, {torch.get_num_threads()} torch thread(s), "
                       f"{torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'cpu'}",
            "saes": {a: str(p) for a, p in saes.items()}}


@config_options(SteerConfig)
def steer_command(
    out: Path = typer.Option(..., "--out", help="Output folder: steer.json, steer.md, "
                             "dose_response.png."),
    task: str = typer.Option("concepts", help="concepts (the axes) or refusal."),
    model: str = typer.Option("smollm2-135m", help="Model reference (embedded, .gguf, local "
                              "folder or hub id in the HF cache)."),
    sae_dir: Path | None = typer.Option(
        None, "--sae-dir", help="Folder of saved SAEs (searched two levels deep) at the "
        "steering layer; missing ones are trained into it from --train-cache."),
    train_cache: Path | None = typer.Option(
        None, "--train-cache", help="Activation cache at the steering layer to train missing "
        "SAEs on."),
    train_steps: int = typer.Option(2000, help="Steps (× 1024 tokens) of a missing SAE."),
    train_d_sae: int = typer.Option(4608, help="Latents of a missing SAE."),
    train_k: int = typer.Option(32, help="k (TopK family) or target L0 of a missing SAE."),
    mc_cache: Path | None = typer.Option(
        None, "--mc-cache", help="Cache folder whose mc/ holds the multiple-choice tasks "
        "(default: $ABSTOPK_CACHE or ~/.cache/abstopk; `abstopk data fetch bigbench`)."),
    device: str = typer.Option("cpu", help=f"Torch device. {DEVICE_HELP}"),
    force: bool = typer.Option(False, "--force", help="Replace a finished result in --out."),
    **fields: Any,
) -> None:
    """Steer the model along concept axes with DiM, a prompt, and SAE latents (one signed
    AbsTopK latent vs a pair for non-negative SAEs); choose on dev, report test."""
    from rich.console import Console

    from ..errors import SteeringError
    from ..files import atomic_write_bytes, atomic_write_json
    from ..lm import load_model
    from ..sae import load_sae

    device = resolve_device(device)
    if task not in ("concepts", "refusal"):
        raise UserError(f"unknown task {task!r}; choose concepts or refusal")
    out = check_output(out, what="a steering result", finished=("steer.json", "refusal.json"),
                       inputs=[sae_dir, train_cache], force=force)
    try:
        cfg = SteerConfig(**config_kwargs(SteerConfig, fields))
    except (SteeringError, ValueError) as e:
        raise UserError(str(e)) from None
    console = Console(stderr=True)
    paths = find_saes(sae_dir, cfg.sae_methods, cfg.layer)
    missing = [a for a in cfg.sae_methods if a not in paths]
    if missing:
        if train_cache is None or sae_dir is None:
            raise SteeringError(f"no saved {', '.join(missing)} SAE at layer {cfg.layer}"
                                + (f" in {sae_dir}" if sae_dir else "")
                                + " and no activation cache to train one")
        paths.update(_train_missing(missing, train_cache, sae_dir, d_sae=train_d_sae,
                                    k=train_k, steps=train_steps, device=device))
    t0 = time.time()
    lm, tok, info = load_model(model, device=device)
    try:
        saes = {a: load_sae(p, device=device) for a, p in paths.items()}
    except (OSError, ValueError) as e:
        raise UserError(f"cannot read an SAE: {e}") from None
    prov = _provenance(info.as_dict(), paths)
    if task == "refusal":
        from ..report.steer_report import refusal_markdown
        from ..steer.refusal import RefusalConfig, run_refusal

        rc = RefusalConfig(seed=cfg.seed, max_new_tokens=cfg.max_new_tokens,
                           n_eval=cfg.n_prompts * 3)
        res = run_refusal(lm, tok, rc, saes, log=console.print)
        prov["wall_seconds"] = round(time.time() - t0, 1)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out / "refusal.json", {**res, "provenance": prov})
        md = refusal_markdown(res, provenance=prov)
        atomic_write_bytes(out / "refusal.md", md.encode())
        Console().print(md)
        return
    res = run_steer(lm, tok, cfg, saes, progress=True, log=console.print,
                    mc_cache=str(mc_cache) if mc_cache else None)
    prov["wall_seconds"] = round(time.time() - t0, 1)
    import sys

    command = "abstopk " + " ".join(sys.argv[1:]) if sys.argv and "steer" in sys.argv else ""
    _write_outputs(out, res, command, prov)
    Console().print(f"wrote {out} in {prov['wall_seconds']} s")


def _write_outputs(out: Path, res: dict, command: str, prov: dict) -> dict:
    from rich.console import Console

    from ..files import atomic_write_bytes, atomic_write_json
    from ..report.steer_report import dose_response_plot, steer_markdown, steer_summary_rows
    from ..report.tables import rich_table
    from ..steer.summary import summarize

    summary = summarize(res)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "steer.json", {**res, "summary": summary, "provenance": prov})
    atomic_write_bytes(out / "steer.md", steer_markdown(res, summary, command=command,
                                                        provenance=prov).encode())
    dose_response_plot(summary, out / "dose_response.png")
    header, rows = steer_summary_rows(summary)
    Console().print(rich_table(header, rows, left_columns=3))
    for s in summary["symmetry"]:
        Console().print(f"{s['axis']:>10} {s['method']:>9}: ρ(strength, concept) "
                        f"{s['spearman'] if s['spearman'] is None else round(s['spearman'], 2)}"
                        f", latents {s['n_latents']}, both ways {'yes' if s['both_ways'] else 'no'}")
    return summary


def steer_merge_command(
    runs: list[Path] = typer.Argument(..., help="Output folders of `abstopk steer` runs with "
                                      "the same settings (their axes and methods may differ)."),
    out: Path = typer.Option(..., "--out", help="Output folder: steer.json, steer.md, "
                             "dose_response.png."),
    force: bool = typer.Option(False, "--force", help="Replace a finished result in --out."),
) -> None:
    """Merge steering runs that differ only in axes and methods (e.g. one run per axis, or an
    SAE trained later run with `none` and itself) into one table."""
    import json

    from ..steer.summary import merge_results

    out = check_output(out, what="a steering result", finished=("steer.json",), inputs=runs,
                       force=force)
    loaded = []
    for r in runs:
        f = r / "steer.json"
        if not f.is_file():
            raise UserError(f"{f} not found: not a finished steering run")
        loaded.append(json.loads(f.read_text()))
    try:
        res = merge_results(*loaded)
    except ValueError as e:
        raise UserError(str(e)) from None
    prov = dict(loaded[0].get("provenance") or {})
    prov["merged_from"] = [str(r) for r in runs]
    prov["wall_seconds"] = [x.get("provenance", {}).get("wall_seconds") for x in loaded]
    saes: dict[str, str] = {}
    for x in loaded:
        saes.update(x.get("provenance", {}).get("saes") or {})
    prov["saes"] = saes
    _write_outputs(out, res, "abstopk steer-merge " + " ".join(str(r) for r in runs), prov)
    typer.echo(f"wrote {out}")


def run_steer(*args, **kwargs):
    from ..steer.run import run_steer as _run

    return _run(*args, **kwargs)


def register(app: typer.Typer) -> None:
    app.command("steer")(steer_command)
    app.command("steer-merge")(steer_merge_command)
