"""The explicit Selection: its layouts, their caching, and one build per step."""

from __future__ import annotations

import pytest
import torch

from abstopk import kernels as K
from abstopk.kernels.selection import Selection
from abstopk.sae import SAE, SAEConfig
from abstopk.train.step import make_optimizer, train_step


def test_layouts_hand_case():
    # S [3, 5], padded to m = 3: row 0 = e0, e3, e4; row 1 = e2 (+2 padding); row 2 empty
    idx = torch.tensor([[0, 3, 4], [2, 4, 0], [1, 2, 3]])
    sel = Selection(idx, 5, torch.tensor([3, 1, 0]))
    pos, col, crow = sel.csr()
    assert pos.tolist() == [0, 1, 2, 3] and col.tolist() == [0, 3, 4, 2]
    assert crow.tolist() == [0, 3, 4, 4]
    order, rows, offsets = sel.csc()
    assert order.tolist() == [0, 3, 1, 2]  # latents 0, 2, 3, 4 (sorted), padding left out
    assert rows.tolist() == [0, 1, 0, 0]
    assert offsets.tolist() == [0, 1, 1, 2, 3]
    w = torch.arange(9.0).view(3, 3)
    assert sel.real(w).tolist() == [0.0, 1.0, 2.0, 3.0]
    assert sel.padded(torch.tensor([1.0, 2.0, 3.0, 4.0]), pos).tolist() == [
        [1.0, 2.0, 3.0], [4.0, 0.0, 0.0], [0.0, 0.0, 0.0]]
    # without padding: every entry real, CSR offsets 0, m, 2m, …
    full = Selection(idx, 5)
    pos, col, crow = full.csr()
    assert pos is None and torch.equal(col, idx.view(-1)) and crow.tolist() == [0, 3, 6, 9]
    assert full.csc()[2].tolist() == [0, 2, 3, 5, 7]


def test_layouts_are_cached_on_the_object():
    sel = Selection(torch.tensor([[1, 0], [1, 2]]), 3)
    assert sel.csc() is sel.csc() and sel.csr() is sel.csr()
    assert Selection(sel.indices, 3).csc() is not sel.csc()  # a new object builds its own


def test_bad_selections():
    with pytest.raises(ValueError, match=r"\[B, m\]"):
        Selection(torch.zeros(3, dtype=torch.int64), 4)
    with pytest.raises(ValueError, match="counts must have shape"):
        Selection(torch.zeros(3, 2, dtype=torch.int64), 4, torch.zeros(2, dtype=torch.int64))
    sel = Selection(torch.zeros(3, 2, dtype=torch.int64), 4)
    with pytest.raises(ValueError, match="4 latents"):
        K.sparse_decode(torch.zeros(3, 2), sel, torch.zeros(5, 6), None)
    with pytest.raises(ValueError, match="counts are part of the selection"):
        K.sparse_decode(torch.zeros(3, 2), sel, torch.zeros(4, 6), None,
                        torch.ones(3, dtype=torch.int64))
    with pytest.raises(ValueError, match="differ"):
        K.sparse_decode(torch.zeros(3, 3), sel, torch.zeros(4, 6), None)


def test_decode_of_the_selection_equals_decode_of_bare_indices():
    g = torch.Generator().manual_seed(0)
    x, W, b = torch.randn(9, 6, generator=g), torch.randn(6, 20, generator=g), torch.zeros(20)
    Wd = torch.randn(20, 6, generator=g)
    enc = K.fused_topk_encode(x, W, b, 4, True, batch=True)
    sel = enc.selection
    assert sel.counts is not None and enc.aux_values is None and enc.aux_selection is None
    a = K.sparse_decode(enc.values.detach(), sel, Wd, None)
    c = K.sparse_decode(enc.values.detach(), sel.indices, Wd, None, sel.counts)
    assert torch.equal(a, c)


def _count_builds(monkeypatch) -> dict[str, int]:
    """Count the layout builds (a call that finds nothing cached) of every Selection."""
    builds = {"csr": 0, "csc": 0}
    for name in builds:
        orig = getattr(Selection, name)

        def wrapped(self, _orig=orig, _name=name):
            if getattr(self, "_" + _name) is None:
                builds[_name] += 1
            return _orig(self)

        monkeypatch.setattr(Selection, name, wrapped)
    return builds


@pytest.mark.parametrize("arch", ["topk", "abstopk", "batchtopk", "batchabstopk"])
def test_one_layout_build_per_selection_and_step(arch, monkeypatch):
    """A training step with fused AuxK: the decoder's and the encoder's backward share one
    CSC sort per selection (main and AuxK), the batch compaction is built once."""
    torch.manual_seed(0)
    sae = SAE(SAEConfig(d_in=8, d_sae=32, architecture=arch, k=3), seed=0)
    opt = make_optimizer(sae, lr=1e-3)
    dead = torch.ones(32, dtype=torch.bool)  # every latent dead: AuxK rides along the encoder
    builds = _count_builds(monkeypatch)
    train_step(sae, opt, torch.randn(64, 8), dead_mask=dead, k_aux=4)
    assert builds["csc"] == 2  # main + AuxK selection, each sorted once
    # csr: once per selection (the batch compaction, or the trivial row offsets that the
    # CPU column sums read)
    assert builds["csr"] == 2
