"""Which floating-point precision a run uses: bf16 where the hardware has bf16 units.

``auto`` means bfloat16 only where bf16 products run on dedicated units — a CPU with AMX
(``amx_bf16``) or AVX512-BF16 (``avx512_bf16``) in ``/proc/cpuinfo``'s flags, or a CUDA
device for which ``torch.cuda.is_bf16_supported()`` holds (compute capability ≥ 8.0) — and
float32 everywhere else. On a CPU without those units (e.g. AVX2-only Zen) bf16 products are
emulated by converting to float32 and are slower than float32, so ``auto`` never picks them
there (``docs/benchmarks.md``, section Precision, has the measurements).

Used by the harvest (``--model-dtype auto``: the dtype of the LM forward) and by training
(``--autocast auto``: the dtype of the SAE's encoder/decoder products).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

__all__ = ["BF16_CPU_FLAGS", "bf16_units", "cpu_flags", "resolve_dtype"]

#: /proc/cpuinfo flags naming CPU units that compute bf16 products natively
BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")

_DTYPES = ("float32", "bfloat16", "float16")


@lru_cache(maxsize=4)
def cpu_flags(path: str = "/proc/cpuinfo") -> frozenset[str]:
    """The CPU feature flags listed in ``path`` (the first ``flags`` line); empty when the
    file is missing (not Linux) or has no flags line."""
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def bf16_units(device: str = "cpu", *, flags: frozenset[str] | None = None) -> bool:
    """True when ``device`` computes bf16 products on dedicated units.

    ``cpu``: one of :data:`BF16_CPU_FLAGS` among ``flags`` (default: :func:`cpu_flags`).
    ``cuda[:i]``: CUDA is available and ``torch.cuda.is_bf16_supported()``. Anything else:
    False.
    """
    kind = str(device).split(":")[0]
    if kind == "cpu":
        have = cpu_flags() if flags is None else flags
        return any(f in have for f in BF16_CPU_FLAGS)
    if kind == "cuda":
        import torch

        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    return False


def resolve_dtype(name: str, device: str = "cpu", *,
                  flags: frozenset[str] | None = None) -> str:
    """``"auto"`` → ``"bfloat16"`` when :func:`bf16_units` (``device``), else ``"float32"``;
    a dtype name (float32, bfloat16, float16) is returned unchanged. ``ValueError`` otherwise.
    """
    if name == "auto":
        return "bfloat16" if bf16_units(device, flags=flags) else "float32"
    if name not in _DTYPES:
        raise ValueError(f"dtype must be auto, {', '.join(_DTYPES)}; got {name!r}")
    return name
