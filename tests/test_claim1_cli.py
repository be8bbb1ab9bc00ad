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
