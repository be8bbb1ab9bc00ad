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


def test_per_latent_turns_pairs_around():
    from abstopk.analysis.minimal_pairs import per_latent

    signed = {"per_pair": [
        {"a": "hot", "b": "cold", "category": "adj", "latents": [5, 9], "z_a": [1.0, -2.0],
         "z_b": [-0.5, 3.0]},
        {"a": "he", "b": "she", "category": "pron", "latents": [5], "z_a": [0.2], "z_b": [-0.1]}]}
    got = per_latent(signed)
    assert sorted(got) == [5, 9]
    assert [(p["a"], p["z_a"], p["z_b"], p["kind"]) for p in got[5]] == [
        ("hot", 1.0, -0.5, "flip"), ("he", 0.2, -0.1, "flip")]
    one_sided = {"per_pair": [{"a": "king", "b": "queen", "category": "noun",
                               "on_a_only": [3], "on_b_only": [4, 3],
                               "z_on_a_only": [0.7], "z_on_b_only": [1.1, 0.4]}]}
    got = per_latent(one_sided)
    assert [(p["kind"], p["z_a"], p["z_b"]) for p in got[3]] == [("a_only", 0.7, 0.0),
                                                                 ("b_only", 0.0, 0.4)]
    assert [(p["kind"], p["z_b"]) for p in got[4]] == [("b_only", 1.1)]


def test_cli_pairs_refuses_stats_of_another_sae(tmp_path, capsys):
    import json

    from cli_runner import run_cli

    (tmp_path / "stats").mkdir()
    (tmp_path / "stats" / "index.json").write_text(json.dumps(
        {"format": "abstopk-latent-stats", "version": 1, "sae": {"path": str(tmp_path / "b")},
         "latents": []}))
    code, _, err = run_cli(["analyze", "pairs", "--sae", tmp_path / "a", "--stats",
                            tmp_path / "stats"], capsys)
    assert code == 2 and "not of" in err
    code, _, err = run_cli(["analyze", "pairs", "--sae", tmp_path / "a", "--sae", tmp_path / "b",
                            "--stats", tmp_path / "stats"], capsys)
    assert code == 2 and "one per SAE" in err
