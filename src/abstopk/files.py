"""Files at the bottom of the package: atomic writes, file hashes, the cache root, mmap reads.

* Atomic writes: write to a temporary name in the same folder, fsync, then rename. A reader
  never sees a half-written checkpoint, cache shard or config: either the old file or the
  complete new one.
* :func:`sha256_file`: the one file hash (optionally memoised by path, size and mtime).
* :func:`cache_root`: ``$ABSTOPK_CACHE`` or ``~/.cache/abstopk``.
* The one safetensors reader: :func:`safetensors_header` (validated header),
  :func:`mmap_safetensors` / :func:`mmap_tensor` (memory-mapped :class:`MappedTensor`; nothing
  is read until sliced), :class:`BF16Array` and :func:`rows_as_float32` (bfloat16 has no numpy
  dtype: it is mapped as marked uint16 bit patterns and converted exactly on read).
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "BF16Array",
    "MappedTensor",
    "cache_root",
    "sha256_file",
    "atomic_save_safetensors",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_json",
    "mmap_safetensors",
    "mmap_tensor",
    "rows_as_float32",
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


def atomic_write(path: str | os.PathLike, write: Callable[[str], None], *,
                 fsync: bool = True) -> Path:
    """Call ``write(tmp_path)`` then atomically rename ``tmp_path`` to ``path``.

    The final file has the mode a plain ``open()`` would give it: ``0o666 & ~umask``.
    ``fsync=False`` skips flushing the data to disk before the rename (a reader still never
    sees a partial file; after a power loss the file may be empty): for many small derived
    files, such as the thousands of pages of a dashboard, that are cheap to rebuild.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _create_temp(path.parent, path.name)
    mode = os.stat(tmp).st_mode & 0o7777   # 0o666 & ~umask, as the kernel created it
    try:
        write(tmp)
        if os.stat(tmp).st_mode & 0o7777 != mode:   # a writer that replaced the file
            os.chmod(tmp, mode)
        if fsync:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, fsync: bool = True) -> Path:
    """Atomically write ``data`` to ``path`` (``fsync``: see :func:`atomic_write`)."""

    def _w(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(data)

    return atomic_write(path, _w, fsync=fsync)


def atomic_write_json(path: str | os.PathLike, obj: Any, *, fsync: bool = True,
                      indent: int | None = 2) -> Path:
    """Atomically write ``obj`` as JSON, indented by ``indent`` (None: compact, and several
    times faster to encode for large derived files); ``fsync``: see :func:`atomic_write`."""
    text = json.dumps(obj, indent=indent, sort_keys=True,
                      separators=None if indent is not None else (",", ":"))
    return atomic_write_bytes(path, (text + "\n").encode(), fsync=fsync)


def atomic_save_safetensors(
    path: str | os.PathLike, tensors: dict, metadata: dict[str, str] | None = None
) -> Path:
    """Atomically save a dict of tensors with ``safetensors.torch.save_file``."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    return atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))


# ----------------------------------------------------------------- memory-mapped reads
#: safetensors dtype -> numpy dtype of the mapped array (BF16: its 16-bit patterns, marked)
_ST_DTYPES = {
    "F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "<u2", "I64": "<i8", "I32": "<i4",
    "I16": "<i2", "I8": "i1", "U8": "u1", "BOOL": "?",
}
_MAX_HEADER_BYTES = 100_000_000


class BF16Array(np.ndarray):
    """A uint16 array holding bfloat16 bit patterns (the mapped form of a BF16 tensor).

    numpy has no bfloat16; the marker keeps the meaning through slicing and fancy indexing,
    so :func:`rows_as_float32` (and torch) can convert the rows exactly: the float32 value of
    the pattern ``b`` has the bits ``b << 16``.
    """

    def __new__(cls, arr: np.ndarray) -> BF16Array:
        return arr.view(cls)


def rows_as_float32(array: np.ndarray, rows: Any = slice(None)) -> np.ndarray:
    """``array[rows]`` as a float32 numpy array (own memory; bf16 patterns converted exactly)."""
    if isinstance(array, BF16Array):
        bits = np.asarray(array.view(np.ndarray)[rows], dtype=np.uint16).astype(np.uint32) << 16
        return bits.view(np.float32)
    return np.asarray(array[rows], dtype=np.float32)


def safetensors_header(path: str | os.PathLike) -> tuple[dict[str, Any], int]:
    """Parse a safetensors header: returns (header dict, byte offset where data starts).

    Format: 8-byte little-endian header length n, n bytes of JSON, then the raw data; each
    tensor entry has ``dtype``, ``shape`` and ``data_offsets`` [begin, end) relative to the
    end of the header (``data_start = 8 + n``). Anything else raises ``ValueError``
    ("not a safetensors file (...)").
    """
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise ValueError(f"{path}: not a safetensors file (too short)")
        (n,) = struct.unpack("<Q", raw)
        size = os.fstat(f.fileno()).st_size
        if n > _MAX_HEADER_BYTES:
            raise ValueError(f"{path}: not a safetensors file (header length {n})")
        if n > size - 8:
            raise ValueError(f"{path}: not a safetensors file (header length {n} > file size)")
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"{path}: not a safetensors file ({e})") from None
    if not isinstance(header, dict):
        raise ValueError(f"{path}: not a safetensors file (header is not a JSON object)")
    return header, 8 + n


class MappedTensor:
    """A tensor of a safetensors file, memory-mapped (nothing is read until sliced).

    ``array`` is the numpy memory map (a :class:`BF16Array` for bf16); ``shape`` and
    ``st_dtype`` (the safetensors dtype name) describe it; ``rows(a, b)`` / ``take(idx)``
    return torch tensors of the selected leading-dimension rows (float32 for float data by
    default; bf16 is converted exactly).
    """

    def __init__(self, array: np.ndarray, st_dtype: str):
        self.array = array
        self.st_dtype = st_dtype
        self.shape = tuple(array.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def _to_torch(self, a, dtype):
        import torch

        a = np.array(a, copy=True)  # own, writable memory (a memmap slice is read-only)
        if self.st_dtype == "BF16":
            t = torch.from_numpy(a.view(np.int16)).view(torch.bfloat16)
        else:
            t = torch.from_numpy(a)
        if dtype is None:
            dtype = torch.float32 if t.is_floating_point() else t.dtype
        return t.to(dtype)

    def rows(self, start: int, stop: int, dtype=None):
        """Rows [start, stop) as a torch tensor (float32 by default for float data)."""
        return self._to_torch(self.array[start:stop], dtype)

    def take(self, idx, dtype=None):
        """Rows at integer indices ``idx`` (1-D numpy/torch/list) as a torch tensor."""
        return self._to_torch(self.array[np.asarray(idx)], dtype)


def _map_tensor(path: str | os.PathLike, name: str, info: Any, data_start: int,
                file_size: int) -> MappedTensor:
    """Memory-map the tensor ``name`` described by the header entry ``info``, validated."""
    if not isinstance(info, dict) or not {"dtype", "shape", "data_offsets"} <= info.keys():
        raise ValueError(f"{path}: not a safetensors file (malformed entry for {name!r})")
    st = info["dtype"]
    if st not in _ST_DTYPES:
        raise ValueError(f"{path}: tensor {name!r} has unsupported dtype {st}")
    dtype = np.dtype(_ST_DTYPES[st])
    shape = tuple(int(s) for s in info["shape"])
    begin, end = (int(o) for o in info["data_offsets"])
    if min(shape, default=0) < 0 or end - begin != dtype.itemsize * int(
            np.prod(shape, dtype=np.int64)):
        raise ValueError(f"{path}: tensor {name!r} data size does not match its shape")
    if begin < 0 or data_start + end > file_size:
        raise ValueError(f"{path}: tensor {name!r} lies outside the file (truncated?)")
    if begin == end:
        arr = np.zeros(shape, dtype=dtype)
    else:
        arr = np.memmap(path, dtype=dtype, mode="r", offset=data_start + begin, shape=shape)
    return MappedTensor(BF16Array(arr) if st == "BF16" else arr, st)


def mmap_safetensors(path: str | os.PathLike) -> dict[str, MappedTensor]:
    """Memory-map every tensor of a safetensors file (RAM does not grow with file size)."""
    header, start = safetensors_header(path)
    size = os.path.getsize(path)
    return {name: _map_tensor(path, name, info, start, size)
            for name, info in header.items() if name != "__metadata__"}


def mmap_tensor(path: str | os.PathLike, key: str | None = None) -> MappedTensor:
    """Memory-map one tensor of a safetensors file.

    ``key``: the tensor's name; may be omitted when the file holds exactly one tensor.
    """
    header, start = safetensors_header(path)
    names = [k for k in header if k != "__metadata__"]
    if key is None:
        if len(names) != 1:
            raise ValueError(
                f"{path}: holds {len(names)} tensors ({', '.join(sorted(names)[:5])}); "
                "name the tensor to read (key)"
            )
        key = names[0]
    if key not in names:
        raise ValueError(f"{path}: no tensor named {key!r} (has {', '.join(sorted(names))})")
    return _map_tensor(path, key, header[key], start, os.path.getsize(path))
