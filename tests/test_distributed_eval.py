"""Evaluation at the checkpoints of a 2-rank run on real-model activations (slow: the
embedded SmolLM2-135M-Instruct, Q4_1 dequantised): rank 0 evaluates on a held-out cache and
on held-out contexts (loss recovered, KL), the numbers land in ``metrics.jsonl`` and equal an
independent evaluation of the saved SAE."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

from abstopk.data.harvest import HarvestConfig, harvest

sys.path.insert(0, str(Path(__file__).parent))
from ddp_worker import launch  # noqa: E402

pytestmark = pytest.mark.slow


def _cache(lm, out: Path, split: str, tokens: int) -> str:
    model, tok, info = lm
    cfg = HarvestConfig(layers=[2], tokens=tokens, context_size=64, batch_size=8, split=split,
                        out=str(out), progress=False, shard_rows=1024)
    return str(harvest(cfg, model=model, tokenizer=tok, info=info, log=lambda s: None).paths[0])


def test_checkpoint_eval_of_a_two_rank_run(lm, tmp_path):
    train = _cache(lm, tmp_path / "train", "train", 1024)
    held = _cache(lm, tmp_path / "held", "heldout", 256)
    out = tmp_path / "run"
    cfg = dict(architecture="abstopk", d_sae=1152, k=16, batch_size=128, steps=8,
               checkpoint_every=4, log_every=4, init_batches=2, prefetch=0)
    ev = dict(eval_cache=held, eval_tokens=256, eval_contexts=2)
    launch(2, train, str(out), cfg, eval_cfg=ev, timeout=300.0)
    evals = [json.loads(s) for s in (out / "metrics.jsonl").read_text().splitlines()
             if '"event"' in s]
    assert [e["step"] for e in evals] == [4, 8]
    for e in evals:
        assert e["n_tokens"] == 256 and e["eval_contexts"] == 2
        assert 0 < e["nmse"] < 2 and e["kl"] >= 0 and math.isfinite(e["loss_recovered"])
        assert e["ce_clean"] < e["ce_zero_ablated"]
    from abstopk.eval.run import evaluate_sae
    from abstopk.sae import SAE

    again = evaluate_sae(SAE.load(out), cache=held, tokens=256, contexts=2, loaded=lm,
                         progress=False)
    for key in ("nmse", "fvu", "l0", "ce_spliced", "loss_recovered", "kl"):
        assert again[key] == pytest.approx(evals[-1][key], rel=1e-4, abs=1e-6), key
