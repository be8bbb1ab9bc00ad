"""Per-latent statistics over an activation cache, for the signed feature dashboard.

One streaming pass (:mod:`.collect`, accumulators in :mod:`.stream`) gives per latent the
top-N positive and negative rows, signed quantile samples, a signed histogram and firing
frequencies per sign; :mod:`.contexts` turns rows into token windows, :mod:`.logits` reads the
tokens the decoder row promotes and suppresses, :mod:`.write` writes the stats folder
(:func:`compute_and_write`).
"""

from .collect import LatentStats, collect, collect_batches, negative_side
from .config import StatsConfig
from .write import FORMAT, VERSION, compute_and_write

__all__ = ["FORMAT", "VERSION", "LatentStats", "StatsConfig", "collect", "collect_batches",
           "compute_and_write", "negative_side"]
