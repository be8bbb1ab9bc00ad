"""The sparse autoencoder (:mod:`.model`) and its config (:mod:`.config`).

``from abstopk.sae import SAE, SAEConfig`` is the public entry point; ``load_sae`` reads a saved
folder in this project's layout or SAELens's (:mod:`.saelens`).
"""

from .config import CFG_FILE, NORMALIZATIONS, WEIGHTS_FILE, SAEConfig
from .model import SAE, SAEOutput, remove_parallel_grad
from .saelens import load_sae, sae_summary

__all__ = ["CFG_FILE", "NORMALIZATIONS", "SAE", "SAEConfig", "SAEOutput", "WEIGHTS_FILE",
           "load_sae", "remove_parallel_grad", "sae_summary"]
