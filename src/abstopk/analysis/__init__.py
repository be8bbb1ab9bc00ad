"""Analyses of trained SAEs: the synthetic ground-truth benchmark, per-latent statistics
(:mod:`.latent_stats`), the bidirectionality proxy and its planted-feature validation,
minimal pairs.

Submodules are imported lazily so that ``import abstopk.analysis`` stays light.
"""

__all__ = ["bidirectionality", "latent_stats", "minimal_pairs", "planted", "synthetic"]
