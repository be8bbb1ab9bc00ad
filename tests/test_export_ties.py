"""Ties at the k-th |u|: the AbsTopK tie rule, checked in abstopk, its SAELens exports and real
SAELens (``sae-lens`` is part of the ``test`` extra that ``make test`` installs: not skipped).

The tie rule (``docs/export.md``): AbsTopK keeps exactly k latents per token — every latent
whose |u| exceeds t, the k-th largest |u|, then as many latents with |u| = t as fill the k
slots; which tied latents fill them is torch.topk's choice on the row it is given. The rows
below are built so that every implementation computes u exactly (a signed-permutation encoder
and dyadic values: no rounding anywhere), so exact ties are exact and a near tie one ulp apart
is ordered the same everywhere.
"""

from __future__ import annotations

import pytest
import torch

from abstopk.export import export_saelens
from abstopk.sae import SAE, SAEConfig
from abstopk.sparsity import abstopk as abstopk_op

F, K = 12, 4
ULP5 = 2.0 ** -21            # fp32 spacing in [4, 8): 5 − ULP5 is the float just below 5

#: (u row, whether it has an exact tie at the k-th |u|)
ROWS = [
    ([9, 8, 7, 5, 5 - ULP5, 1, 0, 0, 0, 0, 0, 0], False),        # near tie, same sign
    ([9, 8, 7, 5, -(5 - ULP5), 1, 0, 0, 0, 0, 0, 0], False),     # near tie, opposite signs
    ([9, -8, 7, -(5 - ULP5), 5, 1, 0.5, 0, 0, 0, 0, -2], False),
    ([9, 8, 7, 5, 5, 1, 0, 0, 0, 0, 0, 0], True),                 # exact tie, same sign
    ([9, 8, 7, 5, -5, 1, 0, 0, 0, 0, 0, 0], True),                # exact tie, opposite signs
    ([9, -5, 8, 5, 7, -5, 1, 0, 0, 0, 0, 0], True),               # three tied for one slot
    ([-5, 9, 5, 8, 5, 7, 0, 0, 0, 0, 5, -5], True),
    ([5] * 12, True),                                              # all tied
    ([-5, -5, 5, 5, -5, 5, -5, 5, -5, 5, -5, 5], True),
]


@pytest.fixture(scope="module")
def sae_lens():
    try:
        import sae_lens
    except ImportError:
        pytest.fail("sae-lens is not installed: it is part of the test extra "
                    "(`pip install -e '.[test]'`, which `make test` runs)")
    return sae_lens


def _tie_sae() -> tuple[SAE, torch.Tensor, torch.Tensor]:
    """An AbsTopK SAE whose pre-activations are exactly the rows of ROWS: a signed-permutation
    encoder with integer biases (every product and sum exact in fp32, in any order), and a
    random decoder. Returns (sae, x [R, F], u [R, F])."""
    g = torch.Generator().manual_seed(3)
    perm = torch.randperm(F, generator=g)
    signs = torch.where(torch.rand(F, generator=g) < 0.5, -1.0, 1.0)
    P = torch.zeros(F, F)
    P[torch.arange(F), perm] = signs                      # x_c @ P: column perm[i] ← ±x_c[i]
    cfg = SAEConfig(d_in=F, d_sae=F, architecture="abstopk", k=K, model_name="m",
                    hook_layer=1, hook_site="resid_post")
    sae = SAE(cfg, seed=0)
    b_enc = torch.randint(-3, 4, (F,), generator=g).float()
    b_dec = torch.randint(-2, 3, (F,), generator=g).float()
    with torch.no_grad():
        sae.W_enc.copy_(P)
        sae.b_enc.copy_(b_enc)
        sae.b_dec.copy_(b_dec)
        sae.W_dec.copy_(torch.randn(F, F, generator=g))
    u = torch.tensor([r for r, _ in ROWS], dtype=torch.float32)
    x = (u - b_enc) @ P.t() + b_dec                        # P orthogonal and exact: P⁻¹ = Pᵀ
    assert torch.equal((x - b_dec) @ P + b_enc, u)
    return sae.eval(), x, u


def _check_rule(z: torch.Tensor, u: torch.Tensor) -> None:
    """The tie rule on one code z [F] for pre-activations u [F]."""
    t = u.abs().topk(K).values[-1]
    kept = z != 0
    assert int(kept.sum()) == K
    assert bool(kept[u.abs() > t].all())                  # all strictly above the k-th
    assert bool((u.abs()[kept] >= t).all())               # the rest from the tied ones
    assert torch.equal(z[kept], u[kept])                  # signed values, no shrinkage


def test_tie_rule_in_abstopk_and_its_exports(tmp_path, sae_lens):
    sae, x, u = _tie_sae()
    sae.save(tmp_path / "sae")
    export_saelens(tmp_path / "sae", tmp_path / "doubled")
    export_saelens(tmp_path / "sae", tmp_path / "native", native_abstopk=True)
    with torch.no_grad():
        ours = sae(x)                                     # the fused kernel (eval mode)
        dense = abstopk_op(u, K)                          # the plain operator
        sl_d = sae_lens.SAE.load_from_disk(str(tmp_path / "doubled"), device="cpu")
        sl_n = sae_lens.SAE.load_from_disk(str(tmp_path / "native"), device="cpu")
        zd2, zn = sl_d.encode(x), sl_n.encode(x)
        xd, xn = sl_d.decode(zd2), sl_n.decode(zn)
    assert sl_d.cfg.architecture() == "topk" and sl_n.cfg.architecture() == "abstopk"
    zd = zd2[:, :F] - zd2[:, F:]                          # the doubled code mapped back
    assert int((zd2 != 0).sum()) == K * len(ROWS)         # one copy per kept latent
    scale = ours.x_hat.abs().max()
    for i, (_, tied) in enumerate(ROWS):
        for z in (ours.z[i], dense[i], zd[i], zn[i]):
            _check_rule(z, u[i])
        # native SAELens AbsTopK = abstopk, ties included: both call torch.topk on |u| of
        # the same row (the fused kernel on a block of rows, SAELens on the batch)
        assert torch.equal(ours.z[i], zn[i]) and torch.equal(ours.z[i], dense[i])
        assert (xn[i] - ours.x_hat[i]).abs().max() <= 1e-6 * scale
        if not tied:   # no exact tie: the doubled export keeps the same latents as well
            assert torch.equal(ours.z[i], zd[i])
            assert (xd[i] - ours.x_hat[i]).abs().max() <= 1e-6 * scale
    # with exact ties the doubled ReLU-TopK ranks [u, −u]: torch.topk sees the tied latents
    # at other positions and may keep others (documented; z still obeys the rule above)
    differ = [i for i in range(len(ROWS)) if not torch.equal(ours.z[i], zd[i])]
    assert set(differ) <= {i for i, (_, tied) in enumerate(ROWS) if tied}


def test_real_saelens_matches_on_a_trained_sae(tmp_path, sae_lens):
    """A small SAE trained on planted signed features (no hand-set ties), exported both ways
    and loaded in real SAELens: the same codes and reconstructions on held-out rows."""
    from abstopk.train.config import TrainConfig
    from abstopk.train.trainer import Trainer

    g = torch.Generator().manual_seed(0)
    D = torch.randn(48, 16, generator=g)
    D /= D.norm(dim=1, keepdim=True)
    idx = torch.rand(6000, 48, generator=g).argsort(1)[:, :3]
    Z = torch.zeros(6000, 48).scatter(1, idx, torch.randn(6000, 3, generator=g))
    X = Z @ D + 0.02 * torch.randn(6000, 16, generator=g)
    cfg = TrainConfig(architecture="abstopk", k=3, d_sae=48, steps=60, batch_size=128,
                      lr=3e-3, progress=False, out=str(tmp_path / "run"))
    Trainer(cfg, X[:5000].numpy()).fit()
    sae = SAE.load(tmp_path / "run").eval()
    x = X[5000:]
    with torch.no_grad():
        ref = sae(x)
    assert (ref.z < 0).any() and (ref.z > 0).any()
    for native in (False, True):
        out = export_saelens(tmp_path / "run", tmp_path / f"sl{native}", model_name="m",
                             hook_name="blocks.0.hook_resid_post", native_abstopk=native)
        sl = sae_lens.SAE.load_from_disk(str(out), device="cpu")
        with torch.no_grad():
            z = sl.encode(x)
            x_hat = sl(x)
        if not native:
            z = z[:, :48] - z[:, 48:]
        assert torch.equal(z != 0, ref.z != 0), native
        assert torch.allclose(z, ref.z, rtol=1e-5, atol=1e-6), native
        assert (x_hat - ref.x_hat).abs().max() <= 1e-6 * ref.x_hat.abs().max(), native
