"""The ``plan.json`` of a claim-1 run folder: what it records and when a later call may
continue the run it describes.

``plan.json`` = ``{"sizes": Claim1Config as a dict, "layer", "site", "context", "lrs",
"storage", "corpus_seed", "precision"}``, written on the first call. A later call must bring
the same plan, except (1) a learning-rate grid that only gains values at its end (the SAEs of
the old values are the same runs: the plan is rewritten and the sweep trains the new values)
and (2) a plan written before the layer or the precision was recorded, which is layer 6's in
float32. ``precision`` is the dtype the run computes in (:func:`plan_precision`): the LM
forward (harvest, loss recovered, KL) and the SAEs' encoder GEMM in training. Another layer
is refused before anything is written (:class:`~abstopk.errors.RunMismatchError`; SAE names
carry no layer, so one folder holds one layer); any other difference is refused with
``ValueError`` (the outputs would not be comparable).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from ..errors import RunMismatchError
from ..files import atomic_write_json

__all__ = ["DEFAULT_LAYER", "DEFAULT_PRECISION", "PRECISIONS", "plan_precision", "read_plan",
           "settle_plan"]

DEFAULT_LAYER = 6   # the layer of a plan.json without the field
DEFAULT_PRECISION = "float32"   # the precision of a new run and of a plan.json without the field
PRECISIONS = ("float32", "bfloat16", "auto")


def plan_precision(asked: str | None, old: dict | None) -> str:
    """The dtype a run computes in: ``asked`` resolved (``auto`` → bfloat16 where the CPU has
    bf16 units, :func:`abstopk.precision.resolve_dtype`), or, when ``asked`` is None, the one
    ``old`` (the run's plan) recorded, float32 for a new run. ``ValueError`` for another name
    and for a dtype other than the one the run was started in (its numbers would mix)."""
    from ..precision import resolve_dtype

    if asked is not None and asked not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {asked!r}")
    had = None if old is None else old.get("precision", DEFAULT_PRECISION)
    if asked is None:
        return had or DEFAULT_PRECISION
    got = resolve_dtype(asked, "cpu")
    if had is not None and got != had:
        raise ValueError(f"the run was started in {had}, not {got} (asked: {asked}); "
                         f"continue it in {had} (the run's own precision) or use another "
                         "folder")
    return got


def read_plan(out: Path, layer: int) -> dict | None:
    """``out/plan.json`` with ``layer`` filled in when missing, or None when there is none;
    :class:`RunMismatchError` when it is the run of another layer than ``layer``."""
    if not (out / "plan.json").is_file():
        return None
    old = {"layer": DEFAULT_LAYER, "precision": DEFAULT_PRECISION,
           **json.loads((out / "plan.json").read_text())}
    if old["layer"] != layer:
        raise RunMismatchError(f"{out} holds the claim-1 run of layer {old['layer']}, not "
                               f"layer {layer}; use one folder per layer")
    return old


def _grid_extended(old: dict, new: dict) -> bool:
    """True when ``new`` only appends learning rates to ``old``'s grid (everything else equal)."""
    lo, ln = old.get("lrs", []), new["lrs"]
    return ({k: v for k, v in old.items() if k != "lrs"} == {k: v for k, v in new.items()
                                                            if k != "lrs"}
            and len(lo) < len(ln) and list(ln[:len(lo)]) == list(lo))


def settle_plan(out: Path, old: dict | None, plan: dict, log: Callable[[str], None]) -> None:
    """Write ``plan`` as ``out/plan.json`` when there was none (``old`` None) or when it only
    extends ``old``'s learning-rate grid; keep an equal one as it is (a plan without the
    layer or precision field stays without it); refuse any other (``ValueError``)."""
    if old is None:
        atomic_write_json(out / "plan.json", plan)
    elif _grid_extended(old, plan):
        log(f"learning-rate grid extended from {old['lrs']} to {plan['lrs']}: the sweep "
            "trains the new values, its finished SAEs are kept")
        atomic_write_json(out / "plan.json", plan)
    elif old != plan:
        raise ValueError(f"{out} holds a claim-1 run with other settings "
                         f"({out / 'plan.json'}); continue it with the same ones or use "
                         "another folder")
