"""Probing tasks in the spirit of SAEBench, offline and sign-aware (docs/probing.md).

``TASKS[name](sae, model, tokenizer, *, device="cpu", n_examples=..., seed=0, **kw) -> dict``
returns JSON-serialisable numbers including a ``"summary"`` score:

===================  ==============================================  ===========================
name                 what                                            summary (better)
===================  ==============================================  ===========================
``sparse_probing``   top-k latents (k = 1, 2, 5) by the separation   signed-variant top-1
                     of signed z (and by the class-mean difference   accuracy (higher)
                     of |z|) → logistic probe vs a probe on the
                     raw residual stream
``absorption``       first-letter task on the tokenizer vocabulary   mean absorption fraction
                                                                     (lower)
``scr``              spurious correlation removal, VADER sentiment   normalised SCR at n = 20
                     × source                                        (higher)
``tpp``              targeted probe perturbation, VADER sources      TPP at n = 20 (higher)
===================  ==============================================  ===========================

The SAE is an :class:`abstopk.sae.SAE`; its ``cfg.hook_layer``/``hook_site`` choose the LM
site (pass ``layer=``/``site=`` when the cfg records none). Labelled data:
:mod:`abstopk.data.labelled` (set-up: ``abstopk data fetch probing``), split into tasks by
:mod:`.tasks`. Importing this package is light.
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["TASKS", "absorption", "scr", "sparse_probing", "tpp"]


def sparse_probing(sae, model, tokenizer, *, device: str = "cpu", n_examples: int = 2000,
                   seed: int = 0, **kw) -> dict:
    """Sparse probing (:func:`.sparse_probing.run_sparse_probing`); ``n_examples`` per task."""
    from .sparse_probing import run_sparse_probing

    return run_sparse_probing(sae, model, tokenizer, device=device, n_examples=n_examples,
                              seed=seed, **kw)


def absorption(sae, model, tokenizer, *, device: str = "cpu", n_examples: int = 1000,
               seed: int = 0, **kw) -> dict:
    """First-letter absorption (:func:`.absorption.run_absorption`); ``n_examples`` words."""
    from .absorption import run_absorption

    return run_absorption(sae, model, tokenizer, device=device, n_words=n_examples, seed=seed,
                          **kw)


def scr(sae, model, tokenizer, *, device: str = "cpu", n_examples: int = 800, seed: int = 0,
        **kw) -> dict:
    """SCR (:func:`.scr_tpp.run_scr`); ``n_examples`` sentences per attribute pair."""
    from .scr_tpp import run_scr

    return run_scr(sae, model, tokenizer, device=device, n_examples=n_examples, seed=seed, **kw)


def tpp(sae, model, tokenizer, *, device: str = "cpu", n_examples: int = 800, seed: int = 0,
        **kw) -> dict:
    """TPP (:func:`.scr_tpp.run_tpp`); ``n_examples`` sentences, balanced over classes."""
    from .scr_tpp import run_tpp

    return run_tpp(sae, model, tokenizer, device=device, n_examples=n_examples, seed=seed, **kw)


TASKS: dict[str, Callable[..., dict]] = {
    "sparse_probing": sparse_probing,
    "absorption": absorption,
    "scr": scr,
    "tpp": tpp,
}
