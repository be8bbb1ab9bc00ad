"""Steering: directions (known answers on tiny tensors) and interventions on the real model."""

from __future__ import annotations

import pytest
import torch
from identity_sae import identity_sae

from abstopk.sae import SAE, SAEConfig
from abstopk.steer import (
    LatentEdit,
    PositionTracker,
    ablate_direction,
    add_direction,
    diff_in_means,
    edit_latents,
    pooled_activations,
    projection_auc,
    typical_magnitude,
)


# ------------------------------------------------------------------ known answers
def test_diff_in_means_hand_computed():
    a = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    b = torch.tensor([[0.0, 1.0], [0.0, -1.0], [3.0, 3.0]])
    assert torch.equal(diff_in_means(a, b), torch.tensor([2.0 - 1.0, 3.0 - 1.0]))
    with pytest.raises(ValueError, match="one width"):
        diff_in_means(a, torch.zeros(2, 3))
    with pytest.raises(ValueError, match="at least one"):
        diff_in_means(a, torch.zeros(0, 2))


def test_projection_auc_counts_pairs_and_ties():
    v = torch.tensor([1.0, 0.0])
    a = torch.tensor([[3.0, 9.0], [1.0, 0.0]])     # scores 3, 1
    b = torch.tensor([[2.0, -5.0], [1.0, 7.0]])    # scores 2, 1
    # pairs (a, b): (3,2) >, (3,1) >, (1,2) <, (1,1) tie → (2 + 0.5) / 4
    assert projection_auc(v, a, b) == pytest.approx(0.625)
    assert projection_auc(-v, a, b) == pytest.approx(0.375)


def test_typical_magnitude_is_a_quantile_of_the_unit_projection():
    acts = torch.tensor([[0.0, 1.0], [0.0, -2.0], [0.0, 3.0], [0.0, -4.0], [0.0, 5.0]])
    v = torch.tensor([0.0, 10.0])  # length does not matter
    assert typical_magnitude(acts, v, q=1.0) == pytest.approx(5.0)
    assert typical_magnitude(acts, v, q=0.5) == pytest.approx(3.0)
    with pytest.raises(ValueError):
        typical_magnitude(acts, v, q=0.0)


def test_position_tracker_with_and_without_kv_cache():
    dev = torch.device("cpu")
    t = PositionTracker("generated")
    assert t.mask(4, dev).tolist() == [False] * 4        # the prompt (length 4)
    assert t.mask(1, dev).tolist() == [True]             # cached step: position 4
    assert t.mask(1, dev).tolist() == [True]             # position 5
    t = PositionTracker("prompt")
    assert t.mask(3, dev).tolist() == [True] * 3
    assert t.mask(4, dev).tolist() == [True, True, True, False]  # no cache: full rerun
    assert PositionTracker("all").mask(5, dev) is None
    with pytest.raises(ValueError, match="unknown positions"):
        PositionTracker("middle")


def test_latent_edit_validates():
    with pytest.raises(ValueError, match="edit mode"):
        LatentEdit(0, 1.0, mode="mul")


# ------------------------------------------------------------------ on the embedded model
CODE = [f"def f{i}(x):\n    return x * {i} + len(str(x))" for i in range(12)] + [
    f"for i in range({i}):\n    print(i ** 2, end=',')" for i in range(12)]
PROSE = [f"{name} walked slowly through the {place}, thinking of her sister's letter."
         for name in ("Emma", "Anne", "Fanny", "Elinor")
         for place in ("garden", "village", "park", "orchard", "meadow", "lane")]


@pytest.mark.slow
def test_dim_separates_held_out_texts(lm):
    model, tok, _ = lm
    a = pooled_activations(model, tok, CODE, layer=6)
    b = pooled_activations(model, tok, PROSE, layer=6)
    v = diff_in_means(a[::2], b[::2])            # train on even texts
    auc = projection_auc(v, a[1::2], b[1::2])    # held out: odd texts
    assert auc >= 0.9
    last = pooled_activations(model, tok, CODE[:3], layer=6, pool="last")
    assert last.shape == (3, a.shape[1]) and not torch.allclose(last, a[:3])


def _ids(tok, text):
    return torch.tensor([[tok.bos_token_id] + tok(text, add_special_tokens=False)["input_ids"]])


@pytest.mark.slow
def test_latent_set_to_its_own_value_changes_no_logit(lm):
    model, tok, _ = lm
    d = model.config.hidden_size
    sae = SAE(SAEConfig(d_in=d, d_sae=4 * d, architecture="abstopk", k=16, hook_layer=4,
                        hook_site="resid_post"), seed=0)
    ids = _ids(tok, "The quick brown fox jumps over the lazy dog.")
    with torch.no_grad():
        clean = model(ids).logits
        # "add 0" to latents that fire and to ones that do not: z' == z
        with edit_latents(model, sae, [LatentEdit(3, 0.0, "add"), LatentEdit(17, 0.0, "add")]):
            same = model(ids).logits
        assert torch.equal(same, clean)
        # a real edit reaches the logits, and only through the latent's decoder row
        with edit_latents(model, sae, {5: 8.0}):
            moved = model(ids).logits
        assert (moved - clean).abs().max() > 1e-3


@pytest.mark.slow
def test_generated_only_steering_keeps_prompt_logits_and_changes_text(lm):
    model, tok, _ = lm
    d = model.config.hidden_size
    v = torch.randn(d, generator=torch.Generator().manual_seed(0))
    v = v / v.norm() * 40.0
    ids = _ids(tok, "Once upon a time, there was a")
    P = ids.shape[1]
    with torch.no_grad():
        clean = model(ids).logits
        with add_direction(model, 6, v, 1.0, positions="generated"):
            gen_only = model(ids).logits
        assert torch.equal(gen_only, clean)  # every position is a prompt position
        with add_direction(model, 6, v, 1.0, positions="all"):
            steered_all = model(ids).logits
        assert (steered_all - clean).abs().max() > 1e-2

        kw = dict(max_new_tokens=12, do_sample=False, pad_token_id=tok.eos_token_id)
        base = model.generate(ids, **kw)
        with add_direction(model, 6, v, 3.0, positions="generated"):
            steered = model.generate(ids, **kw)
    assert torch.equal(steered[0, :P], ids[0])
    assert not torch.equal(steered[0, P:], base[0, P:])


@pytest.mark.slow
def test_ablation_leaves_no_projection(lm):
    from abstopk.lm.hooks import capture_activations

    model, tok, _ = lm
    d = model.config.hidden_size
    v = torch.randn(d, generator=torch.Generator().manual_seed(1))
    unit = v / v.norm()
    ids = _ids(tok, "Ablation removes one direction from the residual stream everywhere.")
    layers = [0, 5, len(model.model.layers) - 1]
    with torch.no_grad():
        with capture_activations(model, layers) as before:
            model(ids)
        with ablate_direction(model, v), capture_activations(model, layers) as after:
            model(ids)
    for L in layers:
        assert (before[L].float() @ unit).abs().max() > 1e-2
        proj = (after[L].float() @ unit).abs().max() / after[L].float().norm(dim=-1).max()
        assert proj <= 1e-5, (L, float(proj))


@pytest.mark.slow
def test_steered_sampling_is_reproducible_with_a_seed(lm):
    model, tok, _ = lm
    d = model.config.hidden_size
    v = torch.randn(d, generator=torch.Generator().manual_seed(2))
    v = v / v.norm() * 20.0
    ids = _ids(tok, "My favourite food is")
    kw = dict(max_new_tokens=10, do_sample=True, top_k=50, pad_token_id=tok.eos_token_id)
    outs = []
    for _ in range(2):
        torch.manual_seed(123)
        with torch.no_grad(), add_direction(model, 6, v, 1.0, positions="generated"):
            outs.append(model.generate(ids, **kw))
    assert torch.equal(outs[0], outs[1])


# ------------------------------------------------------------------ latent candidates
def _planted_sae(architecture: str) -> SAE:
    """d_in 4, d_sae 4 with identity encoder/decoder: z = prox(x) (no bias)."""
    return identity_sae(architecture, k=1)


def test_latent_scores_on_a_planted_signed_axis():
    from abstopk.steer.latents import latent_pair, rank_latents

    # concept A: +3 along axis 2, concept B: −3 along axis 2; small noise on axis 0
    a = torch.tensor([[0.5, 0, 3.0, 0], [-0.5, 0, 3.0, 0], [0.2, 0, 2.0, 0]])
    b = torch.tensor([[0.5, 0, -3.0, 0], [-0.5, 0, -2.0, 0], [0.1, 0, -3.0, 0]])
    signed = _planted_sae("abstopk")
    best = rank_latents(signed, a, b, top=1)[0]
    assert best.latent == 2
    # z_2: A = {3, 3, 2}, B = {−3, −2, −3}; means 8/3 and −8/3, each variance 2/9
    assert best.mean_a == pytest.approx(8 / 3) and best.mean_b == pytest.approx(-8 / 3)
    assert best.effect == pytest.approx((16 / 3) / (2 / 9) ** 0.5)
    # v = (1/30, 0, 16/3, 0): cos(e_2, v) = (16/3) / ‖v‖
    assert best.cosine == pytest.approx((16 / 3) / ((16 / 3) ** 2 + (1 / 30) ** 2) ** 0.5)
    assert best.fire_a == 1.0 and best.fire_b == 1.0
    # the signed latent is both ends: no other latent leans towards B
    up, down = latent_pair(signed, a, b)
    assert up.latent == 2 and down.effect == 0.0
    # a one-sided TopK SAE sees only A's end on latent 2 (B's negatives are clipped away)
    one_sided = _planted_sae("topk")
    s = rank_latents(one_sided, a, b, top=1)[0]
    assert s.latent == 2 and s.mean_b == 0.0 and s.fire_b == 0.0
