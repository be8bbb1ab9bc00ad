"""Interventions on a Hugging Face causal LM, as context managers that work inside ``generate``.

Every intervention hooks the output of decoder blocks (``resid_post``, or another site) and
rewrites the hidden states h [B, T, d] of the positions it applies to:

* :func:`add_direction` — h ← h + α·v (activation addition; α signed);
* :func:`ablate_direction` — h ← h − (h·v̂) v̂ at every block (or the given ones) and on the
  embeddings, so no component along v is left anywhere in the residual stream;
* :func:`edit_latents` — SAE latent edits with the error term kept:
  h ← h + (D(z') − D(z)) where z = encode(h), z' = z with ``z_i`` set to or increased by a
  value (negative values allowed: signed latents steer both ways), D the SAE decoder. Since
  D is affine, ``x̂' + (h − x̂) = h + D(z') − D(z)``: only the latent's change reaches the
  model, and an edit that leaves z unchanged leaves h unchanged bit for bit.

Positions (``positions=``): ``"all"``, ``"prompt"`` (positions before the prompt's end) or
``"generated"`` (positions at or after it). A :class:`PositionTracker` follows absolute
positions across the calls of ``generate``: the first forward inside the block is the
prompt (its length is the prompt length unless ``prompt_len`` is given); a later forward
over a single token continues from the cached positions (KV cache); a later forward over
several tokens restarts at position 0 (generation without a cache). Use one ``with`` block
per ``generate`` call.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = [
    "POSITIONS",
    "LatentEdit",
    "PositionTracker",
    "ablate_direction",
    "add_direction",
    "edit_latents",
]

POSITIONS = ("all", "prompt", "generated")


class PositionTracker:
    """Absolute positions of the tokens in each forward call of one generation.

    ``mask(T)`` [T] bool says which of the call's T positions the intervention applies to.
    """

    def __init__(self, positions: str = "all", prompt_len: int | None = None) -> None:
        if positions not in POSITIONS:
            raise ValueError(f"unknown positions {positions!r}; choose one of "
                             f"{', '.join(POSITIONS)}")
        self.positions = positions
        self.prompt_len = prompt_len
        self.seen = 0  # positions processed so far in this generation

    def mask(self, T: int, device: torch.device) -> Tensor | None:
        """[T] bool for this call (None = every position), and advance the position count."""
        start = self.seen if (T == 1 and self.seen > 0) else 0
        if self.prompt_len is None:
            self.prompt_len = T
        self.seen = start + T
        if self.positions == "all":
            return None
        pos = torch.arange(start, start + T, device=device)
        return pos < self.prompt_len if self.positions == "prompt" else pos >= self.prompt_len


def _apply(h: Tensor, delta: Tensor, mask: Tensor | None) -> Tensor:
    """h + delta where ``mask`` [T] is True (everywhere when None); h [B, T, d]."""
    if mask is None:
        return h + delta
    return torch.where(mask.view(1, -1, 1), h + delta, h)


@contextlib.contextmanager
def add_direction(model, layer: int, vector: Tensor, alpha: float, *,
                  site: str = "resid_post", positions: str = "all",
                  prompt_len: int | None = None) -> Iterator[PositionTracker]:
    """Within the block, ``site`` of ``layer`` becomes h + α·v at the chosen positions.

    ``vector`` [d] in activation units (use ``alpha = s · scale / ‖v‖`` to add ``s`` typical
    magnitudes along the unit direction). Yields the position tracker.
    """
    from ..lm.hooks import replace_activation

    track = PositionTracker(positions, prompt_len)
    v = vector.detach().float()

    def fn(h: Tensor) -> Tensor:
        m = track.mask(h.shape[1], h.device)
        return _apply(h, (alpha * v).to(h.device, h.dtype), m)

    with replace_activation(model, layer, site, fn):
        yield track


@contextlib.contextmanager
def ablate_direction(model, vector: Tensor, layers: Iterable[int] | None = None, *,
                     site: str = "resid_post") -> Iterator[None]:
    """Within the block, project v̂ out: h ← h − (h·v̂) v̂.

    ``layers=None``: on the embeddings (``resid_pre`` of block 0) and after every block, so
    the residual stream never carries v; otherwise at ``site`` of the given layers only.
    """
    from ..lm.hooks import find_blocks, replace_activation

    unit = vector.detach().float()
    unit = unit / unit.norm().clamp_min(1e-12)

    def project_out(h: Tensor) -> Tensor:
        u = unit.to(h.device, h.dtype)
        return h - (h @ u).unsqueeze(-1) * u

    if layers is None:
        _, blocks = find_blocks(model)
        sites = [(0, "resid_pre")] + [(L, "resid_post") for L in range(len(blocks))]
    else:
        sites = [(int(L), site) for L in layers]
    with contextlib.ExitStack() as stack:
        for L, s in sites:
            stack.enter_context(replace_activation(model, L, s, project_out))
        yield


@dataclass(frozen=True)
class LatentEdit:
    """One latent edit: ``z_i ← value`` (``mode="set"``) or ``z_i ← z_i + value`` (``"add"``)."""

    latent: int
    value: float
    mode: str = "set"

    def __post_init__(self) -> None:
        if self.mode not in ("set", "add"):
            raise ValueError(f"unknown edit mode {self.mode!r}; choose 'set' or 'add'")


def _as_edits(edits: LatentEdit | Iterable[LatentEdit] | Mapping[int, float]) -> list[LatentEdit]:
    if isinstance(edits, LatentEdit):
        return [edits]
    if isinstance(edits, Mapping):
        return [LatentEdit(int(i), float(v)) for i, v in edits.items()]
    return list(edits)


@contextlib.contextmanager
def edit_latents(model, sae, edits: LatentEdit | Iterable[LatentEdit] | Mapping[int, float], *,
                 layer: int | None = None, site: str | None = None, positions: str = "all",
                 prompt_len: int | None = None) -> Iterator[PositionTracker]:
    """Within the block, edit SAE latents at ``site`` of ``layer`` keeping the SAE's error.

    ``edits``: :class:`LatentEdit` objects, or ``{latent: value}`` meaning "set". ``layer`` and
    ``site`` default to the SAE's own (``sae.cfg.hook_layer`` / ``hook_site``). Several edits
    apply together. See the module docstring for the math.
    """
    from ..lm.hooks import replace_activation

    edits = _as_edits(edits)
    if not edits:
        raise ValueError("no latent edit given")
    d_sae = sae.cfg.d_sae
    for e in edits:
        if not 0 <= e.latent < d_sae:
            raise ValueError(f"latent {e.latent} out of range: the SAE has {d_sae} latents")
    layer = sae.cfg.hook_layer if layer is None else layer
    site = (sae.cfg.hook_site or "resid_post") if site is None else site
    if layer is None:
        raise ValueError("the SAE records no hook layer: pass layer=")
    idx = torch.tensor([e.latent for e in edits])
    val = torch.tensor([e.value for e in edits])
    add = torch.tensor([e.mode == "add" for e in edits])
    track = PositionTracker(positions, prompt_len)

    @torch.no_grad()
    def fn(h: Tensor) -> Tensor:
        m = track.mask(h.shape[1], h.device)
        B, T, d = h.shape
        x = h.reshape(B * T, d).to(sae.dtype)
        _, stats = sae.normalize(x)
        z = sae.encode(x)
        z_new = z.clone()
        cols = z_new[:, idx.to(z.device)]
        v = val.to(z.device, z.dtype)
        z_new[:, idx.to(z.device)] = torch.where(add.to(z.device), cols + v, v)
        delta = (sae.decode(z_new, stats) - sae.decode(z, stats)).view(B, T, d)
        return _apply(h, delta.to(h.dtype), m)

    with replace_activation(model, layer, site, fn):
        yield track
