"""Typer options generated from the config dataclasses: one source for defaults and help.

:func:`config_options` decorates a command function that ends in ``**fields``: it appends
one keyword option per field of the given dataclasses (name, type, default and
``metadata["help"]`` of :func:`abstopk.fields.doc_field`), so no field can be missing from
the command line and no default is written twice. The command receives the parsed values in
``fields`` (field name → value) and builds its configs with :func:`config_kwargs`.

Conventions of the generated options:

* flag ``--field-name`` (underscores → dashes), plus the spellings of :data:`ALIASES`;
* ``bool`` fields are ``--name/--no-name`` switches;
* ``list[...]`` / ``tuple[...]`` fields take comma-separated values (``--k 8,16,32``);
* a field named ``device`` also takes ``auto`` (CUDA when available, else CPU, see
  :func:`resolve_device`);
* fields the command declares itself (a parameter of the same name, e.g. ``--out`` as a
  path) are not generated again.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import typer

from ..errors import UserError

__all__ = [
    "ALIASES",
    "DEVICE_HELP",
    "config_kwargs",
    "config_options",
    "field_flags",
    "resolve_device",
]

#: field name → older flag spellings that keep working (shown first in ``--help``)
ALIASES: dict[str, tuple[str, ...]] = {
    "normalize_activations": ("--normalize",),
    "lr_warmup_frac": ("--warmup-frac",),
    "lr_decay_frac": ("--decay-frac",),
    "adam_beta1": ("--beta1",),
    "adam_beta2": ("--beta2",),
    "autocast": ("--bf16",),   # was a switch; now takes off|bf16|auto
    "layers": ("--layer",),
}

DEVICE_HELP = "'auto': cuda when available, else cpu."


def resolve_device(device: str) -> str:
    """``"auto"`` → ``"cuda"`` when torch sees a GPU, else ``"cpu"``; other values unchanged."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def field_flags(name: str) -> tuple[str, ...]:
    """The command-line spellings of config field ``name`` (aliases first)."""
    main = "--" + name.replace("_", "-")
    return tuple(dict.fromkeys((*ALIASES.get(name, ()), main)))


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    """(inner type, True) for ``X | None`` / ``Optional[X]``; (tp, False) otherwise."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return args[0], True
    return tp, False


def _sequence_item(tp: Any) -> tuple[Any, type] | None:
    """(item type, container) for ``list[X]`` / ``tuple[X, ...]``; None for other types."""
    origin = typing.get_origin(tp)
    if origin in (list, tuple):
        args = [a for a in typing.get_args(tp) if a is not Ellipsis]
        return (args[0] if args else str), origin
    return None


@dataclasses.dataclass(frozen=True)
class _Generated:
    """One generated option: the field it fills and how to turn its text into a value."""

    name: str
    flags: tuple[str, ...]
    parse: Callable[[Any], Any]


def _field_default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return ...


def _make_option(f: dataclasses.Field, tp: Any) -> tuple[inspect.Parameter, _Generated]:
    """The keyword parameter (typer option) of field ``f`` of type ``tp``, and its parser."""
    help_text = str(f.metadata.get("help", ""))
    default = _field_default(f)
    flags = field_flags(f.name)
    inner, optional = _unwrap_optional(tp)
    seq = _sequence_item(inner)
    parse: Callable[[Any], Any] = lambda v: v  # noqa: E731
    if seq is not None:
        item, container = seq
        annotation: Any = str | None if (optional or default is ...) else str
        if isinstance(default, (list, tuple)):
            default = ",".join(str(x) for x in default)
        shown = flags[0]

        def parse(v: Any, _item=item, _container=container, _shown=shown,
                  _optional=optional) -> Any:
            if v is None or (_optional and not str(v).strip()):
                return None
            try:
                values = [_item(x) for x in str(v).replace(" ", "").split(",") if x != ""]
            except ValueError:
                kind = {int: "integers", float: "numbers"}.get(_item, "values")
                raise UserError(f"{_shown}: expected {kind} separated by commas, "
                                f"got {v!r}") from None
            return _container(values)

        decls = flags
    elif inner is bool:
        annotation = bool
        decls = tuple(f"{fl}/--no-{fl[2:]}" for fl in flags)
        if default is ...:
            default = False
    else:
        annotation = inner | None if optional else inner
        decls = flags
    if f.name == "device":
        help_text = f"{help_text} {DEVICE_HELP}".strip()
        parse = resolve_device
    option = typer.Option(default, *decls, help=help_text, show_default=default is not None)
    param = inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=option,
                              annotation=annotation)
    return param, _Generated(f.name, flags, parse)


def config_options(*classes: type, exclude: Iterable[str] = ()) -> Callable:
    """Decorator: add an option for every field of ``classes`` to a typer command.

    The decorated function declares its own parameters (they win over a field of the same
    name, e.g. a path-typed ``out``) and ends in ``**fields``; it is called with the parsed
    value of every generated option in ``fields``. A field present in several classes gets
    one option (the first class's help). ``exclude``: fields the command sets itself.
    """
    skip = set(exclude)

    def decorate(func: Callable) -> Callable:
        sig = inspect.signature(func, eval_str=True)
        own = [p for p in sig.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
        own_names = {p.name for p in own}
        taken = own_names | skip
        generated: list[_Generated] = []
        params: list[inspect.Parameter] = []
        for cls in classes:
            hints = typing.get_type_hints(cls)
            for f in dataclasses.fields(cls):
                if f.name in taken or not f.init:
                    continue
                taken.add(f.name)
                param, gen = _make_option(f, hints[f.name])
                params.append(param)
                generated.append(gen)

        @functools.wraps(func)
        def command(**kwargs: Any) -> Any:
            fields = {g.name: g.parse(kwargs.pop(g.name)) for g in generated}
            return func(**kwargs, **fields)

        all_params = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own] + params
        command.__signature__ = inspect.Signature(all_params)  # type: ignore[attr-defined]
        command.__annotations__ = {p.name: p.annotation for p in all_params}
        del command.__wrapped__  # typer must read the new signature, not the original's
        command.config_fields = tuple(g.name for g in generated)  # type: ignore[attr-defined]
        return command

    return decorate


def config_kwargs(cls: type, values: Mapping[str, Any], **override: Any) -> dict[str, Any]:
    """The entries of ``values`` (and ``override``) that are fields of dataclass ``cls``."""
    names = {f.name for f in dataclasses.fields(cls)}
    merged = {**values, **override}
    return {k: v for k, v in merged.items() if k in names}
