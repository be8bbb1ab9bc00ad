"""Data-parallel training (gloo, 2 processes on this machine): N ranks against one process.

The ranks are forked by ``tests/ddp_worker.py`` (``env://`` rendezvous, as torchrun); one
test goes through ``abstopk train --nproc 2`` (real torchrun). Small SAE (d_in 32, d_sae 128,
k 8, batch 64) on a planted sparse dictionary, AuxK made active by a short ``dead_tokens``.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file

from abstopk.train.config import TrainConfig
from abstopk.train.distributed import rank_range
from abstopk.train.trainer import Trainer

sys.path.insert(0, str(Path(__file__).parent))
from ddp_worker import launch  # noqa: E402

CFG = dict(architecture="abstopk", d_sae=128, k=8, batch_size=64, steps=200, dead_tokens=64,
           aux_k=16, checkpoint_every=50, log_every=25, lr=1e-3, prefetch=0, seed=3)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> str:
    rng = np.random.default_rng(0)
    D = rng.standard_normal((256, 32))
    codes = (rng.random((4096, 256)) < 0.03) * rng.standard_normal((4096, 256))
    x = (codes @ D + 0.05 * rng.standard_normal((4096, 32))).astype(np.float32)
    p = tmp_path_factory.mktemp("ddp_data") / "x.npy"
    np.save(p, x)
    return str(p)


def single(data: str, out: Path | None = None, until: int | None = None, **over) -> Trainer:
    cfg = TrainConfig(**{**CFG, **over}, out=str(out) if out else None, progress=False)
    tr = Trainer(cfg, data)
    tr.fit(until=until)
    return tr


def state_of(tr: Trainer) -> dict[str, torch.Tensor]:
    st = {f"model.{k}": v.detach() for k, v in tr.sae.state_dict().items()}
    st["dead.tokens_since_fired"] = tr.state.tokens_since_fired
    return st


def rank_states(out: Path, world: int = 2) -> list[dict[str, torch.Tensor]]:
    return [load_file(str(out / "ranks" / f"rank{r}.safetensors")) for r in range(world)]


def rel_diff(a: dict, b: dict) -> dict[str, float]:
    return {k: float((a[k].double() - b[k].double()).norm() / b[k].double().norm().clamp_min(1e-30))
            for k in b if k.startswith("model.")}


def assert_ranks_identical(states: list[dict]) -> None:
    for st in states[1:]:
        for k, v in states[0].items():
            assert torch.equal(st[k], v), f"ranks differ in {k}"


@pytest.fixture(scope="module")
def reference(data) -> dict[str, torch.Tensor]:
    return state_of(single(data))


@pytest.fixture(scope="module")
def ddp_run(data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ddp") / "run"
    launch(2, data, str(out), CFG)
    return out


def test_rank_range_covers_every_row_once():
    for rows in (1, 2, 63, 64, 65, 4097):
        for world in (1, 2, 3, 8):
            if rows < world:
                continue
            parts = [rank_range(rows, r, world) for r in range(world)]
            assert parts[0][0] == 0 and parts[-1][1] == rows
            assert all(parts[r][1] == parts[r + 1][0] for r in range(world - 1))
            sizes = [hi - lo for lo, hi in parts]
            assert max(sizes) - min(sizes) <= 1 and min(sizes) >= 1


def test_two_ranks_equal_one_process(ddp_run, reference):
    states = rank_states(ddp_run)
    assert_ranks_identical(states)  # weights and AuxK dead counters, bit for bit
    diffs = rel_diff(states[0], reference)
    assert max(diffs.values()) <= 1e-6, diffs
    assert torch.equal(states[0]["dead.tokens_since_fired"], reference["dead.tokens_since_fired"])
    recs = [json.loads(s) for s in (ddp_run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in recs] == list(range(25, 201, 25))
    assert any(r["aux_loss"] > 0 for r in recs), "AuxK never ran: the test would not cover it"
    # the final SAE written by rank 0 is the in-memory one (scale folded on save)
    from abstopk.sae import SAE

    saved = SAE.load(ddp_run)
    assert saved.cfg.d_sae == 128 and (ddp_run / "checkpoint" / "latest.json").is_file()


def test_uneven_split_and_odd_batch_count(data, tmp_path):
    """65 rows per global batch (33 + 32 per rank) and 7 steps: finishes, equals one process,
    including the target-L0 controller (relu) and the geometric-median b_dec init."""
    over = dict(architecture="relu", k=None, target_l0=8.0, batch_size=65, steps=7,
                init_batches=2, b_dec_init="geometric_median", checkpoint_every=3, log_every=1)
    ref = state_of(single(data, **over))
    launch(2, data, str(tmp_path / "run"), {**CFG, **over})
    states = rank_states(tmp_path / "run")
    assert_ranks_identical(states)
    assert max(rel_diff(states[0], ref).values()) <= 1e-6
    recs = [json.loads(s) for s in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(recs) == 7 and recs[-1]["tokens"] == 7 * 65


def test_sigkill_then_resume_gives_the_uninterrupted_weights(data, ddp_run, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(mp.ProcessExitedException):
        launch(2, data, str(out), CFG, kill=(1, 120))
    assert json.loads((out / "checkpoint" / "latest.json").read_text())["step"] == 100
    assert not (out / "sae_weights.safetensors").exists()
    shutil.copytree(out, tmp_path / "copy_for_2to1")
    launch(2, data, str(out), {**CFG, "resume": True})
    assert (out / "resumed_rank0.txt").read_text() == "100 2"
    states = rank_states(out)
    assert_ranks_identical(states)
    full = rank_states(ddp_run)[0]
    for k, v in full.items():
        assert torch.equal(states[0][k], v), f"resumed run differs in {k}"
    steps = [json.loads(s)["step"] for s in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(25, 201, 25))  # the killed run's lines after step 100 dropped

    # the same checkpoint (written by 2 processes) resumed by one process
    tr = single(data, out=tmp_path / "copy_for_2to1", resume=True)
    assert tr.resumed_from == 100 and tr.resumed_world_size == 2
    assert max(rel_diff(state_of(tr), full).values()) <= 1e-6


def test_resume_one_process_into_two(data, reference, tmp_path):
    out = tmp_path / "run"
    tr = single(data, out=out, until=100)
    assert tr.step == 100 and not (out / "sae_weights.safetensors").exists()
    launch(2, data, str(out), {**CFG, "resume": True}, eval_hook=True)
    assert (out / "resumed_rank0.txt").read_text() == "100 1"
    states = rank_states(out)
    assert_ranks_identical(states)
    assert max(rel_diff(states[0], reference).values()) <= 1e-6
    evals = [json.loads(s) for s in (out / "metrics.jsonl").read_text().splitlines()
             if '"event"' in s]
    assert [e["step"] for e in evals] == [150, 200]  # rank 0's hook after each checkpoint
    assert all(abs(e["w_dec_norm_sum"] - 128.0) < 1e-3 for e in evals)


def test_hung_rank_becomes_an_error(data, tmp_path):
    out = tmp_path / "run"
    with pytest.raises((mp.ProcessExitedException, mp.ProcessRaisedException)):
        launch(2, data, str(out), {**CFG, "steps": 20}, timeout=4.0, hang=(1, 5))
    msg = (out / "error_rank0.txt").read_text()
    assert msg.startswith("rank 0 of 2: a collective failed or waited more than 4 s"), msg


def test_cli_nproc_2_launches_torchrun_and_matches_nproc_1(data, tmp_path, capfd):
    """``abstopk train --nproc 2 --resume`` (torchrun, 2 processes) continues a run one
    process stopped at step 20, says what it restored, and saves the SAE ``--nproc 1`` saves
    uninterrupted, to 1e-6."""
    from cli_runner import cli_code

    flags = dict(architecture="abstopk", d_sae=128, k=8, batch_size=64, steps=40,
                 dead_tokens=64, aux_k=16, checkpoint_every=20, lr=1e-3, seed=3)
    common = ["train", "--activations", data, "--no-progress", "--dist-timeout-s", "120"]
    for name, v in flags.items():
        common += [f"--{name.replace('_', '-')}", str(v)]
    assert cli_code([*common, "--out", tmp_path / "one"]) == 0
    part = Trainer(TrainConfig(**flags, activations=data, out=str(tmp_path / "two"),
                               progress=False), data)
    part.fit(until=20)
    capfd.readouterr()
    assert cli_code([*common, "--out", tmp_path / "two", "--nproc", "2", "--resume"]) == 0
    err = capfd.readouterr().err
    assert "launching 2 processes: torchrun --standalone --nproc-per-node=2" in err
    assert "resuming from step 20 (written by 1 process(es), resumed by 2): restored " in err
    one = load_file(str(tmp_path / "one" / "sae_weights.safetensors"))
    two = load_file(str(tmp_path / "two" / "sae_weights.safetensors"))
    assert max(rel_diff({f"model.{k}": v for k, v in two.items()},
                        {f"model.{k}": v for k, v in one.items()}).values()) <= 1e-6
    meta = json.loads((tmp_path / "two" / "checkpoint" / "step_000000040" / "state.json")
                      .read_text())
    assert meta["world_size"] == 2 and meta["step"] == 40


def test_resume_statement_names_what_is_preserved():
    from abstopk.train.distributed import resume_statement

    same = resume_statement(100, 2, 2)
    assert same.startswith("resuming from step 100 (2 process(es)): restored weights")
    for piece in ("Adam moments", "target-L0 controller state", "AuxK dead-latent counters",
                  "data position", "bit for bit"):
        assert piece in same
    changed = resume_statement(100, 2, 1)
    assert "written by 2 process(es), resumed by 1" in changed and "bit for bit" not in changed


def test_batch_level_operators_are_refused_with_two_ranks(data, tmp_path):
    out = tmp_path / "run"
    with pytest.raises((mp.ProcessExitedException, mp.ProcessRaisedException)):
        launch(2, data, str(out), {**CFG, "architecture": "batchabstopk"})
    # every rank refuses; the first to exit makes the launcher stop the other
    msgs = [p.read_text() for p in out.glob("error_rank*.txt")]
    assert msgs
    for msg in msgs:
        assert msg.startswith("batchabstopk selects its latents over the whole batch"), msg


def test_two_ranks_on_an_activation_cache(tmp_path):
    """From a cache (shuffle groups read whole, each rank keeping its rows of every batch):
    the same weights as one process."""
    from latent_cache import write_cache

    x = torch.from_numpy(np.load(_planted(tmp_path)))[:2048]
    cache = write_cache(tmp_path / "cache", x, torch.zeros(2048, dtype=torch.int64), 16, 512)
    over = dict(steps=30, checkpoint_every=10, log_every=10)
    ref = state_of(single(str(cache), **over))
    launch(2, str(cache), str(tmp_path / "run"), {**CFG, **over})
    states = rank_states(tmp_path / "run")
    assert_ranks_identical(states)
    assert max(rel_diff(states[0], ref).values()) <= 1e-6


def _planted(tmp_path: Path) -> str:
    rng = np.random.default_rng(1)
    D = rng.standard_normal((256, 32))
    codes = (rng.random((2048, 256)) < 0.03) * rng.standard_normal((2048, 256))
    p = tmp_path / "x.npy"
    np.save(p, (codes @ D).astype(np.float32))
    return str(p)


@pytest.mark.parametrize("arch", ["jumprelu", "topk"])
def test_other_operators_match_one_process(data, tmp_path, arch):
    """JumpReLU (learned threshold, ℓ0 pseudo-gradient, its own Adam group) and TopK: 12
    steps on 2 ranks equal one process."""
    over = dict(architecture=arch, k=8 if arch == "topk" else None, steps=12,
                checkpoint_every=6, log_every=6, dead_tokens=64)
    ref = state_of(single(data, **over))
    launch(2, data, str(tmp_path / "run"), {**CFG, **over})
    states = rank_states(tmp_path / "run")
    assert_ranks_identical(states)
    assert max(rel_diff(states[0], ref).values()) <= 1e-6
