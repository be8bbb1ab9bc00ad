"""The sparse autoencoder (:mod:`.model`) and its config (:mod:`.config`).

``from abstopk.sae import SAE, SAEConfig`` is the public entry point.
"""

from .config import CFG_FILE, NORMALIZATIONS, WEIGHTS_FILE, SAEConfig
from .model import SAE, SAEOutput, remove_parallel_grad

__all__ = ["CFG_FILE", "NORMALIZATIONS", "SAE", "SAEConfig", "SAEOutput", "WEIGHTS_FILE",
           "remove_parallel_grad"]
