"""The same code on CUDA: operators, the fused kernels inside a training step, the trainer.

Every test here compares a CUDA run with the CPU run of the same computation (fp32, TF32
off) or checks a CUDA trainer end to end; they skip on machines without a GPU.
"""

from __future__ import annotations

import pytest
import torch

from abstopk import sparsity
from abstopk.sae import SAE, SAEConfig
from abstopk.train.config import TrainConfig
from abstopk.train.step import make_optimizer, train_step
from abstopk.train.trainer import Trainer

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.fixture(autouse=True)
def _no_tf32():
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def _close(a: torch.Tensor, b: torch.Tensor, rtol: float = 1e-4) -> None:
    a, b = a.detach().cpu(), b.detach().cpu()
    assert a.shape == b.shape
    err = (a - b).abs().max()
    assert err <= rtol * b.abs().max().clamp_min(1e-30), f"max abs err {err:.3e}"


@pytest.mark.parametrize("name", sorted(sparsity.OPERATORS))
def test_operator_on_cuda_equals_cpu(name):
    op = sparsity.get_operator(name)
    g = torch.Generator().manual_seed(0)
    u = torch.randn(17, 41, generator=g)
    args = []
    if op.needs_k:
        args.append(5)
    if op.needs_threshold:
        args.append(torch.rand(41, generator=g))
    cpu = op.fn(u, *args)
    gpu = op.fn(u.cuda(), *[a.cuda() if torch.is_tensor(a) else a for a in args])
    assert gpu.device.type == "cuda"
    _close(gpu, cpu, rtol=0)
    assert int(gpu.ne(0).sum()) == int(cpu.ne(0).sum())


@pytest.mark.parametrize("dead_frac", [0.75, 0.1], ids=["fused_aux", "dense_aux"])
@pytest.mark.parametrize("arch", ["topk", "abstopk", "batchabstopk", "jumprelu", "relu"])
def test_train_steps_on_cuda_match_cpu(arch, dead_frac):
    """Three optimisation steps with AuxK give the same weights (three quarters of the
    latents dead: AuxK rides along the fused kernels on both devices; a tenth: the dense
    path over the dead columns, see ``train.step.AUX_DENSE_FACTOR``)."""
    g = torch.Generator().manual_seed(1)
    xs = [torch.randn(96, 24, generator=g) * 2 + 0.5 for _ in range(3)]
    dead = torch.rand(80, generator=g) < dead_frac
    k = None if arch in ("jumprelu", "relu") else 6
    saes = {}
    for dev in ("cpu", "cuda"):
        sae = SAE(SAEConfig(d_in=24, d_sae=80, architecture=arch, k=k), seed=3, device=dev)
        opt = make_optimizer(sae, lr=1e-3)
        for x in xs:
            res = train_step(sae, opt, x.to(dev), penalty_coeff=1e-3,
                             dead_mask=dead.to(dev), k_aux=12)
        assert torch.isfinite(res.loss)
        saes[dev] = sae
    for (n, a), (_, b) in zip(saes["cuda"].state_dict().items(),
                              saes["cpu"].state_dict().items(), strict=True):
        if torch.is_floating_point(b) and torch.isnan(b).all():
            assert torch.isnan(a).all(), n
            continue
        _close(a, b, rtol=2e-4)


def test_trainer_on_cuda_end_to_end(tmp_path):
    """Train on the GPU with checkpoints, resume, and load the result on the CPU."""
    g = torch.Generator().manual_seed(0)
    D = torch.randn(48, 16, generator=g)
    D /= D.norm(dim=1, keepdim=True)
    z = torch.zeros(4096, 48).scatter_(1, torch.randint(0, 48, (4096, 3), generator=g),
                                       torch.randn(4096, 3, generator=g))
    x = z @ D + 0.02 * torch.randn(4096, 16, generator=g)
    kw = dict(architecture="abstopk", k=3, d_sae=64, steps=120, batch_size=64, lr=3e-3,
              progress=False, log_every=20, checkpoint_every=50, device="cuda")
    straight = Trainer(TrainConfig(out=str(tmp_path / "a"), **kw), x)
    sae = straight.fit()
    assert sae.W_enc.device.type == "cuda"
    part = Trainer(TrainConfig(out=str(tmp_path / "b"), **kw), x)
    part.fit(until=70)
    resumed = Trainer(TrainConfig(out=str(tmp_path / "b"), resume=True, **kw), x)
    resumed.fit()
    for key, v in straight.sae.state_dict().items():
        w = resumed.sae.state_dict()[key]
        assert torch.equal(v, w) or (torch.isnan(v).all() and torch.isnan(w).all()), key
    loaded = SAE.load(tmp_path / "a")
    assert loaded.W_enc.device.type == "cpu"
    with torch.no_grad():
        err = (loaded(x[:1024]).x_hat - x[:1024]).pow(2).sum() / (x[:1024] - x.mean(0)).pow(2).sum()
    assert err < 0.5
