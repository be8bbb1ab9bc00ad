"""One harvest for two claim-1 runs on the real embedded model at toy sizes: a cache behind is
caught up alone, then both are continued in one pass, and each ends shard for shard (rows,
contexts, sha256) as the plan's own single-layer harvest leaves it; a second call does
nothing; runs of one layer twice, of other sizes or without a cache are refused."""

from __future__ import annotations

import json
import shutil

import pytest
from cli_runner import run_cli

from abstopk.data import corpus as C
from abstopk.experiments.claim1 import Claim1Config, Plan, run_plan
from abstopk.experiments.claim1_joint import joint_harvest

pytestmark = pytest.mark.slow

TOY = Claim1Config(d_sae=32, batch_size=32, train_rows=7000, first_rows=300, val_rows=150,
                   test_rows=200, lr_contexts=1, checkpoint_every=4, shard_rows=256,
                   steps={"0.1M": 2, "1M": 4, "10M": 8})


def _shards(out):
    m = json.loads((out / "cache-train" / "manifest.json").read_text())
    return m, [(s["rows"], s["contexts"], s["sha256"]) for s in m["shards"]]


def test_two_layers_continue_in_one_pass_exactly_as_alone(tmp_path, capsys):
    if shutil.which("apt-get") is None and C.load_manifest(check=False) is None:
        pytest.skip("apt-get is missing on this machine: the embedded corpus cannot be built")
    quiet = lambda s: None   # noqa: E731
    a, b = tmp_path / "L2", tmp_path / "L4"
    run_plan(a, steps=["harvest-1M"], cfg=TOY, layer=2, log=quiet)
    run_plan(b, steps=["harvest-1M"], cfg=TOY, layer=4, log=quiet)
    pa = Plan(a, TOY, quiet, 2)
    pa.harvest("cache-train", TOY.train_rows, stop_after=3000)     # layer 2 ahead of layer 4
    ahead = _shards(a)[0]["total_rows"]
    assert ahead >= 3000 > _shards(b)[0]["total_rows"]
    said = []
    joint_harvest([b, a], log=said.append)
    assert any("layer 4: catching up" in s for s in said)
    assert any(f"joint harvest of layers [2, 4] from {ahead}" in s for s in said)
    # the references: each layer's plan harvesting alone, in its own steps
    for layer, joint in ((2, a), (4, b)):
        ref = tmp_path / f"ref{layer}"
        run_plan(ref, steps=["harvest-1M", "harvest-10M"], cfg=TOY, layer=layer, log=quiet)
        (m, got), (mr, want) = _shards(joint), _shards(ref)
        assert m["complete"] and m["total_rows"] == TOY.train_rows == mr["total_rows"]
        assert m["layer"] == layer and len(got) == 4      # 1 + 1 caught up or ahead + 2 joint
        assert got == want, layer
    t = [json.loads(line) for line in (a / "timings.jsonl").open()]
    assert t[-1]["what"] == "joint harvest cache-train (layers [2, 4])" and t[-1]["rows"] > 0
    # a second call (here through the CLI) finds both complete and writes nothing
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("cache-train/*")}
    code, _, err = run_cli(["experiment", "claim1-harvest", a, b], capsys)
    assert code == 0 and "nothing to do" in err
    assert {p: p.stat().st_mtime_ns for p in before} == before
    # refusals: one layer twice, other sizes, no cache yet, a single run
    with pytest.raises(ValueError, match="different layers"):
        joint_harvest([a, a])
    other = tmp_path / "other"
    run_plan(other, steps=["harvest-1M"], cfg=Claim1Config(**{**TOY.__dict__, "d_sae": 64}),
             layer=3, log=quiet)
    with pytest.raises(ValueError, match="other settings"):
        joint_harvest([a, other])
    empty = tmp_path / "empty"
    run_plan(empty, steps=["summary"], cfg=TOY, layer=5, log=quiet)
    code, _, err = run_cli(["experiment", "claim1-harvest", a, empty], capsys)
    assert code != 0 and "run its harvest-1M step first" in err
    with pytest.raises(ValueError, match="at least two"):
        joint_harvest([a])
