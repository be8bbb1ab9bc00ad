"""abstopk: sparse autoencoders as proximal operators, with signed (AbsTopK) latents.

The core import is light: ``from abstopk import SAE, SAEConfig`` pulls in torch and
safetensors only; the LM pipeline, evaluation and CLI load their dependencies lazily.
"""

__version__ = "0.1.0"

__all__ = ["SAE", "SAEConfig", "SAEOutput", "__version__"]


def __getattr__(name: str):
    if name in ("SAE", "SAEConfig", "SAEOutput"):
        from . import sae

        return getattr(sae, name)
    raise AttributeError(f"module 'abstopk' has no attribute {name!r}")
