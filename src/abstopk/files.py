"""Files at the bottom of the package: atomic writes, file hashes, the cache root, mmap reads.

* Atomic writes: write to a temporary name in the same folder, fsync, then rename. A reader
  never sees a half-written checkpoint, cache shard or config: either the old file or the
  complete new one.
* :func:`sha256_file`: the one file hash (optionally memoised by path, size and mtime).
* :func:`cache_root`: ``$ABSTOPK_CACHE`` or ``~/.cache/abstopk``.
* :func:`mmap_safetensors`: memory-mapped reads of safetensors tensors.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = [
    "MappedTensor",
    "cache_root",
    "sha256_file",
    "atomic_save_safetensors",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_json",
    "mmap_safetensors",
    "safetensors_header",
]


def cache_root() -> Path:
    """``$ABSTOPK_CACHE`` (``~`` expanded) or ``~/.cache/abstopk``; writers create it on demand."""
    env = os.environ.get("ABSTOPK_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "abstopk"


def _sha256(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for blk in iter(lambda: f.read(chunk), b""):
            h.update(blk)
    return h.hexdigest()


def sha256_file(path: str | os.PathLike, *, memo: bool = False) -> str:
    """sha256 (hex) of a file's bytes.

    With ``memo``, the digest is remembered in ``cache_root()/file_hashes.json`` keyed by
    (absolute path, size, mtime_ns), so a large unchanged file (a model) is hashed once; an
    unwritable cache folder only disables the memo.
    """
    path = Path(path).resolve()
    if not memo:
        return _sha256(path)
    st = path.stat()
    key = f"{path}|{st.st_size}|{st.st_mtime_ns}"
    memo_path = cache_root() / "file_hashes.json"
    try:
        table = json.loads(memo_path.read_text())
        if not isinstance(table, dict):
            table = {}
    except (OSError, ValueError):
        table = {}
    if key in table:
        return str(table[key])
    digest = _sha256(path)
    table = {k: v for k, v in table.items() if not k.startswith(f"{path}|")}
    table[key] = digest
    try:
        atomic_write_json(memo_path, table)
    except OSError:
        pass
    return digest


def _create_temp(folder: Path, name: str) -> str:
    """Create an empty, new temporary file ``folder/.name.XXXX.tmp``; return its path.

    It is created with mode ``0o666`` so that the kernel applies the process umask (and a
    folder's default ACL), exactly as for a plain ``open(path, "w")``; ``tempfile.mkstemp``
    would give ``0o600`` whatever the umask.
    """
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    for _ in range(100):
        tmp = str(folder / f".{name}.{secrets.token_hex(6)}.tmp")
        try:
            fd = os.open(tmp, flags, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return tmp
    raise FileExistsError(f"no free temporary name for {name} in {folder}")


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_path)`` then atomically rename ``tmp_path`` to ``path``.

    The final file has the mode a plain ``open()`` would give it: ``0o666 & ~umask``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _create_temp(path.parent, path.name)
    mode = os.stat(tmp).st_mode & 0o7777   # 0o666 & ~umask, as the kernel created it
    try:
        write(tmp)
        if os.stat(tmp).st_mode & 0o7777 != mode:   # a writer that replaced the file
            os.chmod(tmp, mode)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Atomically write ``data`` to ``path``."""

    def _w(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(data)

    return atomic_write(path, _w)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Atomically write ``obj`` as indented JSON."""
    return atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def atomic_save_safetensors(
    path: str | os.PathLike, tensors: dict, metadata: dict[str, str] | None = None
) -> Path:
    """Atomically save a dict of tensors with ``safetensors.torch.save_file``."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    return atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))


# ----------------------------------------------------------------- memory-mapped reads
_ST_DTYPES = {
    "F64": ("<f8", None), "F32": ("<f4", None), "F16": ("<f2", None),
    "BF16": ("<u2", "bfloat16"), "I64": ("<i8", None), "I32": ("<i4", None),
    "I16": ("<i2", None), "I8": ("i1", None), "U8": ("u1", None), "BOOL": ("?", None),
}


def safetensors_header(path: str | os.PathLike) -> tuple[dict, int]:
    """Parse a safetensors header: returns (header dict, byte offset where data starts).

    Format: 8-byte little-endian header length N, N bytes of JSON, then the raw data; each
    tensor's ``data_offsets`` are relative to the end of the header.
    """
    import struct

    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise ValueError(f"{path}: not a safetensors file (too short)")
        (n,) = struct.unpack("<Q", raw)
        if n > 100_000_000:
            raise ValueError(f"{path}: not a safetensors file (header length {n})")
        header = json.loads(f.read(n))
    return header, 8 + n


class MappedTensor:
    """A tensor of a safetensors file, memory-mapped (nothing is read until sliced).

    ``shape``/``dtype_name`` describe it; ``rows(a, b)`` / ``take(idx)`` return float32 torch
    tensors of the selected leading-dimension rows (bf16 is converted exactly).
    """

    def __init__(self, array, st_dtype: str):
        self.array = array          # numpy memmap (bf16 stored as uint16)
        self.st_dtype = st_dtype
        self.shape = tuple(array.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def _to_torch(self, a):
        import numpy as np
        import torch

        a = np.array(a, copy=True)  # own, writable memory (a memmap slice is read-only)
        if self.st_dtype == "BF16":
            t = torch.from_numpy(a.view(np.int16)).view(torch.bfloat16)
        else:
            t = torch.from_numpy(a)
        return t

    def rows(self, start: int, stop: int, dtype=None):
        """Rows [start, stop) as a torch tensor (float32 by default for float data)."""
        import torch

        t = self._to_torch(self.array[start:stop])
        if dtype is None:
            dtype = torch.float32 if t.is_floating_point() else t.dtype
        return t.to(dtype)

    def take(self, idx, dtype=None):
        """Rows at integer indices ``idx`` (1-D numpy/torch/list) as a torch tensor."""
        import numpy as np
        import torch

        idx = np.asarray(idx)
        t = self._to_torch(self.array[idx])
        if dtype is None:
            dtype = torch.float32 if t.is_floating_point() else t.dtype
        return t.to(dtype)


def mmap_safetensors(path: str | os.PathLike) -> dict[str, MappedTensor]:
    """Memory-map every tensor of a safetensors file (RAM does not grow with file size)."""
    import numpy as np

    header, start = safetensors_header(path)
    out: dict[str, MappedTensor] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        st = info["dtype"]
        if st not in _ST_DTYPES:
            raise ValueError(f"{path}: tensor {name} has unsupported dtype {st}")
        np_dtype = np.dtype(_ST_DTYPES[st][0])
        a, b = info["data_offsets"]
        shape = tuple(info["shape"])
        n = int(np.prod(shape)) if shape else 1
        if b - a != n * np_dtype.itemsize:
            raise ValueError(f"{path}: tensor {name} size does not match its shape")
        if n == 0:
            arr = np.zeros(shape, dtype=np_dtype)
        else:
            arr = np.memmap(path, dtype=np_dtype, mode="r", offset=start + a, shape=shape)
        out[name] = MappedTensor(arr, st)
    return out
