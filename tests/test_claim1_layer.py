"""The claim-1 plan on another layer at toy sizes on the real embedded model: layer 10 is
harvested (the cached rows equal a plain forward's block-10 output, not block 6's), the SAEs
record it, the summary states it and counts the subset (16 SAEs on test), and a step of layer
6's plan only is refused. (Which runs the subset holds: tests/test_claim1_cli.py.)"""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from abstopk.data import corpus as C
from abstopk.experiments.claim1 import Claim1Config, plan_runs, run_plan

pytestmark = pytest.mark.slow

TOY = Claim1Config(d_sae=32, batch_size=32, train_rows=800, first_rows=200, val_rows=150,
                   test_rows=200, lr_contexts=1, checkpoint_every=4, shard_rows=256,
                   steps={"0.1M": 2, "1M": 4, "10M": 8})


def test_layer10_harvests_layer10_and_trains_the_subset(tmp_path, lm):
    from abstopk.data.cache import ActivationCache

    if shutil.which("apt-get") is None and C.load_manifest(check=False) is None:
        pytest.skip("apt-get is missing on this machine: the embedded corpus cannot be built")
    out = tmp_path / "L10"
    run_plan(out, cfg=TOY, layer=10, steps=["harvest-1M", "heldout", "lr-sweep",
                                            "harvest-10M", "k32-10M"], log=lambda s: None)
    plan = json.loads((out / "plan.json").read_text())
    assert plan["layer"] == 10 and plan["sizes"]["d_sae"] == 32
    for name, rows in (("cache-train", 800), ("cache-val", 150), ("cache-test", 200)):
        m = json.loads((out / name / "manifest.json").read_text())
        assert m["complete"] and m["total_rows"] == rows and m["dtype"] == "float16"
        assert (m["layer"], m["hook_name"]) == (10, "blocks.10.hook_resid_post")
    # the first test context's rows are block 10's output of a plain forward over that
    # context (its other positions are BOS: rows are every non-BOS position), fp16 storage
    c = ActivationCache(out / "cache-test")
    meta = c.rows_with_context(0, 200)
    first = meta["context_ids"] == meta["context_ids"][0]
    n = int(first.sum())
    assert n < 200 and not first[n:].any()          # the whole first context lies in 200 rows
    model, tok, _ = lm
    pos = meta["positions"][:n].long()
    ids = torch.full((128,), tok.bos_token_id)
    ids[pos] = meta["token_ids"][:n]
    with torch.no_grad():
        hs = model(input_ids=ids[None], output_hidden_states=True, use_cache=False).hidden_states
    got = c.open_shard(0)["activations"].rows(0, n).float()
    assert torch.allclose(got, hs[11][0, pos], rtol=2e-3, atol=2e-3)
    assert not torch.allclose(got, hs[7][0, pos], rtol=0.1, atol=0.1)     # not layer 6's
    # the sweep (10) and k32-10M (2) SAEs exist; the report counts the subset's 16 on test
    names = sorted(p.name for p in (out / "saes").iterdir())
    assert names == sorted(r.name for r in plan_runs(10) if r.step in ("lr-sweep", "k32-10M"))
    cfg = json.loads((out / "saes" / "abstopk_k32_10M_s0" / "cfg.json").read_text())
    assert cfg["hook_layer"] == 10 and cfg["hook_name"] == "blocks.10.hook_resid_post"
    ev = json.loads((out / "saes" / "abstopk_k32_10M_s0" / "eval_test.json").read_text())
    assert ev["ce_zero_ablated"] > ev["ce_clean"] and ev["l0"] == pytest.approx(32.0)
    md = (out / "claim1.md").read_text()
    assert "layer 10 `resid_post`" in md and "PARTIAL: 2 of 16 planned" in md
    csv_lines = (out / "claim1.csv").read_text().splitlines()
    assert len(csv_lines) == 3 and all(line.startswith("10,") for line in csv_lines[1:])
    with pytest.raises(ValueError, match="belong to layer 6's plan only"):
        run_plan(out, cfg=TOY, layer=10, steps=["batch"], log=lambda s: None)
    with pytest.raises(ValueError, match=r"no layer 30: smollm2-135m has 30 blocks \(0..29\)"):
        run_plan(tmp_path / "L30", cfg=TOY, layer=30, log=lambda s: None)
    assert not (tmp_path / "L30").exists()                  # refused before writing a plan
