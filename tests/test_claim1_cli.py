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
