"""A tiny hand-checkable SAE for tests: d_in = d_sae = 4, identity encoder and decoder, no
biases, no b_dec shift, plain (dense) operators, so z = prox(x) and x̂ = z."""

from __future__ import annotations

import torch

from abstopk.sae import SAE, SAEConfig


def identity_sae(architecture: str, k: int) -> SAE:
    """The identity SAE of ``architecture`` keeping ``k`` latents (TopK family)."""
    sae = SAE(SAEConfig(d_in=4, d_sae=4, architecture=architecture, k=k,
                        apply_b_dec_to_input=False, use_sparse_kernels=False), seed=0)
    with torch.no_grad():
        sae.W_enc.copy_(torch.eye(4))
        sae.W_dec.copy_(torch.eye(4))
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    return sae
