"""``abstopk experiment claim1``: the --out rule and bad input as one-line errors (no model)."""

from __future__ import annotations

import json

from cli_runner import run_cli

from abstopk.experiments.claim1 import Claim1Config


def test_an_existing_run_needs_resume_and_unknown_steps_are_named(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "plan.json").write_text("{}")
    code, _, err = run_cli(["experiment", "claim1", "--out", out], capsys)
    assert code == 2 and "already holds a claim-1 run" in err and "--resume" in err
    assert err.strip().count("\n") == 0
    assert json.loads((out / "plan.json").read_text()) == {}          # nothing written
    code, _, err = run_cli(["experiment", "claim1", "--out", tmp_path / "new", "--steps",
                            "harvest-1M,bogus"], capsys)
    assert code == 2 and "bogus" in err and "lr-sweep" in err
    assert not (tmp_path / "new").exists()                             # checked first


def test_sizes_are_validated():
    import pytest

    with pytest.raises(ValueError, match="1M runs need more rows"):
        Claim1Config(first_rows=1000)
    with pytest.raises(ValueError, match="10M runs need more rows"):
        Claim1Config(train_rows=5_000_000)
    with pytest.raises(ValueError, match="d_sae must be >= 1"):
        Claim1Config(d_sae=0)


def _layer6_plan_without_the_field() -> dict:
    """plan.json as the first layer-6 runs wrote it, less the ``layer`` field."""
    from dataclasses import asdict

    from abstopk.experiments.claim1 import LRS

    return {"sizes": asdict(Claim1Config()), "site": "resid_post", "context": 128,
            "lrs": list(LRS), "storage": "float16", "corpus_seed": 0}


def test_a_layer6_plan_without_the_field_continues_and_another_layer_is_refused(tmp_path,
                                                                              capsys):
    import pytest

    from abstopk.errors import RunMismatchError
    from abstopk.experiments.claim1 import run_plan

    out = tmp_path / "run"
    out.mkdir()
    text = json.dumps(_layer6_plan_without_the_field(), indent=2)
    (out / "plan.json").write_text(text)
    with pytest.raises(RunMismatchError, match="layer 6, not layer 15"):
        run_plan(out, steps=["summary"], layer=15, log=lambda s: None)
    assert sorted(p.name for p in out.iterdir()) == ["plan.json"]     # nothing written
    code, _, err = run_cli(["experiment", "claim1", "--out", out, "--resume", "--layer", "15"],
                           capsys)
    assert code == 2 and "layer 6, not layer 15" in err and err.strip().count("\n") == 0
    run_plan(out, steps=["summary"], log=lambda s: None)               # layer 6: accepted
    assert (out / "plan.json").read_text() == text                     # and left as it was
    md = (out / "claim1.md").read_text()
    assert "layer 6 `resid_post`" in md and "PARTIAL: 0 of 25 planned" in md
    # the other way round: a layer-15 folder refuses layer 6 (the default)
    other = tmp_path / "L15"
    run_plan(other, steps=["summary"], layer=15, log=lambda s: None)
    assert json.loads((other / "plan.json").read_text())["layer"] == 15
    assert "PARTIAL: 0 of 16 planned" in (other / "claim1.md").read_text()
    with pytest.raises(RunMismatchError, match="layer 15, not layer 6"):
        run_plan(other, steps=["summary"], log=lambda s: None)


def test_another_layer_plans_the_deciding_subset_only(tmp_path):
    import pytest

    from abstopk.experiments.claim1 import STEPS, SUBSET_STEPS, plan_runs, run_plan, steps_of

    full, sub = plan_runs(), plan_runs(15)
    assert len(full) == 53 and steps_of(6) == STEPS and steps_of(15) == SUBSET_STEPS
    assert [r.name for r in sub] == [r.name for r in full
                                     if r.step in ("lr-sweep", "ablation", "k32-10M",
                                                   "lr-10M", "nosink-10M")
                                     or (r.step == "scaling" and r.tokens != "10M")
                                     or (r.step == "scaling-10M" and r.seed == 1)]
    assert len([r for r in sub if r.step == "lr-sweep"]) == 10
    assert {(r.arch, r.tokens, r.seed) for r in sub if r.step == "scaling"} == {
        (a, t, s) for a in ("topk", "abstopk") for t in ("0.1M", "1M") for s in (0, 1, 2)}
    # two seeds at 10M on every layer: the k32-10M pair and seed 1, before nosink-10M
    assert [(r.step, r.arch, r.seed) for r in sub if r.tokens == "10M" and r.step in
            ("k32-10M", "scaling-10M")] == [("k32-10M", "topk", 0), ("k32-10M", "abstopk", 0),
                                            ("scaling-10M", "topk", 1),
                                            ("scaling-10M", "abstopk", 1)]
    steps = [r.step for r in sub]
    assert steps.index("scaling-10M") < steps.index("nosink-10M")
    assert {r.arch for r in sub} == {"topk", "abstopk"} and {r.k for r in sub} == {32}
    with pytest.raises(ValueError, match="k-sweep, jumprelu belong to layer 6's plan only"):
        run_plan(tmp_path / "x", steps=["k-sweep", "jumprelu"], layer=15)
    with pytest.raises(ValueError, match="layer must be a block index"):
        run_plan(tmp_path / "x", layer=-1)
    assert not (tmp_path / "x").exists()


def test_the_precision_is_recorded_kept_and_a_change_refused(tmp_path, capsys, monkeypatch):
    import pytest

    import abstopk.precision as P
    from abstopk.experiments.claim1 import run_plan
    from abstopk.experiments.claim1_plan import plan_precision

    # auto follows the CPU's bf16 units; None keeps the run's own (float32 for a new run)
    monkeypatch.setattr(P, "bf16_units", lambda device="cpu", flags=None: True)
    assert plan_precision("auto", None) == "bfloat16"
    monkeypatch.setattr(P, "bf16_units", lambda device="cpu", flags=None: False)
    assert plan_precision("auto", None) == "float32"
    assert plan_precision(None, None) == "float32"
    assert plan_precision(None, {"precision": "bfloat16"}) == "bfloat16"
    assert plan_precision(None, {}) == "float32"                      # plan before the field
    with pytest.raises(ValueError, match="precision must be one of float32, bfloat16, auto"):
        plan_precision("float8", None)
    out = tmp_path / "run"
    run_plan(out, steps=["summary"], precision="bfloat16", log=lambda s: None)
    text = (out / "plan.json").read_text()
    assert json.loads(text)["precision"] == "bfloat16"
    run_plan(out, steps=["summary"], log=lambda s: None)              # omitted: the run's own
    with pytest.raises(ValueError, match="started in bfloat16, not float32"):
        run_plan(out, steps=["summary"], precision="float32", log=lambda s: None)
    # auto, resolving to float32 on a CPU without bf16 units, is another precision too
    code, _, err = run_cli(["experiment", "claim1", "--out", out, "--resume", "--steps",
                            "summary", "--precision", "auto"], capsys)
    assert code == 2 and "started in bfloat16, not float32" in err
    assert (out / "plan.json").read_text() == text
    # a plan.json from before the field is a float32 run; it continues and stays as it was
    old = tmp_path / "old"
    old.mkdir()
    t = json.dumps(_layer6_plan_without_the_field())
    (old / "plan.json").write_text(t)
    run_plan(old, steps=["summary"], precision="float32", log=lambda s: None)
    assert (old / "plan.json").read_text() == t
    with pytest.raises(ValueError, match="started in float32, not bfloat16"):
        run_plan(old, steps=["summary"], precision="bfloat16", log=lambda s: None)


def test_a_bfloat16_plan_harvests_and_trains_in_bfloat16(tmp_path):
    """The plan's precision reaches the harvest (the LM forward's dtype, recorded in the
    cache manifest) and training (bf16 autocast, recorded in train_config.json)."""
    import torch
    from latent_cache import write_cache

    from abstopk.experiments.claim1 import Plan, Run

    small = Claim1Config(d_sae=64, batch_size=64, train_rows=4500, first_rows=500,
                         val_rows=300, test_rows=400, lr_contexts=2, checkpoint_every=3,
                         shard_rows=256, steps={"0.1M": 2, "1M": 4, "10M": 12})
    got = {}
    for precision in ("float32", "bfloat16"):
        out = tmp_path / precision
        g = torch.Generator().manual_seed(0)
        write_cache(out / "cache-train", torch.randn(1024, 16, generator=g),
                    torch.zeros(1024, dtype=torch.long), 16, 256)
        p = Plan(out, small, lambda s: None, 6, precision=precision)
        assert p.harvest_config("cache-train", 1000).model_dtype == precision
        d = p.train(Run("scaling", "abstopk", 8, "0.1M", 0, lr=1e-3))
        cfg = json.loads((d / "train_config.json").read_text())
        got[precision] = (cfg["autocast"], cfg["compute_dtype"], cfg["steps"])
    assert got == {"float32": ("off", "float32", 2), "bfloat16": ("bf16", "bfloat16", 2)}
