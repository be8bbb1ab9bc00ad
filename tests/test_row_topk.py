"""The two-level per-row top-k (kernels.row_topk) against torch.topk, and its use in the encoder."""

from __future__ import annotations

import pytest
import torch

from abstopk import kernels as K
from abstopk.kernels import row_topk as rt


def _check(a: torch.Tensor, k: int, g: int | None) -> None:
    """Same values as torch.topk (as multisets), indices distinct and pointing at them."""
    v, i = rt.row_topk(a, k, g)
    ref = a.topk(k, dim=1).values
    assert torch.equal(v.sort(1, descending=True).values, ref)
    assert torch.equal(a.gather(1, i), v)
    assert all(len(set(row)) == k for row in i.tolist())  # k distinct columns per row


def test_hand_case_groups_and_two_winners_in_one_group():
    # n 8, g 2: groups {0,4} {1,5} {2,6} {3,7}
    a = torch.tensor([[1.0, 9, 3, 7, 8, 2, 5, 4],     # maxima 8 9 5 7 → groups 1, 0
                      [9.0, 1, 1, 1, 8, 0, 0, 0]])    # 9 and 8 both in group 0
    v, i = rt.row_topk(a, 2, g=2)
    order = v.argsort(1, descending=True)
    assert v.gather(1, order).tolist() == [[9.0, 8.0], [9.0, 8.0]]
    assert i.gather(1, order).tolist() == [[1, 4], [0, 4]]


@pytest.mark.parametrize("n,k,g", [(64, 4, 8), (64, 8, 8), (96, 7, 6), (512, 24, 4),
                                   (512, 4, 16), (60, 12, 5), (64, 32, 2)])
def test_random_rows_equal_torch_topk(n, k, g):
    a = torch.randn(37, n, generator=torch.Generator().manual_seed(n + k + g))
    _check(a, k, g)
    _check(a.abs(), k, g)


def test_ties_and_masked_entries():
    gen = torch.Generator().manual_seed(3)
    a = torch.randint(0, 4, (50, 96), generator=gen).float()   # many ties at the k-th value
    for k, g in ((5, 8), (12, 4), (16, 6)):
        _check(a, k, g)
    m = torch.randn(50, 96, generator=gen)
    m[:, ::3] = float("-inf")                                   # masked latents, as in AuxK
    _check(m, 20, 4)
    assert not torch.isinf(rt.row_topk(m, 20, 4)[0]).any()      # 64 finite entries ≥ 20


def test_group_size_and_fallbacks():
    assert rt.group_size(9216, 32) == 16      # 576 group maxima + 512 candidates
    assert rt.group_size(9216, 288) == 6      # 1536 + 1728
    assert rt.group_size(50, 4) is None       # 25 + 8 > 25: plain topk
    assert rt.group_size(97, 3) is None       # prime width
    a = torch.randn(4, 97)
    _check(a, 3, -1)
    _check(a, 3, 7)                           # g does not divide n: plain topk
    with pytest.raises(ValueError):
        rt.row_topk(torch.randn(3), 1)


@pytest.mark.parametrize("signed", [False, True], ids=["topk", "abstopk"])
@pytest.mark.parametrize("dead_frac", [0.5, 1.0])
def test_encoder_same_selection_with_and_without_groups(signed, dead_frac, monkeypatch):
    """The fused encoder's selections (main and AuxK) do not depend on the two-level path."""
    g = torch.Generator().manual_seed(11)
    x, W, b = torch.randn(40, 16, generator=g), torch.randn(16, 768, generator=g), torch.randn(768)
    mask = torch.rand(768, generator=g) < dead_frac
    assert rt.group_size(768, 8) and rt.group_size(768, 24)  # both levels are grouped
    outs = []
    for grouped in (True, False):
        monkeypatch.setattr(rt, "GROUPED", grouped)
        outs.append(K.topk_encode(x, W, b, 8, signed, mask, 24, chunk_rows=16))
    (v1, i1, a1, ai1), (v2, i2, a2, ai2) = outs
    for v, i, w, j in ((v1, i1, v2, i2), (a1, ai1, a2, ai2)):
        assert torch.equal(i.sort(1).values, j.sort(1).values)
        assert torch.equal(v.sort(1).values, w.sort(1).values)
