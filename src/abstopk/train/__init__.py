"""Training: the per-step hot path (:mod:`.step`) and the loop around it (:mod:`.trainer`)."""
