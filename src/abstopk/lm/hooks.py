"""Hook points of any Hugging Face decoder-only model: read, truncate, replace.

Sites (``L`` = index of a decoder block, 0-based):

* ``resid_pre``  — input of block L (the residual stream before it; L = 0: the embeddings);
* ``resid_post`` — output of block L (the paper's site; equals ``resid_pre`` of block L+1);
* ``attn_out``   — output of block L's attention submodule (before it is added to the stream);
* ``mlp_out``    — output of block L's MLP submodule (before it is added to the stream).

Names follow TransformerLens/SAELens: :func:`hook_name` gives ``blocks.L.hook_resid_post``.

Relation to ``output_hidden_states`` (Llama/GPT-2/NeoX style models in transformers):
``hidden_states[0]`` is the embedding output (= ``resid_pre`` of block 0) and
``hidden_states[L + 1]`` is ``resid_post`` of block L for every L *except the last one*:
the last entry has the model's final norm applied (``hidden_states[-1] = norm(resid_post[-1])``).

The block list is found generically (:func:`find_blocks`): known attribute paths first
(``model.layers``, ``transformer.h``, ``gpt_neox.layers`` …), else the ``nn.ModuleList`` of
identical modules holding the most parameters.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator

import torch
from torch import Tensor, nn

__all__ = [
    "SITES",
    "capture_activations",
    "count_block_calls",
    "find_blocks",
    "hook_name",
    "parse_hook_name",
    "replace_activation",
    "run_to_layer",
    "site_module",
]

SITES = ("resid_pre", "resid_post", "attn_out", "mlp_out")

_BLOCK_PATHS = (
    "model.layers", "model.decoder.layers", "model.language_model.layers",
    "language_model.model.layers", "transformer.h", "transformer.blocks",
    "transformer.layers", "gpt_neox.layers", "backbone.layers", "model.blocks",
    "layers", "h", "blocks",
)
_ATTN_NAMES = ("self_attn", "attn", "attention", "self_attention", "mixer")
_MLP_NAMES = ("mlp", "feed_forward", "ffn", "block_sparse_moe", "ff")


def hook_name(layer: int, site: str = "resid_post") -> str:
    """``blocks.{layer}.hook_{site}`` (TransformerLens / SAELens naming)."""
    if site not in SITES:
        raise ValueError(f"unknown site {site!r}; choose one of {', '.join(SITES)}")
    return f"blocks.{int(layer)}.hook_{site}"


def parse_hook_name(name: str) -> tuple[int, str]:
    """Inverse of :func:`hook_name`: ``"blocks.9.hook_resid_post"`` -> ``(9, "resid_post")``."""
    parts = name.split(".")
    if len(parts) != 3 or parts[0] != "blocks" or not parts[2].startswith("hook_"):
        raise ValueError(f"not a hook name: {name!r} (expected blocks.L.hook_SITE)")
    site = parts[2][len("hook_"):]
    if site not in SITES:
        raise ValueError(f"unknown site {site!r} in {name!r}")
    return int(parts[1]), site


def _get_attr_path(obj, path: str):
    for part in path.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


def _is_block_list(m) -> bool:
    return isinstance(m, nn.ModuleList) and len(m) > 0 and \
        len({type(c) for c in m}) == 1


def find_blocks(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """(dotted path, ModuleList) of the decoder blocks of ``model``.

    Tries the attribute paths used by transformers' decoder-only models, then falls back to the
    ``nn.ModuleList`` of same-type modules with the most parameters.
    """
    for path in _BLOCK_PATHS:
        m = _get_attr_path(model, path)
        if _is_block_list(m):
            return path, m
    best, best_n = None, -1
    for name, m in model.named_modules():
        if _is_block_list(m):
            n = sum(p.numel() for p in m.parameters())
            if n > best_n:
                best, best_n = (name, m), n
    if best is None:
        raise ValueError(f"could not find the decoder block list of {type(model).__name__}")
    return best


def _block(model: nn.Module, layer: int) -> nn.Module:
    _, blocks = find_blocks(model)
    n = len(blocks)
    if not -n <= layer < n:
        raise ValueError(f"layer {layer} out of range: the model has {n} blocks (0..{n - 1})")
    return blocks[layer]


def site_module(model: nn.Module, layer: int, site: str) -> tuple[nn.Module, bool]:
    """(module to hook, is_pre_hook) for ``site`` of block ``layer``.

    ``resid_pre`` is a forward *pre*-hook on the block; the other sites are forward hooks on
    the block (``resid_post``) or on its attention / MLP submodule.
    """
    if site not in SITES:
        raise ValueError(f"unknown site {site!r}; choose one of {', '.join(SITES)}")
    block = _block(model, layer)
    if site == "resid_pre":
        return block, True
    if site == "resid_post":
        return block, False
    names = _ATTN_NAMES if site == "attn_out" else _MLP_NAMES
    for nm in names:
        sub = getattr(block, nm, None)
        if isinstance(sub, nn.Module):
            return sub, False
    raise ValueError(
        f"site {site!r} is not available for {type(block).__name__}: no submodule named "
        f"{' / '.join(names)}"
    )


def _first(out):
    """The hidden-states tensor of a module output (tensor or tuple whose first item is it)."""
    if isinstance(out, Tensor):
        return out
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], Tensor):
        return out[0]
    raise TypeError(f"cannot find the hidden states in a module output of type {type(out)}")


def _with_first(out, new: Tensor):
    if isinstance(out, Tensor):
        return new
    return type(out)((new, *out[1:])) if isinstance(out, tuple) else [new, *out[1:]]


def _pre_hidden(args: tuple, kwargs: dict) -> Tensor:
    if args and isinstance(args[0], Tensor):
        return args[0]
    if isinstance(kwargs.get("hidden_states"), Tensor):
        return kwargs["hidden_states"]
    raise TypeError("cannot find the hidden states among a block's inputs")


def _pre_replace(args: tuple, kwargs: dict, new: Tensor):
    if args and isinstance(args[0], Tensor):
        return (new, *args[1:]), kwargs
    kwargs = dict(kwargs)
    kwargs["hidden_states"] = new
    return args, kwargs


def _register(model, layer: int, site: str, fn: Callable[[Tensor], Tensor | None]):
    """Register ``fn(acts) -> new acts or None`` on a site; returns the handle."""
    module, pre = site_module(model, layer, site)
    if pre:
        def pre_hook(_mod, args, kwargs):
            h = _pre_hidden(args, kwargs)
            new = fn(h)
            if new is None:
                return None
            return _pre_replace(args, kwargs, new.to(h.dtype))

        return module.register_forward_pre_hook(pre_hook, with_kwargs=True)

    def hook(_mod, _args, out):
        h = _first(out)
        new = fn(h)
        if new is None:
            return None
        return _with_first(out, new.to(h.dtype))

    return module.register_forward_hook(hook)


class _StopForward(Exception):
    """Raised by a hook to end a truncated forward after the last needed block."""


def _as_layers(layers: int | Iterable[int], n_blocks: int) -> list[int]:
    if isinstance(layers, int):
        layers = [layers]
    out = sorted({int(x) % n_blocks if int(x) < 0 else int(x) for x in layers})
    if not out:
        raise ValueError("no layer given")
    if out[-1] >= n_blocks:
        raise ValueError(f"layer {out[-1]} out of range: the model has {n_blocks} blocks")
    return out


def _forward(model, input_ids: Tensor, attention_mask: Tensor | None, **kwargs):
    return model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False, **kwargs)


@contextlib.contextmanager
def capture_activations(model: nn.Module, layers: int | Iterable[int],
                        site: str = "resid_post") -> Iterator[dict[int, Tensor]]:
    """Record ``site`` of ``layers`` during any forward run inside the block.

    Yields a dict filled as the forward runs: ``{layer: acts [B, T, d]}`` (detached, the
    model's dtype). Hooks are removed on exit, even on error.
    """
    _, blocks = find_blocks(model)
    store: dict[int, Tensor] = {}
    handles = []
    try:
        for L in _as_layers(layers, len(blocks)):
            def rec(h, L=L):
                store[L] = h.detach()
            handles.append(_register(model, L, site, rec))
        yield store
    finally:
        for h in handles:
            h.remove()


def run_to_layer(model: nn.Module, input_ids: Tensor, attention_mask: Tensor | None = None,
                 layers: int | Iterable[int] = 0, site: str = "resid_post",
                 **forward_kwargs) -> dict[int, Tensor]:
    """Truncated forward: ``{L: acts [B, T, d]}`` for ``site`` of every layer in ``layers``.

    The model runs from the embeddings up to the last requested site only: a hook raises a
    private exception right after the last activation is recorded, so later blocks, the final
    norm and the LM head never run (``resid_pre`` of block L stops *before* block L runs).
    Runs under ``torch.no_grad()``; activations are in the model's dtype. ``input_ids``
    [B, T] (long), ``attention_mask`` [B, T] or None (no padding).
    """
    _, blocks = find_blocks(model)
    layers = _as_layers(layers, len(blocks))
    last = layers[-1]
    store: dict[int, Tensor] = {}
    handles = []

    def make(L: int):
        def rec(h):
            store[L] = h.detach()
            if L == last:
                raise _StopForward
        return rec

    try:
        for L in layers:
            handles.append(_register(model, L, site, make(L)))
        with torch.no_grad():
            try:
                _forward(model, input_ids, attention_mask, **forward_kwargs)
            except _StopForward:
                pass
    finally:
        for h in handles:
            h.remove()
    missing = [L for L in layers if L not in store]
    if missing:
        raise RuntimeError(f"site {site} of layers {missing} was never reached in the forward")
    return store


@contextlib.contextmanager
def replace_activation(model: nn.Module, layer: int, site: str,
                       fn: Callable[[Tensor], Tensor]) -> Iterator[None]:
    """Within the block, every forward uses ``fn(acts)`` in place of ``site`` of ``layer``.

    ``fn`` maps acts [B, T, d] to a tensor of the same shape (cast back to the model dtype):
    e.g. ``lambda x: sae(x).x_hat`` splices a reconstruction, ``lambda x: x + a * v`` steers.
    The hook is removed on exit, even when the body raises.
    """
    handle = _register(model, layer, site, fn)
    try:
        yield
    finally:
        handle.remove()


@contextlib.contextmanager
def count_block_calls(model: nn.Module) -> Iterator[dict[str, int]]:
    """Count, during the block, how many decoder blocks ran and whether the LM head ran.

    Yields ``{"blocks": n, "lm_head": m}``: the number of block forwards that *completed*
    and of LM-head forwards (the head is the model's output embedding module, when it has
    one). Enter it before registering other hooks so that its hooks run first.
    """
    _, blocks = find_blocks(model)
    counts = {"blocks": 0, "lm_head": 0}
    handles = []

    def inc(key):
        def post(_mod, _args, _out):
            counts[key] += 1
        return post

    try:
        for b in blocks:
            handles.append(b.register_forward_hook(inc("blocks")))
        head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
        if isinstance(head, nn.Module):
            handles.append(head.register_forward_hook(inc("lm_head")))
        yield counts
    finally:
        for h in handles:
            h.remove()
