"""``abstopk sweep``: train and evaluate SAEs over a sparsity grid (NMSE / loss recovered vs L0)."""

from __future__ import annotations

from pathlib import Path

import typer

from . import UserError, field_help

__all__ = ["register", "sweep_command"]


def _h(name: str) -> str:
    from ..experiments.sweep_config import SweepConfig

    return field_help(SweepConfig, name)


def _ints(text: str, what: str) -> list[int]:
    try:
        return [int(x) for x in text.replace(" ", "").split(",") if x]
    except ValueError:
        raise UserError(f"{what}: expected integers separated by commas, got {text!r}") from None


def _floats(text: str, what: str) -> list[float]:
    try:
        return [float(x) for x in text.replace(" ", "").split(",") if x]
    except ValueError:
        raise UserError(f"{what}: expected numbers separated by commas, got {text!r}") from None


def sweep_command(
    cache: Path | None = typer.Option(
        None, "--cache", help=_h("cache") + " Omitted: harvest --tokens rows of --model at "
        "--layer from the embedded corpus into OUT/cache_L<layer>_<tokens> first (reused when "
        "complete)."),
    model: str = typer.Option("smollm2-135m", "--model",
                              help="Model to harvest with when --cache is omitted."),
    layer: int = typer.Option(9, "--layer", help="Block to harvest when --cache is omitted."),
    tokens: int = typer.Option(200_000, "--tokens",
                               help="Rows to harvest when --cache is omitted."),
    out: Path = typer.Option(..., "--out", help=_h("out")),
    architectures: str = typer.Option("topk,abstopk,jumprelu", "--architectures",
                                      help=_h("architectures")),
    k: str = typer.Option("8,16,32,64", "--k", help=_h("k")),
    jumprelu_targets: str | None = typer.Option(None, "--jumprelu-targets",
                                                help=_h("jumprelu_targets")),
    d_sae: int = typer.Option(2304, "--d-sae", help=_h("d_sae")),
    steps: int = typer.Option(1000, "--steps", help=_h("steps")),
    batch_size: int = typer.Option(2048, "--batch-size", help=_h("batch_size")),
    lr: float = typer.Option(4e-4, "--lr", help=_h("lr")),
    seeds: str = typer.Option("0,1,2", "--seeds", help=_h("seeds")),
    dead_tokens: int = typer.Option(1_000_000, "--dead-tokens", help=_h("dead_tokens")),
    jumprelu_init_threshold: float = typer.Option(1.0, "--jumprelu-init-threshold",
                                                  help=_h("jumprelu_init_threshold")),
    l0_controller_ki: float = typer.Option(0.02, "--l0-controller-ki",
                                           help=_h("l0_controller_ki")),
    eval_tokens: int = typer.Option(16384, "--eval-tokens", help=_h("eval_tokens")),
    eval_contexts: int = typer.Option(16, "--eval-contexts", help=_h("eval_contexts")),
    eval_cache: Path | None = typer.Option(None, "--eval-cache", help=_h("eval_cache")),
    inference_k: bool = typer.Option(True, "--inference-k/--no-inference-k",
                                     help=_h("inference_k")),
    inference_k_from: int | None = typer.Option(None, "--inference-k-from",
                                                help=_h("inference_k_from")),
    inference_k_loss: bool = typer.Option(False, "--inference-k-loss",
                                          help=_h("inference_k_loss")),
    device: str = typer.Option("cpu", "--device", help=_h("device")),
    progress: bool = typer.Option(True, "--progress/--no-progress", help=_h("progress")),
) -> None:
    """Train one SAE per (architecture, k, seed) on --cache in one pass per seed, evaluate on
    held-out activations (+ loss recovered) and at inference-time k; write sweep.csv,
    sweep.json, sweep.png and sweep.md into --out and print mean ± std over seeds."""
    from ..experiments.sweep import run_sweep
    from ..experiments.sweep_config import SweepConfig

    if cache is not None and not (cache / "manifest.json").is_file():
        raise UserError(f"{cache}: not an activation cache (no manifest.json)")
    if eval_cache is not None and not (eval_cache / "manifest.json").is_file():
        raise UserError(f"{eval_cache}: not an activation cache (no manifest.json)")
    try:
        cfg = SweepConfig(
            cache=str(cache or out / f"cache_L{layer}_{tokens}"), out=str(out),
            architectures=[a for a in architectures.replace(" ", "").split(",") if a],
            k=_ints(k, "--k"),
            jumprelu_targets=(_floats(jumprelu_targets, "--jumprelu-targets")
                              if jumprelu_targets else None),
            d_sae=d_sae, steps=steps, batch_size=batch_size, lr=lr,
            seeds=_ints(seeds, "--seeds"), dead_tokens=dead_tokens,
            jumprelu_init_threshold=jumprelu_init_threshold, l0_controller_ki=l0_controller_ki,
            eval_tokens=eval_tokens,
            eval_contexts=eval_contexts, eval_cache=str(eval_cache) if eval_cache else None,
            inference_k=inference_k, inference_k_from=inference_k_from,
            inference_k_loss=inference_k_loss, device=device, progress=progress,
        )
    except ValueError as e:
        raise UserError(str(e)) from None
    loaded = None
    if cache is None:
        from ..data.harvest import HarvestConfig, harvest
        from ..lm.load import load_model

        try:
            hcfg = HarvestConfig(model=model, layers=[layer], tokens=tokens, out=cfg.cache,
                                 device=device, progress=progress)
        except ValueError as e:
            raise UserError(str(e)) from None
        loaded = load_model(model, device=device)
        harvest(hcfg, model=loaded[0], tokenizer=loaded[1], info=loaded[2])
    try:
        res = run_sweep(cfg, loaded=loaded)
    except (ValueError, FileNotFoundError) as e:
        raise UserError(str(e)) from None
    typer.echo(f"sweep done in {res['seconds']:.0f} s: " + ", ".join(
        f"{k} {v}" for k, v in res["files"].items()))


def register(app: typer.Typer) -> None:
    """Add ``abstopk sweep`` to the app."""
    app.command("sweep")(sweep_command)
