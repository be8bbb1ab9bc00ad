"""Minimal pairs: the shipped list, and planted sign-flipping / antipodal latents found."""

from __future__ import annotations

import pytest
import torch

from abstopk.analysis.minimal_pairs import (
    MinimalPair,
    coverage,
    load_pairs,
    pair_codes,
    sentences,
    word_activations,
)
from abstopk.sae import SAE, SAEConfig

D, F, P = 16, 32, 12


def test_shipped_list():
    pairs = load_pairs()
    assert len(pairs) >= 100
    assert any((p.a, p.b) == ("man", "woman") for p in pairs)
    assert all(p.templates and all("{}" in t for t in p.templates) for p in pairs)


def _pairs(n: int) -> list[MinimalPair]:
    return [MinimalPair("x", f"a{i}", f"b{i}", ("t {}", "u {}")) for i in range(n)]


def _acts(v: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """Per pair, 2 templates for a (base + 6v), then 2 for b (base − 6v)."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(P):
        base = torch.randn(D, generator=g)          # the template context: not antisymmetric
        rows += [base + 6 * v, base + 6 * v, base - 6 * v, base - 6 * v]
    return torch.stack(rows)


def test_planted_sign_flipping_latent_is_found():
    sae = SAE(SAEConfig(d_in=D, d_sae=F, architecture="abstopk", k=3,
                        apply_b_dec_to_input=False), seed=1)
    v = torch.randn(D, generator=torch.Generator().manual_seed(9))
    v /= v.norm()
    with torch.no_grad():
        sae.W_enc[:, 7] = v
        sae.W_dec[7] = v
    za, zb = pair_codes(sae, _pairs(P), _acts(v))
    cov = coverage(za, zb, signed=True, pairs=_pairs(P))
    assert cov["best_latent"] == 7 and cov["max_pairs_one_latent"] == P
    assert cov["covered"] == P and cov["latents_needed"] == 1
    assert za[:, 7].min() > 0 and zb[:, 7].max() < 0


def test_topk_needs_two_antipodal_latents():
    sae = SAE(SAEConfig(d_in=D, d_sae=F, architecture="topk", k=2,
                        apply_b_dec_to_input=False), seed=1)
    v = torch.randn(D, generator=torch.Generator().manual_seed(9))
    v /= v.norm()
    with torch.no_grad():
        sae.W_enc[:, 3], sae.W_dec[3] = v, v
        sae.W_enc[:, 5], sae.W_dec[5] = -v, -v
    za, zb = pair_codes(sae, _pairs(P), _acts(v))
    cov = coverage(za, zb, signed=False, W_dec=sae.W_dec.detach())
    assert cov["covered"] == P and cov["latents_needed"] == 2
    assert cov["split_covered"] == P and cov["split_latents_needed"] == 2
    assert cov["antipodal_covered"] == P
    assert cov["best_latent"] in (3, 5)


@pytest.mark.slow
def test_word_activations_read_the_word_token(lm):
    """The activation at the word's last token equals a plain forward's at that position."""
    from abstopk.lm.hooks import capture_activations

    model, tok, _ = lm
    pair = MinimalPair("noun", "man", "woman", ("The {} walked into the room.",))
    got = word_activations(model, tok, 3, "resid_post", sentences([pair]))
    ids = [tok.bos_token_id] + tok("The woman walked into the room.",
                                   add_special_tokens=False)["input_ids"]
    with capture_activations(model, 3) as acts, torch.no_grad():
        model(torch.tensor([ids]))
    assert torch.allclose(got[1], acts[3][0, 2].float(), atol=1e-4)
