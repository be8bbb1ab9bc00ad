"""TrainState (one SAE in training) and the pluggable schedule pieces it drives."""

from __future__ import annotations

import math

import pytest
import torch

from abstopk.train.config import TrainConfig
from abstopk.train.schedule import (
    ConstantThenLinearDecayLR,
    MultiplicativeL0Controller,
    WarmupDecayLR,
    lr_at,
)
from abstopk.train.state import TrainState
from abstopk.train.trainer import Trainer

D_IN = 12


def _batches(n: int = 30, b: int = 64, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    dirs = torch.randn(40, D_IN, generator=g)
    codes = torch.randn(n * b, 40, generator=g) * (torch.rand(n * b, 40, generator=g) < 0.1)
    x = codes @ dirs + 0.02 * torch.randn(n * b, D_IN, generator=g) + 0.3
    return list(x.split(b))


def _cfg(**kw) -> TrainConfig:
    base = dict(d_sae=32, steps=30, batch_size=64, lr=3e-3, progress=False, log_every=5,
                init_batches=3, dead_tokens=320, aux_k=4, checkpoint_every=0, prefetch=0)
    base.update(kw)
    return TrainConfig(**base)


def _by_hand(cfg: TrainConfig, batches: list[torch.Tensor]) -> TrainState:
    torch.manual_seed(cfg.seed)
    st = TrainState.from_config(cfg, D_IN)
    st.initialize(batches[:cfg.init_batches])
    for x in batches[:cfg.steps]:
        rep = st.step(x)
        if st.steps_done % cfg.log_every == 0:
            st.metrics(rep, 0.0)
    return st


@pytest.mark.parametrize("kw", [dict(architecture="abstopk", k=4),
                                dict(architecture="jumprelu", target_l0=4.0),
                                dict(architecture="relu", penalty_coeff=1e-2,
                                     b_dec_init="geometric_median")])
def test_steps_by_hand_equal_trainer_fit(kw):
    batches = _batches()
    cfg = _cfg(**kw)
    tr = Trainer(cfg, batches)
    ref = tr.fit()
    st = _by_hand(cfg, batches)
    assert st.steps_done == tr.step == 30 and st.tokens == tr.tokens == 30 * 64
    a, b = ref.state_dict(), st.sae.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert torch.equal(st.tokens_since_fired, tr.tokens_since_fired)
    assert st.tokens > st.dead_tokens  # the AuxK branch was live for the last steps
    drop = {"tokens_per_s"}
    assert ({k: v for k, v in st.last_metrics.items() if k not in drop}
            == {k: v for k, v in tr.last_metrics.items() if k not in drop})
    if cfg.target_l0 is not None:
        assert float(st.controller.coeff) == float(tr.controller.coeff)
        assert "l0_ema" in st.last_metrics


def test_state_dict_round_trip_continues_identically():
    batches = _batches()
    cfg = _cfg(architecture="jumprelu", target_l0=4.0)
    a = TrainState.from_config(cfg, D_IN)
    a.initialize(batches[:3])
    for x in batches[:12]:
        a.step(x)
    tensors, meta = a.state_dict()
    tensors = {k: v.clone() for k, v in tensors.items()}
    b = TrainState.from_config(cfg, D_IN)
    b.load_state_dict(tensors, meta)
    assert (b.steps_done, b.tokens, b.initialized) == (12, 12 * 64, True)
    for x in batches[12:]:
        a.step(x)
        b.step(x)
    sa, sb = a.sae.state_dict(), b.sae.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert float(a.controller.coeff) == float(b.controller.coeff)


def test_auxk_waits_for_dead_tokens_and_penalty_coeff_rules():
    cfg = _cfg(architecture="topk", k=4, dead_tokens=10 ** 6)
    st = TrainState.from_config(cfg, D_IN)
    assert st.k_aux == 4 and st.penalty_coeff == 0.0  # TopK has no penalty
    st.initialize(_batches(n=3))
    st.step(_batches(n=1)[0])
    assert not st.dead_mask().any() and st.tokens_since_fired.max() <= 64
    relu = TrainState.from_config(_cfg(architecture="relu", penalty_coeff=0.25), D_IN)
    assert relu.penalty_coeff == 0.25 and relu.controller is None
    with pytest.raises(ValueError, match="no batch"):
        relu.initialize([])


def test_multiplicative_controller_on_a_known_sequence():
    c = MultiplicativeL0Controller(target=4, c0=1.0, rate=0.5)
    expect = 1.0
    # rel = (L0 − 4)/4 = 1, −0.5, 24 (clipped to 1), 0, −1 (clipped at −1 from L0 = 0)
    for l0, step in ((8.0, 0.5), (2.0, -0.25), (100.0, 0.5), (4.0, 0.0), (0.0, -0.5)):
        expect *= math.exp(step)
        assert c.update(torch.tensor(l0)) == expect and c.coeff == expect
    assert c.coeff == pytest.approx(math.exp(0.25), rel=1e-12)
    d = MultiplicativeL0Controller(target=4, c0=3.0, rate=0.5)
    d.load(c.state_tensors(), c.state_json())
    assert d.coeff == c.coeff and c.metrics() == {}
    with pytest.raises(ValueError, match="target L0 must be positive"):
        MultiplicativeL0Controller(target=0, c0=1.0, rate=0.1)


def test_lr_schedules():
    cfg = _cfg(architecture="abstopk", k=4, steps=50, lr_warmup_frac=0.1, lr_decay_frac=0.3,
               lr_decay="cosine", lr_min_factor=0.1)
    sched = WarmupDecayLR.from_config(cfg)
    assert [sched(t) for t in range(50)] == [lr_at(t, cfg) for t in range(50)]
    s = ConstantThenLinearDecayLR(0.3, 10, constant_frac=0.7)
    assert s.decay_start == 7
    assert [s(t) for t in range(10)] == [0.3] * 7 + [0.3 * 3 / 3, 0.3 * 2 / 3, 0.3 * 1 / 3]
    with pytest.raises(ValueError, match="constant_frac"):
        ConstantThenLinearDecayLR(0.3, 10, constant_frac=1.5)
