"""``abstopk analyze latents`` / ``analyze pairs`` from the command line."""

from __future__ import annotations

import json

import pytest
import torch
from cli_runner import run_cli
from latent_cache import write_cache

from abstopk.sae import SAE, SAEConfig


def test_version1_cache_refused_in_one_line(tmp_path, capsys):
    p = write_cache(tmp_path / "v1", torch.randn(30, 8), torch.zeros(30, dtype=torch.int64),
                    10, 16, positions=False)
    SAE(SAEConfig(d_in=8, d_sae=16, architecture="abstopk", k=2, model_name="smollm2-135m"),
        seed=0).save(tmp_path / "sae")
    code, _, err = run_cli(["analyze", "latents", "--sae", tmp_path / "sae", "--cache", p,
                            "--out", tmp_path / "stats"], capsys)
    assert code == 2 and err.startswith("error: ") and "harvest it again" in err
    assert len(err.strip().splitlines()) == 1
    code, _, err = run_cli(["analyze", "latents", "--sae", tmp_path / "sae", "--cache", p,
                            "--out", tmp_path / "sae" / "x"], capsys)
    assert code == 2 and "inside the input" in err


@pytest.mark.slow
def test_pairs_command_on_embedded_model(tmp_path, capsys):
    """A random 576-wide AbsTopK SAE at layer 3 of SmolLM2: the table and the JSON agree."""
    SAE(SAEConfig(d_in=576, d_sae=256, architecture="abstopk", k=16, model_name="smollm2-135m",
                  hook_layer=3, hook_site="resid_post"), seed=0).save(tmp_path / "sae")
    code, out, err = run_cli(["analyze", "pairs", "--sae", tmp_path / "sae", "--json",
                              tmp_path / "pairs.json"], capsys)
    assert code == 0, err
    r = json.loads((tmp_path / "pairs.json").read_text())[str(tmp_path / "sae")]
    assert r["pairs"] >= 100 and len(r["per_pair"]) == r["pairs"]
    assert r["covered"] == sum(1 for p in r["per_pair"] if p["latents"])
    for p in r["per_pair"]:
        assert all(a * b < 0 for a, b in zip(p["z_a"], p["z_b"], strict=True))
    code, _, err = run_cli(["analyze", "pairs", "--sae", tmp_path / "sae", "--json",
                            tmp_path / "pairs.json"], capsys)
    assert code == 2 and "--force" in err
