"""`abstopk train`: the happy path, one-line errors with exit code 2, and a real kill + resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from abstopk import cli
from abstopk.sae import SAE

SMALL = ["--k", "4", "--d-sae", "64", "--steps", "40", "--batch-size", "64", "--lr", "3e-3",
         "--no-progress", "--log-every", "20"]


@pytest.fixture()
def acts(tmp_path):
    g = np.random.default_rng(0)
    D = g.normal(size=(32, 16))
    D /= np.linalg.norm(D, axis=1, keepdims=True)
    z = g.normal(size=(2000, 32)) * (g.random((2000, 32)) < 0.15)
    x = (z @ D + 3.0).astype(np.float32)
    path = tmp_path / "acts.npy"
    np.save(path, x)
    return path, x


def run_cli(argv, capsys):
    """Run ``abstopk`` in-process; return (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    out, err = capsys.readouterr()
    return e.value.code, out, err


def test_train_happy_path_writes_a_loadable_sae(acts, tmp_path, capsys):
    path, x = acts
    out = tmp_path / "run"
    code, stdout, _ = run_cli(["train", "--activations", str(path), "--out", str(out),
                               "--architecture", "abstopk", "--seed", "3", *SMALL], capsys)
    assert code == 0, stdout
    assert f"saved abstopk SAE (d_sae 64) to {out}" in stdout
    for f in ("cfg.json", "sae_weights.safetensors", "train_config.json", "metrics.jsonl"):
        assert (out / f).is_file(), f
    sae = SAE.load(out)
    assert (sae.cfg.architecture, sae.cfg.d_in, sae.cfg.d_sae, sae.cfg.k) == ("abstopk", 16, 64, 4)
    assert json.loads((out / "train_config.json").read_text())["seed"] == 3
    xt = torch.from_numpy(x[:200])
    with torch.no_grad():
        nmse = (sae(xt).x_hat - xt).pow(2).sum() / (xt - xt.mean(0)).pow(2).sum()
    assert nmse < 0.9  # raw activations (mean 3, scale folded) are reconstructed


def test_train_help_comes_from_config_docs():
    from typer.testing import CliRunner

    from abstopk.fields import field_help
    from abstopk.train.config import TrainConfig

    cli._register()
    res = CliRunner().invoke(cli.app, ["train", "--help"], terminal_width=200)
    assert res.exit_code == 0
    text = " ".join(res.output.replace("│", " ").split())  # undo rich's box and wrapping
    assert "--target-l0" in text and "--skip-nonfinite" in text and "--resume" in text
    assert " ".join(field_help(TrainConfig, "dead_tokens").split())[:30] in text


@pytest.mark.parametrize("case", ["missing", "cube", "nan", "arch", "k", "d_in", "both",
                                  "nocache"])
def test_bad_input_is_one_line_and_exit_code_2(case, acts, tmp_path, capsys):
    path, x = acts
    argv = ["train", "--activations", str(path), "--out", str(tmp_path / "o"), *SMALL]
    expect = {
        "missing": "no such file",
        "cube": r"expected a 2-D matrix [N, d_in], got shape (2, 3, 4)",
        "nan": "3 of 2000 rows hold NaN/Inf values (use --skip-nonfinite",
        "arch": "unknown architecture 'bogus'",
        "k": "k = 65 exceeds d_sae = 64",
        "d_in": "data has d_in = 16 but the config expects d_in = 17",
        "both": "give exactly one of --activations FILE and --cache FOLDER",
        "nocache": "not an activation cache (no manifest.json)",
    }[case]
    if case == "missing":
        argv[2] = str(tmp_path / "nope.npy")
    elif case == "cube":
        np.save(tmp_path / "cube.npy", np.zeros((2, 3, 4), np.float32))
        argv[2] = str(tmp_path / "cube.npy")
    elif case == "nan":
        bad = x.copy()
        bad[[5, 50, 500], 2] = [np.nan, np.inf, -np.inf]
        np.save(tmp_path / "bad.npy", bad)
        argv[2] = str(tmp_path / "bad.npy")
    elif case == "arch":
        argv += ["--architecture", "bogus"]
    elif case == "k":
        argv += ["--k", "65"]
    elif case == "d_in":
        argv += ["--d-in", "17"]
    elif case == "both":
        argv += ["--cache", str(tmp_path)]
    elif case == "nocache":
        argv[1:3] = ["--cache", str(tmp_path)]
    code, _, err = run_cli(argv, capsys)
    assert code == 2
    lines = [s for s in err.splitlines() if s.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and expect in lines[0], err
    assert not (tmp_path / "o" / "sae_weights.safetensors").exists()


def test_skip_nonfinite_drops_rows_and_trains(acts, tmp_path, capsys):
    path, x = acts
    bad = x.copy()
    bad[[1, 2], 0] = np.nan
    np.save(tmp_path / "bad.npy", bad)
    code, _, err = run_cli(["train", "--activations", str(tmp_path / "bad.npy"),
                            "--out", str(tmp_path / "o"), "--skip-nonfinite", *SMALL], capsys)
    assert code == 0 and "skipping 2 rows holding NaN/Inf values" in err
    sae = SAE.load(tmp_path / "o")
    assert all(torch.isfinite(t).all() for t in sae.state_dict().values())


def test_out_dir_of_a_different_run_is_refused(acts, tmp_path, capsys):
    path, _ = acts
    out = str(tmp_path / "o")
    assert run_cli(["train", "--activations", str(path), "--out", out, *SMALL], capsys)[0] == 0
    before = (tmp_path / "o" / "sae_weights.safetensors").read_bytes()
    code, _, err = run_cli(["train", "--activations", str(path), "--out", out, *SMALL,
                            "--lr", "1e-3", "--resume"], capsys)
    assert code == 2 and "already holds a different run (lr: 0.003 → 0.001)" in err
    code, _, err = run_cli(["train", "--activations", str(path), "--out", out, *SMALL], capsys)
    assert code == 2 and "pass --resume" in err
    assert (tmp_path / "o" / "sae_weights.safetensors").read_bytes() == before  # untouched
    code, _, _ = run_cli(["train", "--activations", str(path), "--out", out, *SMALL,
                          "--resume"], capsys)
    assert code == 0  # same run + --resume is fine


@pytest.mark.parametrize("arch,sparsity", [
    ("abstopk", {"k": 8}),
    ("jumprelu", {"target_l0": 8.0}),       # L0 controller and thresholds in the state
    ("batchtopk", {"k": 8}),                # EMA inference threshold buffer
    ("batchabstopk", {"k": 8}),
])
def test_sigkill_after_checkpoint_then_resume_gives_identical_weights(tmp_path, arch, sparsity):
    """Real crash: SIGKILL the CLI once the step-100 checkpoint is on disk, rerun the same
    command with --resume, and compare with an uninterrupted 200-step run (torch.equal),
    for AbsTopK, JumpReLU and the two batch operators."""
    g = np.random.default_rng(1)
    x = (g.normal(size=(4096, 64)) * (g.random((4096, 64)) < 0.3)).astype(np.float32)
    data = tmp_path / "acts.npy"
    np.save(data, x)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}

    flags = [f for key, v in sparsity.items() for f in (f"--{key.replace('_', '-')}", str(v))]

    def cmd(out, *extra):
        return [sys.executable, "-m", "abstopk.cli", "train", "--activations", str(data),
                "--out", str(out), "--architecture", arch, *flags, "--d-sae", "512",
                "--steps", "200", "--batch-size", "512", "--lr", "2e-3", "--seed", "7",
                "--checkpoint-every", "100", "--log-every", "10", "--no-progress", *extra]

    # the uninterrupted run, in this process (one thread, like the subprocesses)
    from abstopk.train.config import TrainConfig
    from abstopk.train.trainer import Trainer

    straight = tmp_path / "straight"
    Trainer(TrainConfig(architecture=arch, **sparsity, d_sae=512, steps=200, batch_size=512,
                        lr=2e-3, seed=7, checkpoint_every=100, log_every=10, progress=False,
                        out=str(straight)), str(data)).fit()

    crashed = tmp_path / "crashed"
    proc = subprocess.Popen(cmd(crashed), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    latest = crashed / "checkpoint" / "latest.json"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if latest.is_file() and json.loads(latest.read_text())["step"] == 100:
            break
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL, "the run ended before it could be killed"
    assert json.loads(latest.read_text())["step"] == 100
    assert not (crashed / "sae_weights.safetensors").exists()

    res = subprocess.run(cmd(crashed, "--resume"), env=env, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr
    assert "resuming from step 100" in res.stderr
    a, b = SAE.load(straight), SAE.load(crashed)
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for name in sa:                         # weights and buffers (thresholds) alike
        assert torch.equal(sa[name], sb[name]) or (
            torch.isnan(sa[name]).all() and torch.isnan(sb[name]).all()), name
    if arch.startswith("batch") or arch == "jumprelu":
        assert "threshold" in sa and torch.isfinite(sa["threshold"]).all()
    steps = [json.loads(s)["step"] for s in (crashed / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(10, 201, 10))  # no duplicate lines from the killed run
