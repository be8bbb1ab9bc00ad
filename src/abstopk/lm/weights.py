"""The stored format of a model's weights, as recorded in cache manifests and SAE configs.

A model's numbers depend on how its weights were stored, not only on the dtype its forward
runs in: the embedded SmolLM2-135M-Instruct is a 4-bit **GGUF Q4_1** checkpoint that
transformers dequantises to float32, so its activations are those of the quantised model.
:func:`weight_format` names the format in one short string:

* ``.gguf`` (embedded default or a file): ``"GGUF Q4_1 (dequantised to float32)"`` — the
  GGUF's ``general.file_type`` key, read by :func:`gguf_file_type` from the file's header
  (the key-value section only: the parse stops at that key, it does not map the tensors);
* a folder (local or a hub snapshot): ``"safetensors BF16"`` — the dtype(s) of the tensors in
  its ``*.safetensors`` headers (the commonest first when they mix, e.g.
  ``"safetensors F32+BF16"``), or ``"pytorch .bin (torch_dtype float32)"`` from
  ``config.json`` when there are no safetensors files.
"""

from __future__ import annotations

import json
import struct
from collections import Counter
from pathlib import Path

__all__ = ["GGUF_FILE_TYPES", "gguf_file_type", "safetensors_dtypes", "weight_format"]

#: llama.cpp's ``LlamaFileType`` values (``general.file_type``) → the quantisation's name
GGUF_FILE_TYPES: dict[int, str] = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K",
    11: "Q3_K_S", 12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S",
    17: "Q5_K_M", 18: "Q6_K", 19: "IQ2_XXS", 20: "IQ2_XS", 21: "Q2_K_S", 22: "IQ3_XS",
    23: "IQ3_XXS", 24: "IQ1_S", 25: "IQ4_NL", 26: "IQ3_S", 27: "IQ3_M", 28: "IQ2_S",
    29: "IQ2_M", 30: "IQ4_XS", 31: "IQ1_M", 32: "BF16", 36: "TQ1_0", 37: "TQ2_0",
}

# GGUF value types: id -> struct format of a scalar (8: string, 9: array are handled apart)
_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q",
            12: "d"}


class _Reader:
    def __init__(self, f) -> None:
        self.f = f

    def take(self, fmt: str):
        size = struct.calcsize("<" + fmt)
        data = self.f.read(size)
        if len(data) != size:
            raise ValueError("truncated GGUF header")
        return struct.unpack("<" + fmt, data)[0]

    def string(self) -> str:
        n = self.take("Q")
        return self.f.read(n).decode("utf-8", errors="replace")

    def skip_value(self, vtype: int) -> None:
        if vtype in _SCALARS:
            self.f.seek(struct.calcsize("<" + _SCALARS[vtype]), 1)
        elif vtype == 8:
            self.f.seek(self.take("Q"), 1)
        elif vtype == 9:
            inner, n = self.take("I"), self.take("Q")
            if inner in _SCALARS:
                self.f.seek(n * struct.calcsize("<" + _SCALARS[inner]), 1)
            else:
                for _ in range(n):
                    self.skip_value(inner)
        else:
            raise ValueError(f"unknown GGUF value type {vtype}")


def gguf_file_type(path: str | Path) -> str | None:
    """The quantisation named by ``general.file_type`` in the GGUF header of ``path``
    (e.g. ``"Q4_1"``; ``"type 42"`` for a value not in :data:`GGUF_FILE_TYPES`), or None when
    the header has no such key. ``ValueError`` when the file is not a GGUF file."""
    with open(path, "rb") as f:
        if f.read(4) != b"GGUF":
            raise ValueError(f"{path}: not a GGUF file")
        r = _Reader(f)
        version = r.take("I")
        if version < 2:
            raise ValueError(f"{path}: GGUF version {version} is not supported")
        r.take("Q")                     # tensor count
        for _ in range(r.take("Q")):    # key-value pairs
            key, vtype = r.string(), r.take("I")
            if key == "general.file_type" and vtype in _SCALARS:
                value = int(r.take(_SCALARS[vtype]))
                return GGUF_FILE_TYPES.get(value, f"type {value}")
            r.skip_value(vtype)
    return None


def safetensors_dtypes(folder: str | Path) -> Counter:
    """Element counts per dtype (``"BF16"``, ``"F32"``, …) over the ``*.safetensors`` files of
    ``folder``, read from their JSON headers only."""
    counts: Counter = Counter()
    for p in sorted(Path(folder).glob("*.safetensors")):
        with open(p, "rb") as f:
            n = struct.unpack("<Q", f.read(8))[0]
            header = json.loads(f.read(n))
        for name, meta in header.items():
            if name == "__metadata__":
                continue
            size = 1
            for d in meta.get("shape", []):
                size *= int(d)
            counts[meta["dtype"]] += size
    return counts


def weight_format(kind: str, source: str | Path) -> str:
    """One line naming how the weights of a loaded model were stored (module docstring).

    ``kind``/``source`` as :func:`abstopk.lm.load.resolve_model_ref` gives them (for ``hub``
    the snapshot folder actually read). Never raises: an unreadable source gives
    ``"unknown"``.
    """
    try:
        if kind in ("embedded", "gguf"):
            ft = gguf_file_type(source) or "of unknown type"
            return f"GGUF {ft} (dequantised to float32)"
        folder = Path(source)
        counts = safetensors_dtypes(folder)
        if counts:
            return "safetensors " + "+".join(d for d, _ in counts.most_common())
        cfg = json.loads((folder / "config.json").read_text())
        return f"pytorch .bin (torch_dtype {cfg.get('torch_dtype') or cfg.get('dtype')})"
    except (OSError, ValueError, KeyError, struct.error):
        return "unknown"

