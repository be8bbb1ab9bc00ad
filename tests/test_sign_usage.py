"""``analysis.sign_usage`` on tiny hand-made codes and decoders."""

from __future__ import annotations

import math

import pytest
import torch

from abstopk.analysis.sign_usage import sign_usage as _sign_usage


def sign_usage(z, W, **kw):
    """The counts of a hand-made code z [N, F], as the evaluator accumulates them."""
    return _sign_usage((z != 0).sum(0), (z < 0).sum(0), W, **kw)


def test_known_shares_on_a_hand_made_code():
    # 4 latents in 2-d: d0 = e0, d1 = −e0 (antipodal to d0), d2 = (cos 120°, sin 120°)
    # (cos −0.5 with d0, +0.5 with d1), d3 = −d2 but dead (never fires: not a partner)
    c, s_ = math.cos(2 * math.pi / 3), math.sin(2 * math.pi / 3)
    W = torch.tensor([[1.0, 0.0], [-2.0, 0.0], [c, s_], [-c, -s_]])
    z = torch.tensor([[1.0, 0.0, -1.0, 0.0],
                      [2.0, 0.5, 1.0, 0.0],
                      [-1.0, 0.3, 1.0, 0.0],
                      [0.0, 0.0, 1.0, 0.0]])
    s = sign_usage(z, W, thresholds=(-0.9, -0.4), low=0.2, high=0.8)
    assert s["alive"] == 3
    # ν: latent 0 1/3 (two-sided), latent 1 0 (one-sided), latent 2 1/4 (two-sided)
    assert s["two_sided"] == pytest.approx(2 / 3)
    assert s["negative_firings"] == pytest.approx(2 / 9)        # 2 negative of 9 firings
    # d0 and d1 are each other's antipode; d2's most opposite alive partner has cos −0.5
    assert s["antipodal"][-0.9] == pytest.approx(2 / 3)
    assert s["antipodal"][-0.4] == pytest.approx(1.0)


def test_a_non_negative_code_is_never_two_sided_and_bad_shapes_are_refused():
    z = torch.tensor([[0.0, 3.0], [1.0, 0.0]])
    s = sign_usage(z, torch.eye(2))
    assert s["two_sided"] == 0.0 and s["negative_firings"] == 0.0
    assert s["antipodal"] == {-0.9: 0.0, -0.5: 0.0}             # orthogonal: cos 0
    dead = sign_usage(torch.zeros(3, 2), torch.eye(2))
    assert dead["alive"] == 0 and dead["two_sided"] == 0.0
    with pytest.raises(ValueError, match=r"must be \[F\] and W_dec \[F, D\]"):
        sign_usage(torch.zeros(3, 2), torch.eye(3))
