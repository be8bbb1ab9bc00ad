"""Sentence-level activations for the probing tasks: LM to the SAE's layer, SAE per token, pool.

For each sentence ``s`` with tokens ``t = 1..T_s`` (BOS prepended and excluded, padding
excluded, at most ``max_length`` tokens including BOS):

* ``x_t`` [d_in]  — the SAE input: the LM activation at the SAE's hook (layer, site), computed
  with the truncated forward :func:`abstopk.lm.run_to_layer`;
* ``z_t`` [d_sae] — the SAE code of ``x_t`` (``sae.forward(x).z``, eval mode);
* pooled (SAEBench-style mean over the sentence's tokens)::

      x̄ = mean_t x_t            (raw residual: the "LLM" baseline features)
      z̄ = mean_t z_t            (signed latents)
      ā = mean_t |z_t|          (sign-aware firing strength: a latent that encodes the
                                 concept with either sign scores high)
      c̄ = mean_t g_t · z_t      (raw-space coefficient of decoder row i)

  where ``g_t`` is the SAE's denormalisation gain (1 for ``normalize_activations = none``,
  ``1/input_scale`` for ``scalar``, the token's std for ``layer_norm``). Since the decoder is
  linear, the SAE's contribution of latent ``i`` to the pooled reconstruction is
  ``c̄_i · W_dec[i]``; so zero-ablating a set ``S`` of latents at every token *with the SAE
  error term kept* (SAEBench's SCR/TPP ablation) changes the pooled activation to exactly
  ``x̄ − Σ_{i∈S} c̄_i W_dec[i]`` — computed without re-running anything.

Encoding per token and then pooling (rather than encoding the pooled activation) follows
SAEBench's ``get_sae_meaned_activations``; for TopK-style SAEs the pooled code then has more
than k non-zeros, as it should for a sentence.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["PooledActs", "eval_mode", "lm_token_activations", "pool_tokens", "pooled_activations",
           "resolve_hook", "sae_codes"]


def resolve_hook(sae, layer: int | None = None, site: str | None = None) -> tuple[int, str]:
    """(layer, site) of the SAE: explicit arguments win, else ``sae.cfg.hook_layer``/``hook_site``
    (or ``hook_name`` ``blocks.L.hook_SITE``); site defaults to ``resid_post``."""
    cfg = getattr(sae, "cfg", None)
    if layer is None and cfg is not None:
        layer = getattr(cfg, "hook_layer", None)
    if site is None and cfg is not None:
        site = getattr(cfg, "hook_site", None)
    name = getattr(cfg, "hook_name", None) if cfg is not None else None
    if (layer is None or site is None) and name:
        from ...lm.hooks import parse_hook_name

        nl, ns = parse_hook_name(name)
        layer = nl if layer is None else layer
        site = ns if site is None else site
    if layer is None:
        raise ValueError("the SAE's cfg records no hook_layer: pass layer=L")
    return int(layer), site or "resid_post"


@contextlib.contextmanager
def eval_mode(module) -> Iterator[None]:
    """Put ``module`` in eval mode for the block, restoring its training flag after."""
    was = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was)


def _encode_ids(tokenizer, texts: Sequence[str], max_length: int) -> list[list[int]]:
    from ...data.tokens import bos_token_id

    bos = bos_token_id(tokenizer)
    enc = tokenizer(list(texts), add_special_tokens=False, verbose=False)["input_ids"]
    return [[bos] + list(ids)[: max_length - 1] for ids in enc]


def lm_token_activations(model, tokenizer, texts: Sequence[str], layer: int,
                         site: str = "resid_post", *, device: str | torch.device = "cpu",
                         batch_size: int = 32, max_length: int = 128,
                         progress: bool = False, desc: str = "LM forward"
                         ) -> Iterator[tuple[list[int], Tensor, Tensor]]:
    """Yield ``(rows, acts [B, T, d_in] float32, mask [B, T] bool)`` per batch of sentences.

    ``rows`` are the batch's indices into ``texts`` (sentences are batched in order of length
    to limit padding); ``mask`` is True at the sentence's own tokens (not BOS, not padding).
    """
    from ...lm.hooks import run_to_layer

    ids = _encode_ids(tokenizer, texts, max_length)
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    it = range(0, len(order), batch_size)
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(it, desc=desc, unit="batch", leave=False)
    for s in it:
        rows = order[s: s + batch_size]
        T = max(len(ids[i]) for i in rows)
        inp = torch.zeros(len(rows), T, dtype=torch.long)
        att = torch.zeros(len(rows), T, dtype=torch.long)
        for r, i in enumerate(rows):
            inp[r, : len(ids[i])] = torch.tensor(ids[i])
            att[r, : len(ids[i])] = 1
        acts = run_to_layer(model, inp.to(device), att.to(device), layers=[layer], site=site)[layer]
        mask = att.bool()
        mask[:, 0] = False  # BOS
        yield rows, acts.float(), mask.to(acts.device)


def _gain(sae, x: Tensor) -> Tensor | float:
    """Denormalisation gain g per token ([N, 1]) or scalar (see the module docstring)."""
    mode = sae.cfg.normalize_activations
    if mode == "layer_norm":
        return x.float().std(-1, keepdim=True) + 1e-5
    if mode == "scalar":
        return 1.0 / float(sae.input_scale)
    return 1.0


@torch.no_grad()
def sae_codes(sae, x: Tensor) -> tuple[Tensor, Tensor | float]:
    """``(z [N, d_sae] float32, gain)`` for raw activations x [N, d_in] (call in eval mode)."""
    x = x.to(device=sae.device, dtype=sae.dtype)
    z = sae.forward(x).z.float()
    return z, _gain(sae, x)


@dataclass
class PooledActs:
    """Pooled activations of n sentences (input order). See the module docstring.

    x [n, d_in], z [n, d_sae], a [n, d_sae]; c [n, d_sae] only for layer_norm SAEs
    (otherwise ``c = z · gain`` with the scalar ``gain``); n_tokens [n].
    """

    x: Tensor
    z: Tensor
    a: Tensor
    n_tokens: Tensor
    gain: float = 1.0
    c_: Tensor | None = None

    @property
    def c(self) -> Tensor:
        return self.c_ if self.c_ is not None else self.z * self.gain

    def __len__(self) -> int:
        return self.x.shape[0]


@torch.no_grad()
def pool_tokens(sae, acts: Tensor, mask: Tensor) -> PooledActs:
    """Pool one batch: acts [B, T, d_in], mask [B, T] bool (True = a token to average).

    Rows with no token get zeros. ``sae=None`` pools x only (z, a empty [B, 0]).
    """
    acts = acts.float()
    cnt = mask.sum(1)
    cntf = cnt.clamp_min(1).float()[:, None]
    x = (acts * mask[..., None]).sum(1) / cntf
    if sae is None:
        e = torch.zeros(len(x), 0)
        return PooledActs(x=x.cpu(), z=e, a=e, n_tokens=cnt.float().cpu())
    z, g = sae_codes(sae, acts[mask])                                   # [N, d_sae]
    seg = torch.repeat_interleave(torch.arange(len(cnt), device=z.device), cnt.to(z.device))
    B, d_sae = len(cnt), z.shape[1]
    cntf = cntf.to(z.device)
    zs = torch.zeros(B, d_sae, device=z.device).index_add_(0, seg, z) / cntf
    az = torch.zeros(B, d_sae, device=z.device).index_add_(0, seg, z.abs()) / cntf
    c = None
    gain = 1.0
    if isinstance(g, Tensor):
        c = (torch.zeros(B, d_sae, device=z.device).index_add_(0, seg, z * g) / cntf).cpu()
    else:
        gain = g
    return PooledActs(x=x.cpu(), z=zs.cpu(), a=az.cpu(), n_tokens=cnt.float().cpu(), gain=gain,
                      c_=c)


@torch.no_grad()
def pooled_activations(sae, model, tokenizer, texts: Sequence[str], *, layer: int,
                       site: str = "resid_post", device: str | torch.device = "cpu",
                       batch_size: int = 32, max_length: int = 128, progress: bool = False,
                       desc: str = "activations", with_sae: bool = True) -> PooledActs:
    """Run the LM on ``texts`` and pool (mean over tokens) x, z, |z| and c per sentence.

    ``with_sae=False`` skips the SAE (z, a empty [n, 0]) — for raw-residual-only work.
    """
    n = len(texts)
    parts: list[tuple[list[int], PooledActs]] = []
    ctx = eval_mode(sae) if with_sae else contextlib.nullcontext()
    with ctx:
        for rows, acts, mask in lm_token_activations(
                model, tokenizer, texts, layer, site, device=device, batch_size=batch_size,
                max_length=max_length, progress=progress, desc=desc):
            parts.append((rows, pool_tokens(sae if with_sae else None, acts, mask)))
    if not parts:
        raise ValueError("no texts to pool")
    inv = torch.empty(n, dtype=torch.long)
    inv[torch.tensor([i for rows, _ in parts for i in rows])] = torch.arange(n)

    def cat(name: str) -> Tensor:
        return torch.cat([getattr(p, name) for _, p in parts])[inv]

    has_c = parts[0][1].c_ is not None
    return PooledActs(x=cat("x"), z=cat("z"), a=cat("a"), n_tokens=cat("n_tokens"),
                      gain=parts[0][1].gain, c_=cat("c_") if has_c else None)
