"""Analyses of trained SAEs: the synthetic ground-truth benchmark (and, later, bidirectionality).

Submodules are imported lazily so that ``import abstopk.analysis`` stays light.
"""

__all__ = ["synthetic"]
