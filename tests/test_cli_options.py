"""CLI options generated from the config dataclasses: every field, its default and help,
the old flag spellings, list values and ``--device auto``."""

from __future__ import annotations

import dataclasses

import pytest
import typer
from typer.testing import CliRunner

from abstopk import cli
from abstopk.analysis.synthetic import BenchConfig, SyntheticConfig
from abstopk.commands.options import ALIASES, config_kwargs, config_options, resolve_device
from abstopk.data.harvest import HarvestConfig
from abstopk.experiments.checkpoint_eval import CheckpointEvalConfig
from abstopk.experiments.sweep_config import SweepConfig
from abstopk.fields import doc_field
from abstopk.train.config import TrainConfig
from abstopk.train.distributed import DistConfig


def _command(path: tuple[str, ...]):
    cli._register()
    cmd = typer.main.get_command(cli.app)
    for name in path:
        cmd = cmd.commands[name]
    return cmd


COMMANDS = [
    (("train",), (TrainConfig, DistConfig, CheckpointEvalConfig)),
    (("harvest",), (HarvestConfig,)),
    (("sweep",), (SweepConfig,)),
    (("bench", "synthetic"), (BenchConfig, SyntheticConfig)),
]


@pytest.mark.parametrize(("path", "classes"), COMMANDS, ids=[" ".join(c[0]) for c in COMMANDS])
def test_every_config_field_is_an_option(path, classes):
    params = {p.name: p for p in _command(path).params}
    for cls in classes:
        missing = [f.name for f in dataclasses.fields(cls) if f.name not in params]
        assert not missing, (cls.__name__, missing)


@pytest.mark.parametrize(("path", "classes"), COMMANDS, ids=[" ".join(c[0]) for c in COMMANDS])
def test_generated_defaults_and_help_are_the_config_fields(path, classes):
    cmd = _command(path)
    params = {p.name: p for p in cmd.params}
    assert cmd.callback.config_fields
    for name in cmd.callback.config_fields:
        # the first class holding the field gives its default and help
        f = next(f for cls in classes for f in dataclasses.fields(cls) if f.name == name)
        want = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        if isinstance(want, (list, tuple)):
            want = ",".join(str(x) for x in want)
        assert params[name].default == want, (name, params[name].default, want)
        assert params[name].help.startswith(f.metadata["help"]), name


def test_old_spellings_keep_working():
    opts = {o for p in _command(("train",)).params for o in (*p.opts, *p.secondary_opts)}
    for flag in ("--normalize", "--normalize-activations", "--warmup-frac", "--decay-frac",
                 "--beta1", "--beta2", "--bf16", "--autocast", "--resume",
                 "--no-resume", "--skip-nonfinite", "--progress", "--no-progress",
                 "--threshold-lr-factor", "--adam-eps", "--prefetch", "--init-batches",
                 "--l0-controller-kp", "--penalty-coeff-max", "--jumprelu-bandwidth",
                 "--lr-min-factor", "--l0-ema-beta", "--penalty-coeff-min",
                 "--jumprelu-init-threshold", "--l0-controller-ki", "--force"):
        assert flag in opts, flag
    hopts = {o for p in _command(("harvest",)).params for o in p.opts}
    assert {"--layer", "--layers", "--force", "--keep-bos"} <= hopts
    for path in (("train",), ("harvest",), ("sweep",), ("eval",), ("export",),
                 ("bench", "synthetic"), ("demo",)):
        opts = {o for p in _command(path).params for o in p.opts}
        assert {"--out", "--force"} <= opts, path
    for path in (("eval",), ("export",)):
        assert "--sae" in {o for p in _command(path).params for o in p.opts}
    for path in (("train",), ("harvest",), ("sweep",), ("eval",)):
        dev = next(p for p in _command(path).params if p.name == "device")
        assert "auto" in dev.help, path
    assert set(ALIASES) <= {f.name for f in dataclasses.fields(TrainConfig)} | {"layers"}


@dataclasses.dataclass
class Toy:
    """A config to exercise every kind of generated option."""

    n: int = doc_field("An integer.", 3)
    ks: list[int] = doc_field("Integers.", [1, 2])
    targets: list[float] | None = doc_field("Optional numbers.", None)
    names: tuple[str, ...] = doc_field("Names.", ("a", "b"))
    rate: float | None = doc_field("Optional rate.", None)
    flag: bool = doc_field("A switch.", False)
    device: str = doc_field("Torch device.", "cpu")

    def __post_init__(self):
        if self.n < 0:
            raise ValueError("n must be ≥ 0")


def _toy_app(seen: list):
    app = typer.Typer()

    @app.command()
    @config_options(Toy)
    def run(extra: str = typer.Option("x", "--extra", help="Declared by hand."), **fields):
        seen.append((extra, Toy(**config_kwargs(Toy, fields))))

    return app


def test_generated_options_parse_values():
    seen: list = []
    app = _toy_app(seen)
    r = CliRunner().invoke(app, [])
    assert r.exit_code == 0, r.output
    assert seen[-1] == ("x", Toy())
    r = CliRunner().invoke(app, ["--n", "5", "--ks", "4, 8,16", "--targets", "1.5,2",
                                 "--names", "p,q,r", "--rate", "0.1", "--flag",
                                 "--device", "auto", "--extra", "y"])
    assert r.exit_code == 0, r.output
    assert seen[-1] == ("y", Toy(n=5, ks=[4, 8, 16], targets=[1.5, 2.0], names=("p", "q", "r"),
                                 rate=0.1, flag=True, device=resolve_device("auto")))
    assert resolve_device("auto") in ("cpu", "cuda") and resolve_device("cuda:1") == "cuda:1"
    r = CliRunner().invoke(app, ["--ks", "4,x"])
    assert r.exit_code != 0 and "--ks: expected integers separated by commas" in repr(r.exception)
    r = CliRunner().invoke(app, ["--help"], terminal_width=200)
    text = " ".join(r.output.replace("│", " ").split())
    for h in ("An integer.", "Integers.", "Optional numbers.", "A switch.", "--no-flag",
              "'auto': cuda when available"):
        assert h in text, h
