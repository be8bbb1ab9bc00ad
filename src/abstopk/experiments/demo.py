"""The real-model pipeline of the demo: corpus → harvest → train at matched L0 → evaluate.

:func:`run_pipeline` runs four stages, each with a header and its own progress display:

1. **corpus** — the embedded default text corpus (:func:`abstopk.data.corpus.fetch`: Debian
   docs + Jane Austen, cleaned, deduplicated, split into train / held-out by document; quick
   when it is already there);
2. **harvest** — ``tokens`` residual-stream activations of the embedded SmolLM2-135M after
   block ``layer`` (default 9 of 30, contexts of 128 tokens, BOS dropped) from the *train*
   split into ``OUT/cache_L<layer>_<tokens>`` (:func:`abstopk.data.harvest.harvest`; a complete
   cache is reused, a partial one resumed);
3. **train** — TopK and AbsTopK with k ∈ ``k_values`` and JumpReLU with ``target_l0`` = k
   (matched L0), for every seed, all SAEs of one seed in ONE pass over the cache
   (:func:`abstopk.experiments.sweep.run_sweep`), then evaluated on held-out activations
   (MSE, NMSE, explained variance, L0, dead latents), loss recovered / KL on held-out contexts,
   and inference-time k for the TopK/AbsTopK SAEs trained at k = 32;
4. **evaluate** — a probing score (:data:`abstopk.eval.probing.TASKS` ``sparse_probing`` on
   VADER's human-rated sentiment sentences, when that data is available offline) for the
   k = 32 SAEs of the first seed, then the tables: printed, and written to
   ``OUT/pipeline.md`` + ``OUT/pipeline.json`` with the sweep plot ``OUT/sweep/sweep.png``
   (tables rendered by :mod:`abstopk.report.sweep_tables` and :mod:`abstopk.report.demo_tables`).

Default sizes are chosen so that the stages fit the demo's 15-minute budget on 2 CPU cores;
``tokens``, ``d_sae``, ``steps``, ``seeds`` (and the rest) scale it up.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["PipelineSettings", "run_pipeline"]

#: the sparsity at which the three architectures are compared head to head
MATCHED_K = 32


class PipelineSettings(dict):
    """The resolved settings of one :func:`run_pipeline` call (a plain dict, JSON-ready)."""


def _settings(*, tokens: int | None, d_sae: int | None, steps: int | None,
              seeds: Sequence[int], quick: bool,
              batch_size: int | None, k_values: Sequence[int] | None, layer: int, model: str,
              eval_tokens: int | None, eval_contexts: int | None,
              probe_examples: int | None, lr: float) -> PipelineSettings:
    if quick:
        k_default: Sequence[int] = (MATCHED_K,)
        defaults = dict(tokens=16_384, d_sae=512, steps=60, batch_size=256, eval_tokens=2048,
                        eval_contexts=2, probe_examples=64)
    else:
        k_default = (16, MATCHED_K, 64)
        defaults = dict(tokens=65_536, d_sae=2304, steps=200, batch_size=512,
                        eval_tokens=8192, eval_contexts=8, probe_examples=200)
    s = PipelineSettings(
        model=model, layer=int(layer), tokens=int(tokens or defaults["tokens"]),
        d_sae=int(d_sae or defaults["d_sae"]), steps=int(steps or defaults["steps"]),
        seeds=[int(x) for x in seeds], quick=bool(quick), lr=float(lr),
        k_values=sorted({int(k) for k in (k_values or k_default)}),
        batch_size=int(batch_size or defaults["batch_size"]),
        eval_tokens=int(eval_tokens if eval_tokens is not None else defaults["eval_tokens"]),
        eval_contexts=int(eval_contexts if eval_contexts is not None
                          else defaults["eval_contexts"]),
        probe_examples=int(probe_examples if probe_examples is not None
                           else defaults["probe_examples"]),
    )
    if s["tokens"] < s["batch_size"]:
        raise ValueError(f"tokens ({s['tokens']}) must be at least one batch ({s['batch_size']})")
    if not s["seeds"]:
        raise ValueError("seeds must not be empty")
    if max(s["k_values"]) > s["d_sae"]:
        raise ValueError(f"k = {max(s['k_values'])} exceeds d_sae = {s['d_sae']}")
    return s


def _header(console: Any, i: int, n: int, title: str) -> float:
    console.rule(f"[bold]Pipeline {i}/{n}: {title}")
    return time.perf_counter()


def _probe_stage(sweep: dict[str, Any], lm: tuple, s: PipelineSettings, console: Any,
                 progress: bool) -> dict[str, Any]:
    """sparse_probing (sentiment) of the k = MATCHED_K SAEs of the first seed."""
    from ..errors import UserError
    from ..eval.probing import TASKS
    from ..sae import SAE

    k_ref = min(s["k_values"], key=lambda k: (abs(k - MATCHED_K), k))
    seed = s["seeds"][0]
    rows = [r for r in sweep["rows"]
            if r["mode"] == "trained" and r["seed"] == seed and float(r["sparsity"]) == k_ref]
    out: dict[str, Any] = {"task": "sparse_probing", "dataset": "sentiment (VADER)",
                           "n_examples": s["probe_examples"], "seed": seed, "k": k_ref,
                           "results": {}}
    if s["probe_examples"] <= 0:
        out["skipped"] = "probe_examples = 0"
        return out
    model, tok = lm[0], lm[1]
    for r in rows:
        sae = SAE.load(r["sae_dir"]).eval()
        console.print(f"sparse probing (sentiment, {s['probe_examples']} sentences): "
                      f"{r['architecture']} at L0 {k_ref}")
        try:
            res = TASKS["sparse_probing"](sae, model, tok, tasks=("sentiment",),
                                          n_examples=s["probe_examples"], progress=progress,
                                          log=lambda m: console.print(f"[dim]{m}[/dim]"))
        except (UserError, FileNotFoundError, OSError) as e:
            out["skipped"] = f"probing data unavailable: {e}"
            console.print(f"[yellow]probing skipped: {e}[/yellow]")
            return out
        keys = ("llm_test_accuracy", "sae_test_accuracy", "sae_abs_top_1_test_accuracy",
                "sae_abs_top_5_test_accuracy", "sae_signed_top_1_test_accuracy",
                "sae_signed_top_5_test_accuracy")
        out["results"][r["architecture"]] = {
            **{key: res.get(key) for key in keys},
            **{f"{key}_ci": res.get(f"{key}_ci") for key in keys},
            "chance": res.get("chance"), "n_test": res["tasks"]["sentiment"]["n_test"]}
    return out


def run_pipeline(
    out_dir: str | Path,
    *,
    tokens: int | None = None,
    d_sae: int | None = None,
    steps: int | None = None,
    seeds: Sequence[int] = (0,),
    quick: bool = False,
    batch_size: int | None = None,
    k_values: Sequence[int] | None = None,
    layer: int = 9,
    model: str = "smollm2-135m",
    eval_tokens: int | None = None,
    eval_contexts: int | None = None,
    probe_examples: int | None = None,
    lr: float = 1e-3,
    console: Any = None,
    progress: bool = True,
    loaded: tuple | None = None,
) -> dict[str, Any]:
    """Run the real-model pipeline (module docstring) into ``out_dir``; return its results.

    Args:
        tokens: activations harvested for training (rows of the cache; default 65,536,
            quick 16,384).
        d_sae: latents per SAE (default 2304 = 4 × SmolLM2's 576; quick 512).
        steps: optimisation steps per SAE (default 200, quick 60) of ``batch_size`` tokens
            (default 512, quick 256): 102,400 tokens, ≈ 1.6 epochs of the default cache.
        seeds: one SAE per seed and (architecture, k); tables show mean ± std over seeds.
        quick: a smoke run: smaller defaults, only k = 32, smaller evaluation/probing sets.
            Explicit arguments override the defaults of either mode.
        k_values: the sparsity grid (default 16, 32, 64; quick: 32).
        eval_tokens / eval_contexts: held-out activations for reconstruction / held-out
            contexts for loss recovered (default 8192 / 8; quick 2048 / 2).
        probe_examples: sentiment sentences for sparse probing (0 skips it).
        loaded: an already loaded ``(model, tokenizer, info)`` of ``model`` (else loaded here).

    Returns ``{"settings", "cache", "sweep" (run_sweep's result), "probing", "files",
    "stage_seconds", "seconds"}``; the same (JSON-safe) in ``out_dir/pipeline.json``.
    """
    from rich.console import Console

    from ..data.corpus import fetch
    from ..data.harvest import HarvestConfig, harvest
    from ..eval.run import json_safe
    from ..files import atomic_write_bytes, atomic_write_json
    from ..lm.load import load_model
    from ..report.demo_tables import pipeline_markdown, print_probe
    from ..report.sweep_tables import print_table
    from .sweep import run_sweep
    from .sweep_config import SweepConfig

    console = console or Console()
    s = _settings(tokens=tokens, d_sae=d_sae, steps=steps, seeds=seeds, quick=quick,
                  batch_size=batch_size, k_values=k_values, layer=layer, model=model,
                  eval_tokens=eval_tokens, eval_contexts=eval_contexts,
                  probe_examples=probe_examples, lr=lr)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t_all = time.perf_counter()
    secs: dict[str, float] = {}
    n = 4

    def log(msg: str) -> None:
        console.print(f"[dim]{msg}[/dim]")

    # 1. corpus ---------------------------------------------------------------------------
    t0 = _header(console, 1, n, "corpus (embedded default text, train / held-out split)")
    man = fetch(log=log)
    for split, info in man["splits"].items():
        console.print(f"{split}: {info['n_docs']} documents, ~{info['approx_tokens']:,} tokens")
    secs["corpus"] = time.perf_counter() - t0

    # 2. harvest --------------------------------------------------------------------------
    t0 = _header(console, 2, n, f"harvest {s['tokens']:,} activations of {s['model']} after "
                 f"block {s['layer']} (context 128)")
    lm = loaded if loaded is not None else load_model(s["model"])
    info = lm[2]
    console.print(f"model: {s['model']} ({getattr(info, 'n_layers', '?')} blocks, "
                  f"d_model {getattr(info, 'd_model', '?')})")
    cache_dir = out / f"cache_L{s['layer']}_{s['tokens']}"
    hres = harvest(HarvestConfig(model=s["model"], layers=[s["layer"]], tokens=s["tokens"],
                                 context_size=128, batch_size=16, out=str(cache_dir),
                                 progress=progress),
                   model=lm[0], tokenizer=lm[1], info=info, log=log)
    secs["harvest"] = time.perf_counter() - t0

    # 3. train + evaluate (one pass per seed) ---------------------------------------------
    archs = ["topk", "abstopk", "jumprelu"]
    t0 = _header(console, 3, n, f"train {', '.join(archs)} at matched L0 "
                 f"(k / target L0 ∈ {s['k_values']}), seeds {s['seeds']}, d_sae {s['d_sae']}, "
                 f"{s['steps']} steps × {s['batch_size']} tokens")
    k_ref = min(s["k_values"], key=lambda k: (abs(k - MATCHED_K), k))
    scfg = SweepConfig(
        cache=str(cache_dir), out=str(out / "sweep"), architectures=archs, k=s["k_values"],
        d_sae=s["d_sae"], steps=s["steps"], batch_size=s["batch_size"], lr=s["lr"],
        seeds=s["seeds"], dead_tokens=max(s["batch_size"] * 50, 20_000),
        eval_tokens=s["eval_tokens"], eval_contexts=s["eval_contexts"],
        inference_k=len(s["k_values"]) > 1, inference_k_from=k_ref, progress=progress)
    sweep = run_sweep(scfg, console=console, loaded=lm, log=log)
    secs["train_eval"] = time.perf_counter() - t0

    # 4. probing + report -----------------------------------------------------------------
    t0 = _header(console, 4, n, "probing (sparse probing, sentiment) and the results tables")
    probe = _probe_stage(sweep, lm, s, console, progress)
    secs["probing"] = time.perf_counter() - t0
    summary = sweep["summary"]
    matched = [x for x in summary if x["mode"] == "trained" and x["sparsity"] == k_ref]
    print_table(matched, console, title=f"Matched L0 = {k_ref}: held-out reconstruction and "
                f"loss recovered (mean ± std over {len(s['seeds'])} seed(s))")
    print_probe(probe, console)
    files = dict(sweep["files"])
    md = pipeline_markdown(s, cache_rows=hres.total_rows, eval_tokens=sweep["eval_tokens"],
                           k_ref=k_ref, matched=matched, summary=summary, probe=probe)
    files["pipeline_md"] = str(atomic_write_bytes(out / "pipeline.md", md.encode()))
    secs = {k: round(v, 1) for k, v in secs.items()}
    result = {
        "settings": dict(s), "cache": str(cache_dir), "cache_rows": hres.total_rows,
        "sweep": sweep, "probing": probe, "files": files, "stage_seconds": secs,
        "seconds": round(time.perf_counter() - t_all, 1),
    }
    files["pipeline_json"] = str(out / "pipeline.json")
    atomic_write_json(out / "pipeline.json", json_safe(result))
    console.print(f"pipeline done in {result['seconds']:.0f} s "
                  f"({', '.join(f'{k} {v:.0f} s' for k, v in secs.items())}); "
                  f"tables: {out / 'pipeline.md'}, plot: {files.get('png')}")
    return json.loads(json.dumps(json_safe(result)))


def read_pipeline_results(demo_out: str | Path, needed_by: str) -> dict[str, Any]:
    """``demo_out/pipeline/pipeline.json``, the pipeline stage's results, for a later stage;
    raises :class:`~abstopk.errors.UserError` saying what ``needed_by`` reads when it is
    missing."""
    from ..errors import UserError

    pj = Path(demo_out) / "pipeline" / "pipeline.json"
    if not pj.is_file():
        raise UserError(f"{demo_out} holds no pipeline results (pipeline/pipeline.json); "
                        f"{needed_by}")
    return json.loads(pj.read_text(encoding="utf-8"))

