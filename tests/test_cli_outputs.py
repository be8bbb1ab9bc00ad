"""The one ``--out`` rule of the CLI: never write into the input, never replace a finished
artefact without ``--force`` (or ``--resume``); otherwise one line on stderr and exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from cli_runner import run_cli

from abstopk.sae import SAE, SAEConfig


def assert_refused(code: int, err: str, *needles: str) -> None:
    lines = [s for s in err.splitlines() if s.strip()]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for n in needles:
        assert n in lines[0], (n, err)


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file below ``folder`` (relative path → bytes)."""
    return {str(p.relative_to(folder)): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def save_sae(path: Path, arch: str = "abstopk", seed: int = 0) -> Path:
    SAE(SAEConfig(d_in=8, d_sae=16, architecture=arch, k=3 if "topk" in arch else None,
                  model_name="smollm2-135m", hook_layer=2, hook_site="resid_post"),
        seed=seed).save(path)
    return path


# --------------------------------------------------------------------------- export
@pytest.mark.parametrize("argv", [
    ["export", "--format", "saelens", "{a}", "{a}"],
    ["export", "--sae", "{a}", "--out", "{a}"],
    ["export", "--sae", "{a}", "--out", "{a}", "--force"],
    ["export", "--sae", "{a}", "--out", "{a}/sub"],
])
def test_export_onto_its_own_input_is_refused(argv, tmp_path, capsys):
    a = save_sae(tmp_path / "sae")
    before = snapshot(a)
    code, _, err = run_cli([s.format(a=a) for s in argv], capsys)
    assert_refused(code, err, "input")
    assert snapshot(a) == before


def test_export_onto_another_sae_is_refused_without_force(tmp_path, capsys):
    a = save_sae(tmp_path / "a", seed=0)
    b = save_sae(tmp_path / "b", "topk", seed=1)
    before_a, before_b = snapshot(a), snapshot(b)
    code, _, err = run_cli(["export", "--sae", a, "--out", b], capsys)
    assert_refused(code, err, str(b), "already holds an SAE", "--force")
    code, _, err = run_cli(["export", a, b], capsys)      # the positional form too
    assert_refused(code, err, "--force")
    assert snapshot(a) == before_a and snapshot(b) == before_b
    # --force replaces it with the export; the input stays as it was
    code, out, err = run_cli(["export", "--sae", a, "--out", b, "--force"], capsys)
    assert code == 0, err
    assert json.loads((b / "cfg.json").read_text())["architecture"] == "topk"
    assert json.loads((b / "cfg.json").read_text())["d_sae"] == 32
    assert snapshot(a) == before_a


def test_export_twice_needs_force_and_positional_equals_options(tmp_path, capsys):
    a = save_sae(tmp_path / "a")
    assert run_cli(["export", a, tmp_path / "e1"], capsys)[0] == 0
    assert run_cli(["export", "--sae", a, "--out", tmp_path / "e2"], capsys)[0] == 0
    assert snapshot(tmp_path / "e1") == snapshot(tmp_path / "e2")
    before = snapshot(tmp_path / "e1")
    code, _, err = run_cli(["export", "--sae", a, "--out", tmp_path / "e1"], capsys)
    assert_refused(code, err, "--force")
    assert snapshot(tmp_path / "e1") == before
    code, _, err = run_cli(["export", "--sae", a, "--out", tmp_path / "e3", tmp_path / "x"],
                           capsys)
    assert code == 2 and "not both" in err
    assert not (tmp_path / "e3").exists() and not (tmp_path / "x").exists()
    # an existing empty folder is not a finished artefact
    (tmp_path / "empty").mkdir()
    assert run_cli(["export", "--sae", a, "--out", tmp_path / "empty"], capsys)[0] == 0


def test_export_metadata_for_saelens(tmp_path, capsys):
    a = save_sae(tmp_path / "a")
    assert run_cli(["export", "--sae", a, "--out", tmp_path / "e"], capsys)[0] == 0
    md = json.loads((tmp_path / "e" / "cfg.json").read_text())["metadata"]
    assert md["hook_name"] == "blocks.2.hook_resid_post" and md["hook_layer"] == 2
    assert md["model_name"] == "smollm2-135m" and md["hook_head_index"] is None
    assert md["prepend_bos"] is True and md["exclude_special_tokens"] is True
    assert md["model_class_name"] == "HookedTransformer"
    assert md["model_from_pretrained_kwargs"] == {} and md["seqpos_slice"] == [None]
    # an explicit hook name also sets the layer
    assert run_cli(["export", "--sae", a, "--out", tmp_path / "f", "--hook-name",
                    "blocks.5.hook_resid_pre"], capsys)[0] == 0
    md = json.loads((tmp_path / "f" / "cfg.json").read_text())["metadata"]
    assert (md["hook_name"], md["hook_layer"]) == ("blocks.5.hook_resid_pre", 5)


def test_export_without_hook_metadata_warns():
    from abstopk.export import to_saelens

    sae = SAE(SAEConfig(d_in=8, d_sae=16, architecture="topk", k=3))
    with pytest.warns(UserWarning, match="no hook name and no model name"):
        md = to_saelens(sae)[0]["metadata"]
    assert md["hook_name"] is None
    md = to_saelens(sae, model_name="m", hook_name="blocks.1.hook_mlp_out")[0]["metadata"]
    assert (md["model_name"], md["hook_layer"]) == ("m", 1)


# --------------------------------------------------------------------------- train
def test_train_refuses_a_finished_run_and_force_replaces_it(tmp_path, capsys):
    g = np.random.default_rng(0)
    x = g.normal(size=(512, 8)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    small = ["--k", "2", "--d-sae", "16", "--steps", "6", "--batch-size", "64",
             "--no-progress", "--log-every", "3"]
    out = tmp_path / "run"
    assert run_cli(["train", "--activations", tmp_path / "x.npy", "--out", out, *small],
                   capsys)[0] == 0
    before = snapshot(out)
    code, _, err = run_cli(["train", "--activations", tmp_path / "x.npy", "--out", out,
                            *small, "--seed", "1"], capsys)
    assert_refused(code, err, "already holds a trained SAE", "--force", "--resume")
    assert snapshot(out) == before
    code, _, err = run_cli(["train", "--activations", tmp_path / "x.npy", "--out", out,
                            *small, "--seed", "1", "--force", "--resume"], capsys)
    assert code == 2 and "at most one of --force" in err
    code, _, err = run_cli(["train", "--activations", tmp_path / "x.npy", "--out", out,
                            *small, "--seed", "1", "--force"], capsys)
    assert code == 0, err
    assert json.loads((out / "train_config.json").read_text())["seed"] == 1
    steps = [json.loads(s)["step"] for s in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == [3, 6]   # the old run's metrics are gone
    # its own input: the activation file, or a folder inside the input cache
    data_before = (tmp_path / "x.npy").read_bytes()
    code, _, err = run_cli(["train", "--activations", tmp_path / "x.npy",
                            "--out", tmp_path / "x.npy", *small], capsys)
    assert_refused(code, err, "input")
    assert (tmp_path / "x.npy").read_bytes() == data_before


# --------------------------------------------------------------------------- harvest
def _complete_cache(path: Path, rows: int = 0) -> Path:
    from abstopk.data.cache import CacheWriter

    header = {"model": "smollm2-135m", "model_revision": "abc", "layer": 1,
              "site": "resid_post", "hook_name": "blocks.1.hook_resid_post", "d_in": 8,
              "dtype": "float32", "context_size": 16, "keep_bos": False, "batch_size": 2,
              "corpus": {}, "requested_tokens": rows}
    CacheWriter(path, header).set(complete=True)
    return path


def test_harvest_refuses_to_start_a_complete_cache_over_without_force(tmp_path, capsys):
    c = _complete_cache(tmp_path / "c")
    before = snapshot(c)
    code, _, err = run_cli(["harvest", "--out", c, "--no-resume", "--layer", "1",
                            "--no-progress"], capsys)
    assert_refused(code, err, "complete activation cache", "--force")
    assert snapshot(c) == before
    (tmp_path / "t.txt").write_text("some text\n\nmore text\n")
    code, _, err = run_cli(["harvest", "--corpus", tmp_path / "t.txt",
                            "--out", tmp_path / "t.txt"], capsys)
    assert_refused(code, err, "input")
    code, _, err = run_cli(["harvest", "--out", tmp_path / "d", "--layer", "1,x"], capsys)
    assert_refused(code, err, "--layer: expected integers separated by commas")


def test_harvest_library_messages_name_no_flag():
    from abstopk.data.harvest import parse_layers
    from abstopk.errors import UserError

    with pytest.raises(UserError) as e:
        parse_layers("3,x")
    assert "--" not in str(e.value)
    src = (Path(__file__).parents[1] / "src/abstopk/data/harvest.py").read_text()
    for flag in ("--layer", "--tokens", "--out", "--no-resume"):
        assert f'Error(f"{flag}' not in src and f'another {flag}' not in src


# --------------------------------------------------------------------------- eval
def test_eval_refuses_an_existing_json_and_the_sae_files(tmp_path, capsys):
    a = save_sae(tmp_path / "a")
    before = snapshot(a)
    (tmp_path / "r.json").write_text("{}")
    for flag in ("--json", "--out"):
        code, _, err = run_cli(["eval", "--sae", a, flag, tmp_path / "r.json",
                                "--tokens", "0", "--contexts", "0"], capsys)
        assert_refused(code, err, "already holds an evaluation result", "--force")
    assert (tmp_path / "r.json").read_text() == "{}"
    code, _, err = run_cli(["eval", "--sae", a, "--json", a / "cfg.json"], capsys)
    assert_refused(code, err, "input")
    assert snapshot(a) == before


# --------------------------------------------------------------------------- sweep, bench, demo
def test_sweep_refuses_a_finished_sweep_and_its_input(tmp_path, capsys):
    out = tmp_path / "sw"
    out.mkdir()
    (out / "sweep.json").write_text("{}")
    code, _, err = run_cli(["sweep", "--out", out, "--no-progress"], capsys)
    assert_refused(code, err, "already holds a finished sweep", "--force")
    assert (out / "sweep.json").read_text() == "{}"
    c = _complete_cache(tmp_path / "c")
    code, _, err = run_cli(["sweep", "--cache", c, "--out", c], capsys)
    assert_refused(code, err, "input")


def test_bench_refuses_existing_results_without_force(tmp_path, capsys):
    (tmp_path / "r.json").write_text("old")
    tiny = ["bench", "synthetic", "--steps", "5", "--d", "8", "--n-features", "8",
            "--n-train", "256", "--n-test", "128", "--architectures", "topk", "--k", "2",
            "--no-progress"]
    code, _, err = run_cli([*tiny, "--json", tmp_path / "r.json"], capsys)
    assert_refused(code, err, "already holds benchmark results", "--force")
    assert (tmp_path / "r.json").read_text() == "old"
    code, _, err = run_cli([*tiny, "--json", tmp_path / "r.json", "--force"], capsys)
    assert code == 0, err
    assert json.loads((tmp_path / "r.json").read_text())["bench"]["steps"] == 5
    # --out DIR writes the demo's file names
    assert run_cli([*tiny, "--out", tmp_path / "o"], capsys)[0] == 0
    assert (tmp_path / "o" / "synthetic.json").is_file()
    assert (tmp_path / "o" / "synthetic.md").is_file()
    code, _, err = run_cli([*tiny, "--out", tmp_path / "o"], capsys)
    assert_refused(code, err, "--force")


def test_demo_refuses_an_earlier_demo_without_force(tmp_path, capsys):
    out = tmp_path / "demo"
    out.mkdir()
    (out / "synthetic.json").write_text("{}")
    code, _, err = run_cli(["demo", "--out", out], capsys)
    assert_refused(code, err, "earlier demo", "--force")
    assert (out / "synthetic.json").read_text() == "{}"


def test_a_file_where_a_folder_is_needed(tmp_path, capsys):
    (tmp_path / "f").write_text("x")
    for argv in (["demo", "--out", tmp_path / "f"],
                 ["sweep", "--out", tmp_path / "f"],
                 ["harvest", "--out", tmp_path / "f"]):
        code, _, err = run_cli(argv, capsys)
        assert_refused(code, err, "is not a folder")
    assert (tmp_path / "f").read_text() == "x"
