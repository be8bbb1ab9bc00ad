"""Claim 1 at scale: a resumable plan of named steps (issue 10, item 7).

Everything on SmolLM2-135M-Instruct (Q4_1 GGUF, dequantised to float32), one layer's
``resid_post`` (6 by default), context 128, activations stored as float16, under one folder
``OUT``:

==================  =====================================================================
step                what (output under OUT)
==================  =====================================================================
harvest-1M          train split, seeded order 0, first ≥ 1.05M rows of ``cache-train``
                    (the harvest stops at a shard boundary; the cache stays resumable)
heldout             the embedded held-out documents divided by document id into
                    ``valtest/val.jsonl`` / ``valtest/test.jsonl`` (:func:`valtest_of`),
                    harvested into ``cache-val`` (50k rows) and ``cache-test`` (100k rows)
lr-sweep            TopK and AbsTopK, k 32, d_sae 4608, 1M tokens (244 × 4096 rows of the
                    first 1M cache rows), lr ∈ {4e-4, 1e-3, 2e-3, 4e-3, 8e-3}; validation
                    nmse →
                    ``best_lr.json`` (per architecture)
scaling             TopK / AbsTopK k 32 at 0.1M and 1M tokens × seeds 0–2 (1M seed 0: the
                    sweep's SAE at the best lr, evaluated on test); needs only the first rows,
                    so it runs before the long harvest
ablation            two variants of the 1M k 32 runs, seeds 0–1, at the best lr: ``aux`` (AuxK
                    active: dead after 10 % of the run's tokens without firing; every
                    other run's dead window is its whole length, so AuxK never starts in
                    them) and ``nosink`` (trained without each context's first position,
                    the attention sink); ``eval_ablation.json`` of them and of the plain
                    1M seeds 0–1 (test nmse / fvu / L0 / dead fraction on all rows and on
                    positions ≥ 1; loss recovered with position 0 kept clean for the plain
                    and nosink runs), ``ablation.md`` (:mod:`.claim1_ablation`)
harvest-10M         ``cache-train`` continued to 10.5M rows
k32-10M             TopK / AbsTopK k 32 at 10M tokens (2441 steps), seed 0, at the 1M best lr
lr-10M              the 10M learning-rate check (:mod:`.claim1_lr10m`): the same at lr ∈
                    {1e-3, 2e-3, 4e-3}, chosen on validation → ``best_lr_10M.json``; every
                    10M run from then on uses that lr, and the table's 10M seed-0 row is the
                    chosen SAE
scaling-10M         the 10M k 32 pair × seeds 1–2 (another layer: seed 1)
nosink-10M          the 10M k 32 pair, seeds 0 and 1, trained without each context's first
                    position (``nosink``); with the plain pairs in ``eval_ablation.json``
                    and ``ablation.md``
k-sweep             k 16 and 64 at 10M tokens
batch               BatchTopK vs batch AbsTopK at k 32, 10M tokens
jumprelu            JumpReLU at target L0 32, 10M tokens (dense encoder: slowest, last)
summary             ``claim1.md`` / ``claim1.csv``, ``scaling.png`` and ``frontier.png`` from every finished run
==================  =====================================================================

Each SAE lives in ``OUT/saes/<name>/`` (``abstopk train``'s layout: checkpoint/ every 50
steps, cfg.json + sae_weights.safetensors when finished) with ``eval_val.json`` and
``eval_test.json``: ``nmse`` (the paper's per-token ‖x−x̂‖²/‖x‖² averaged over rows), ``fvu``
(‖x−x̂‖²/‖x−x̄‖²), ``l0`` on all rows of the cache; on test also loss recovered (zero
and mean ablation) and KL over 64 contexts of ``test.jsonl``, for all runs of a step in one
call (their clean and ablated LM runs are done once). A step is skipped when its outputs are
complete; a killed run resumes from the last checkpoint / shard (``--resume``); finished SAEs
and evaluations are never rewritten. Training on the first N rows of the growing train cache
reads them through ``CacheLoader(max_rows=N)``; the rows a harvest has written never change.
Training tokens = steps × 4096, one pass, no row seen twice.

**Another layer** (``layer`` ≠ 6) runs the deciding subset only (:data:`SUBSET_STEPS`):
harvest-1M, heldout, lr-sweep (the same 5 learning rates), harvest-10M, k32-10M (TopK vs
AbsTopK, seed 0), lr-10M, scaling-10M (seed 1 only), nosink-10M (seeds 0–1), scaling at
0.1M and 1M × seeds 0–2, ablation, summary — 16 SAEs on test besides the sweep's 10 and the
ablations' 8 + 4, with every size, the val/test rule, float16 storage and context 128 as on
layer 6, so the two layers' numbers compare. The truncated forward to layer L costs
≈ (L+1)/7 times layer 6's, which is why the subset. ``plan.json`` records the layer (a plan
without the field is layer 6's); one ``OUT`` holds one layer: a continuation with another
layer is refused (:class:`~abstopk.errors.RunMismatchError`).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ..files import atomic_write, atomic_write_json
from .claim1_ablation import run_ablation_step
from .claim1_lr10m import run_lr10m_step
from .claim1_plan import plan_precision, read_plan, settle_plan
from .claim1_runs import (
    ABLATIONS,
    AUX_DEAD_SHARE,
    CONTEXT,
    LAYER,
    LRS,
    NOT_IN_TABLE,
    SITE,
    STEPS,
    SUBSET_STEPS,
    Claim1Config,
    Run,
    plan_runs,
    sae_lr,
    steps_of,
)

# the plan's contents live in claim1_runs; re-exported here, the plan's one entry point
__all__ = ["ABLATIONS", "LAYER", "LRS", "STEPS", "SUBSET_STEPS", "Claim1Config", "Run",
           "plan_runs", "run_plan", "steps_of", "valtest_of"]


def valtest_of(doc_id: str) -> str:
    """``"val"`` or ``"test"`` for a held-out document: ``sha256("abstopk-valtest:" + id)``'s
    first 8 bytes / 2⁶⁴ < 1/3 → val. Document-level, so val and test share no document."""
    h = hashlib.sha256(("abstopk-valtest:" + doc_id).encode()).digest()
    return "val" if int.from_bytes(h[:8], "big") / 2.0**64 < 1 / 3 else "test"


class Plan:
    """One run folder of the plan: its sizes, layer, precision (the dtype of the LM forward
    and of the SAEs' encoder GEMM: float32 or bfloat16) and log; trains, evaluates, harvests."""

    def __init__(self, out: Path, cfg: Claim1Config, log: Callable[[str], None], layer: int,
                 lm: tuple | None = None, precision: str = "float32"):
        self.out, self.cfg, self.log, self.layer = out, cfg, log, layer
        self.precision = precision
        self._lm: tuple | None = lm   # (model, tokenizer, info), loaded on first use if None

    # ------------------------------------------------------------------ helpers
    def lm(self) -> tuple:
        if self._lm is None:
            from ..lm import load_model

            self._lm = load_model(self.cfg.model, dtype=self.precision)
        return self._lm

    def harvest_config(self, name: str, tokens: int, *, corpus: str = "embedded",
                       split: str = "train", layers: list[int] | None = None):
        """The plan's :class:`HarvestConfig` of cache ``name`` (``layers``: default the run's)."""
        from ..data.harvest import HarvestConfig

        return HarvestConfig(model=self.cfg.model, layers=layers or [self.layer], site=SITE,
                             tokens=tokens, context_size=CONTEXT, dtype="float16",
                             model_dtype=self.precision,
                             out=str(self.out / name), corpus=corpus, split=split, seed=0,
                             shard_rows=self.cfg.shard_rows, progress=False)

    def harvest(self, name: str, tokens: int, *, corpus: str = "embedded", split: str = "train",
                stop_after: int | None = None) -> None:
        from ..data.cache import ActivationCache
        from ..data.harvest import harvest

        path = self.out / name
        if (path / "manifest.json").is_file():
            c = ActivationCache(path)
            if c.complete or (stop_after is not None and c.total_rows >= stop_after):
                return
        cfg = self.harvest_config(name, tokens, corpus=corpus, split=split)
        model, tok, info = self.lm()
        r = harvest(cfg, model=model, tokenizer=tok, info=info, log=self.log,
                    stop_after_rows=stop_after)
        self.timing(f"harvest {name}", rows=r.new_rows, seconds=r.seconds)

    def timing(self, what: str, **kw: Any) -> None:
        with open(self.out / "timings.jsonl", "a") as f:
            f.write(json.dumps({"what": what, "utc": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                    time.gmtime()), **kw}) + "\n")

    def best_lr(self, arch: str, tokens: str = "1M") -> float:
        """The learning rate of ``arch``'s runs (batch operators and JumpReLU: TopK's or
        AbsTopK's): the 1M sweep's best (``best_lr.json``); for 10M runs the 10M check's best
        (``best_lr_10M.json``) once the ``lr-10M`` step has written it."""
        base = {"batchtopk": "topk", "batchabstopk": "abstopk", "jumprelu": "topk"}.get(arch, arch)
        ten = self.out / "best_lr_10M.json"
        if tokens == "10M" and ten.is_file():
            return float(json.loads(ten.read_text())[base]["lr"])
        return float(json.loads((self.out / "best_lr.json").read_text())[base]["lr"])

    def sae_dir(self, run: Run) -> Path:
        return self.out / "saes" / run.name

    # ------------------------------------------------------------------ one SAE
    def train(self, run: Run) -> Path:
        from ..data.loader import CacheLoader
        from ..train import TrainConfig
        from ..train.trainer import Trainer

        d = self.sae_dir(run)
        if (d / "sae_weights.safetensors").is_file() and (d / "cfg.json").is_file():
            return d
        lr = run.lr if run.lr is not None else self.best_lr(run.arch, run.tokens)
        steps, batch = self.cfg.steps[run.tokens], self.cfg.batch_size
        kw: dict[str, Any] = {"k": run.k}
        if run.arch == "jumprelu":
            # the controller's JumpReLU defaults: k_i 0.1 and the band 0.5 (docs/pipeline.md)
            kw = {"target_l0": float(run.k), "jumprelu_init_threshold": 1.0}
        dead = min(steps * batch, 10_000_000)   # the run's length: AuxK never starts
        if run.variant == "aux":
            dead = max(1, int(AUX_DEAD_SHARE * steps * batch))
        rows, extra = steps * batch, {}
        if run.variant == "nosink":   # 1 row in 128 is a context's first: read ≈ 1/64 more
            kw["min_position"] = 1
            rows, extra = rows + rows // 64, {"min_position": 1}
        cfg = TrainConfig(architecture=run.arch, d_sae=self.cfg.d_sae, steps=steps,
                          batch_size=batch, lr=lr, seed=run.seed, dead_tokens=dead,
                          checkpoint_every=self.cfg.checkpoint_every, log_every=25, out=str(d),
                          resume=True, progress=False,
                          autocast="bf16" if self.precision == "bfloat16" else "off", **kw)
        source = CacheLoader(self.out / "cache-train", batch, run.seed, max_rows=rows, **extra)
        t = time.perf_counter()
        tr = Trainer(cfg, source, sae_metadata={
            "model_name": self.cfg.model, "hook_layer": self.layer, "hook_site": SITE,
            "hook_name": f"blocks.{self.layer}.hook_{SITE}", "context_size": CONTEXT,
            "keep_bos": False, "dataset": f"{source.identity} (corpus seed 0)"})
        tr.prepare()  # loads the last checkpoint of a resumed run
        start = tr.step
        tr.fit()
        secs = time.perf_counter() - t
        self.timing(f"train {run.name}", steps=tr.step - start, seconds=round(secs, 1),
                     tokens_per_s=round((tr.step - start) * batch / max(secs, 1e-9), 1))
        return d

    def evaluate(self, run: Run, split: str) -> dict:
        """The run's ``eval_<split>.json`` (computed and written when missing)."""
        return self.evaluate_many([run], split)[0]

    def evaluate_many(self, runs: list[Run], split: str) -> list[dict]:
        """``eval_<split>.json`` of each run, computing the missing ones: reconstruction on
        every row of ``cache-<split>``; on test also loss recovered and KL, one call for all
        missing runs so that the clean and ablated LM runs are shared (each SAE's numbers
        equal those it gets alone: ``evaluate_loss_recovered``)."""
        from ..data.tokens import bos_token_id, iter_contexts
        from ..eval.loss_recovered import evaluate_loss_recovered
        from ..eval.metrics import evaluate_reconstruction
        from ..sae import SAE

        todo: dict[str, tuple[Run, Any, dict]] = {}
        for run in runs:
            d = self.sae_dir(run)
            if (d / f"eval_{split}.json").is_file() or run.name in todo:
                continue
            sae = SAE.load(d).eval()
            rec = evaluate_reconstruction(sae, self.out / f"cache-{split}", batch_size=4096)
            todo[run.name] = (run, sae, {
                "run": run.name, "step": run.step, "architecture": run.arch, "k": run.k,
                "tokens": run.tokens,
                "train_tokens": self.cfg.steps[run.tokens] * self.cfg.batch_size,
                "seed": run.seed, "lr": sae_lr(d), "split": split, **rec.summary})
        if todo and split == "test":
            model, tok, _ = self.lm()
            ctx = iter_contexts(tok, source=str(self.out / "valtest" / "test.jsonl"),
                                split="all", context_size=CONTEXT)
            t = time.perf_counter()
            lr = evaluate_loss_recovered(
                {name: sae for name, (_, sae, _) in todo.items()}, model, ctx, layer=self.layer,
                site=SITE, n_contexts=self.cfg.lr_contexts, batch_size=4,
                skip_token_ids={bos_token_id(tok)})
            self.timing(f"loss recovered of {len(todo)} SAE(s)", saes=sorted(todo),
                         seconds=round(time.perf_counter() - t, 1))
            for name, (_, _, res) in todo.items():
                res.update(lr[name])
        for run, _, res in todo.values():
            atomic_write_json(self.sae_dir(run) / f"eval_{split}.json", res)
        return [json.loads((self.sae_dir(r) / f"eval_{split}.json").read_text()) for r in runs]

    # ------------------------------------------------------------------ the steps
    def step_heldout(self) -> None:
        from ..data.corpus import ensure_corpus, split_path

        man = ensure_corpus()
        vt = self.out / "valtest"
        vt.mkdir(parents=True, exist_ok=True)
        if not (vt / "info.json").is_file():  # written last: a kill before it redoes the split
            parts: dict[str, list[str]] = {"val": [], "test": []}
            with open(split_path("heldout"), encoding="utf-8") as f:
                for line in f:
                    if line.strip():
                        parts[valtest_of(json.loads(line)["id"])].append(line.rstrip("\n"))
            for name, lines in parts.items():
                data = ("\n".join(lines) + "\n").encode()
                atomic_write(vt / f"{name}.jsonl", lambda tmp, data=data: Path(tmp).write_bytes(data))
            atomic_write_json(vt / "info.json", {
                "rule": "held-out document d is val iff int(sha256('abstopk-valtest:' + d.id)"
                        "[:8], big-endian) / 2**64 < 1/3, else test",
                "corpus_sha256": man["splits"]["heldout"]["sha256"],
                "docs": {k: len(v) for k, v in parts.items()}})
        self.harvest("cache-val", self.cfg.val_rows, corpus=str(vt / "val.jsonl"), split="all")
        self.harvest("cache-test", self.cfg.test_rows, corpus=str(vt / "test.jsonl"),
                     split="all")

    def step_lr_sweep(self) -> None:
        runs = [r for r in plan_runs(self.layer) if r.step == "lr-sweep"]
        best: dict[str, dict] = {}
        for r in runs:
            self.train(r)
            ev = self.evaluate(r, "val")
            if r.arch not in best or ev["nmse"] < best[r.arch]["val_nmse"]:
                best[r.arch] = {"lr": r.lr, "val_nmse": ev["nmse"], "run": r.name}
        atomic_write_json(self.out / "best_lr.json", best)

    def step_runs(self, step: str) -> None:
        """Train the step's runs, then evaluate them on test together (shared LM runs)."""
        runs = [self.resolved(r) for r in plan_runs(self.layer) if r.step == step]
        for r in runs:
            self.train(r)
        self.evaluate_many(runs, "test")

    def resolved(self, r: Run) -> Run:
        """The SAE a planned run is: a plain k 32 seed-0 TopK/AbsTopK run at its best lr reuses
        the sweep's SAE of that lr (1M: ``lr-sweep``; 10M: ``lr-10M`` once it has chosen), and
        an ``lr-10M`` run at the 1M sweep's best lr is the ``k32-10M`` SAE (trained at that
        lr before the check)."""
        if not (self.out / "best_lr.json").is_file():   # before the sweep: every run is itself
            return r
        plain = r.variant == "" and r.seed == 0 and r.k == 32 and r.arch in ("topk", "abstopk")
        if plain and r.lr is None and r.tokens == "1M":
            return Run("lr-sweep", r.arch, 32, "1M", 0, self.best_lr(r.arch))
        if plain and r.lr is None and r.tokens == "10M" \
                and (self.out / "best_lr_10M.json").is_file():
            return self.resolved(Run("lr-10M", r.arch, 32, "10M", 0,
                                     self.best_lr(r.arch, "10M")))
        if r.step == "lr-10M" and r.lr == self.best_lr(r.arch):
            return Run("k32-10M", r.arch, 32, "10M", 0)
        return r

    def step_summary(self) -> None:
        """The report of every planned table run (resolved: the SAE it is) with a test
        evaluation, and of both learning-rate sweeps' validation numbers."""
        from ..report.claim1_report import write_claim1_report

        planned = [r for r in plan_runs(self.layer) if r.step not in NOT_IN_TABLE]
        names = sorted({self.resolved(r).name for r in planned})
        rows = [{**json.loads((self.out / "saes" / n / "eval_test.json").read_text()),
                 "layer": self.layer}
                for n in names if (self.out / "saes" / n / "eval_test.json").is_file()]
        n_planned = len(planned)
        sweep = [json.loads(p.read_text()) for p in sorted(self.out.glob("saes/*/eval_val.json"))]
        write_claim1_report(self.out, rows, sweep, n_planned=n_planned, layer=self.layer)


def _stamp(s: str) -> None:
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime())}Z {s}", flush=True)


def run_plan(out: str | Path, *, steps: list[str] | None = None,
             cfg: Claim1Config | None = None,
             log: Callable[[str], None] | None = None, layer: int = LAYER,
             precision: str | None = None) -> None:
    """Run (or continue) the plan's steps on ``layer`` in order (all of :func:`steps_of` by
    default) under ``out``. The sizes (``cfg``) and the layer are recorded in
    ``out/plan.json`` on the first call; a later call with other sizes is refused (its outputs
    would not be comparable), except a learning-rate grid that only gains values at its end
    (the plan continues and trains them); another layer is refused with
    :class:`RunMismatchError` (one folder per layer; a ``plan.json`` without ``layer`` is 6's).
    ``precision`` (float32, bfloat16, auto; None: the run's own, float32 for a new run):
    :func:`~.claim1_plan.plan_precision`.
    """
    if isinstance(layer, bool) or not isinstance(layer, int) or layer < 0:
        raise ValueError(f"layer must be a block index >= 0, got {layer!r}")
    allowed = steps_of(layer)
    todo = list(steps or allowed)
    unknown = [s for s in todo if s not in STEPS]
    if unknown:
        raise ValueError(f"unknown step(s) {', '.join(unknown)}; steps: {', '.join(STEPS)}")
    other = [s for s in todo if s not in allowed]
    if other:
        raise ValueError(f"step(s) {', '.join(other)} belong to layer {LAYER}'s plan only; "
                         f"layer {layer} runs {', '.join(allowed)}")
    out = Path(out)
    old = read_plan(out, layer)   # another layer's run: refused before anything is written
    cfg, log = cfg or Claim1Config(), log or _stamp
    precision = plan_precision(precision, old)
    p = Plan(out, cfg, log, layer, precision=precision)
    if old is None and todo != ["summary"] and layer >= (n := p.lm()[2].n_layers):
        raise ValueError(f"no layer {layer}: {cfg.model} has {n} blocks (0..{n - 1})")
    out.mkdir(parents=True, exist_ok=True)
    settle_plan(out, old, {"sizes": asdict(cfg), "layer": layer, "site": SITE,
                           "context": CONTEXT, "lrs": list(LRS), "storage": "float16",
                           "corpus_seed": 0, "precision": precision}, log)
    actions: dict[str, Callable[[], None]] = {
        "harvest-1M": lambda: p.harvest("cache-train", cfg.train_rows,
                                        stop_after=cfg.first_rows),
        "heldout": p.step_heldout,
        "lr-sweep": p.step_lr_sweep,
        "ablation": lambda: run_ablation_step(p, "ablation"),
        "lr-10M": lambda: run_lr10m_step(p),
        "nosink-10M": lambda: run_ablation_step(p, "nosink-10M"),
        "harvest-10M": lambda: p.harvest("cache-train", cfg.train_rows),
        "summary": p.step_summary,
    }
    for s in todo:
        t = time.perf_counter()
        log(f"step {s}: start")
        actions.get(s, lambda s=s: p.step_runs(s))()
        log(f"step {s}: done in {time.perf_counter() - t:.0f} s")
        if s != "summary":
            p.step_summary()
