"""The package's layering, checked by walking its imports (see docs/architecture.md).

Every ``import`` and ``from … import`` in ``src/abstopk`` — at module level or inside a
function — is an arrow from the importing module to the imported one. The tests fail when
an arrow runs from a lower layer to a higher one, when modules import each other in a circle,
or when a module grows past the size limit without saying why.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "abstopk"

# The bottom: importable by every layer.
BOTTOM = {"", "errors", "files", "fields", "precision"}
CORE = {"sparsity", "kernels", "sae"}
READERS = CORE | {"lm", "data"}

# layer (first name below ``abstopk``) -> the layers it may import besides itself.
# "" is the package root (``abstopk/__init__.py``: the version and lazy re-exports).
ALLOWED: dict[str, set[str]] = {
    "": {"sae"},  # lazy attribute access in __getattr__ only
    "errors": set(),
    "fields": set(),
    "precision": set(),
    "files": {"errors"},
    "sparsity": BOTTOM,
    "kernels": BOTTOM | {"sparsity"},
    "sae": BOTTOM | {"sparsity", "kernels"},
    "lm": BOTTOM,
    "data": BOTTOM | {"lm"},
    "train": BOTTOM | CORE | {"data"},
    "eval": BOTTOM | READERS,
    "export": BOTTOM | CORE,
    "steer": BOTTOM | READERS | {"eval"},
    "analysis": BOTTOM | READERS | {"train", "eval"},
    "report": BOTTOM,
    "experiments": BOTTOM | READERS | {"train", "eval", "analysis", "steer", "export", "report"},
    "commands": BOTTOM | READERS | {"train", "eval", "analysis", "steer", "export", "report",
                                    "experiments"},
    "cli": BOTTOM | {"commands"},
    "__main__": {"cli"},
}

MAX_LINES = 400
LENGTH_NOTE = "Length note:"


def _modules() -> dict[str, Path]:
    """Dotted name relative to the package ('' for the root) -> file."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _resolve(module: str, is_pkg: bool, node: ast.ImportFrom | ast.Import) -> list[str]:
    """Package-relative dotted names imported by ``node`` (only names inside ``abstopk``)."""
    names: list[str] = []
    if isinstance(node, ast.Import):
        for a in node.names:
            if a.name == "abstopk" or a.name.startswith("abstopk."):
                names.append(a.name[len("abstopk."):] if "." in a.name else "")
        return names
    if node.level == 0:
        mod = node.module or ""
        if not (mod == "abstopk" or mod.startswith("abstopk.")):
            return []
        base = mod[len("abstopk."):] if "." in mod else ""
    else:
        here = module.split(".") if module else []
        if not is_pkg:
            here = here[:-1]
        up = node.level - 1
        if up > len(here):
            raise AssertionError(f"{module}: relative import beyond the package")
        here = here[: len(here) - up]
        base = ".".join(here + ([node.module] if node.module else []))
    # `from .pkg import mod` imports the submodule pkg.mod when it exists
    subs = [f"{base}.{a.name}" if base else a.name for a in node.names]
    return [base] + subs


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for mod, path in mods.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        is_pkg = path.name == "__init__.py"
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for target in _resolve(mod, is_pkg, node):
                    if target in mods and target != mod:
                        graph[mod].add(target)
    return graph


def _layer(module: str) -> str:
    return module.split(".")[0] if module else ""


def test_every_layer_is_known():
    unknown = sorted({_layer(m) for m in _modules()} - set(ALLOWED))
    assert not unknown, (f"modules outside the known layers: {unknown}; add the layer to "
                         "ALLOWED here and to docs/architecture.md")


def test_no_lower_layer_imports_a_higher_one():
    bad = []
    for mod, targets in _graph().items():
        src = _layer(mod)
        for t in sorted(targets):
            dst = _layer(t)
            if dst != src and dst not in ALLOWED[src]:
                bad.append(f"abstopk.{mod or '__init__'} imports abstopk.{t} ({src or 'root'} → {dst})")
    assert not bad, "layering violations:\n" + "\n".join(bad)


def test_layers_form_no_circle():
    edges = {a: {b for b in bs if b != a} for a, bs in ALLOWED.items()}
    edges[""] = set()  # the root's lazy re-export is an attribute hook, not a layer edge
    seen: dict[str, int] = {}

    def visit(n: str, stack: list[str]) -> None:
        seen[n] = 1
        for m in edges[n]:
            if seen.get(m) == 1:
                raise AssertionError("layer table has a circle: " + " → ".join(stack + [n, m]))
            if m not in seen:
                visit(m, stack + [n])
        seen[n] = 2

    for n in edges:
        if n not in seen:
            visit(n, [])


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on: set[str] = set()
    stack: list[str] = []
    out: list[list[str]] = []
    counter = [0]

    def strong(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            strong(v)
    return out


def test_no_import_circle_between_modules():
    graph = _graph()
    # a package's __init__ re-exporting its own submodules is not a circle of design
    for mod in graph:
        graph[mod] = {t for t in graph[mod] if not (mod and t.startswith(mod + "."))
                      and not (mod == "" and t)}
    cycles = _cycles(graph)
    assert not cycles, "import circles: " + "; ".join(" ↔ ".join(c) for c in cycles)


def test_modules_stay_small_or_say_why():
    long = []
    for mod, path in _modules().items():
        n = len(path.read_text().splitlines())
        if n > MAX_LINES:
            doc = ast.get_docstring(ast.parse(path.read_text())) or ""
            if LENGTH_NOTE not in doc:
                long.append(f"abstopk.{mod}: {n} lines")
    assert not long, (f"modules above {MAX_LINES} lines without a '{LENGTH_NOTE}' in their "
                      "docstring:\n" + "\n".join(long))


# ------------------------------------------------------------------ the checker itself
def test_resolver_on_hand_written_imports():
    tree = ast.parse("from ..data.cache import X\nfrom . import step\nimport abstopk.sae\n"
                     "from abstopk.lm import load\n")
    got = [_resolve("train.trainer", False, n) for n in tree.body]
    assert got == [["data.cache", "data.cache.X"], ["train", "train.step"], ["sae"],
                   ["lm", "lm.load"]]
    # inside a package's __init__, '.' is the package itself
    (node,) = ast.parse("from .hooks import run").body
    assert _resolve("lm", True, node) == ["lm.hooks", "lm.hooks.run"]


def test_cycle_finder_on_a_known_graph():
    g = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert _cycles(g) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_layer_table_names_only_known_layers(layer):
    assert ALLOWED[layer] <= set(ALLOWED), ALLOWED[layer] - set(ALLOWED)


# ------------------------------------------------------------------ library error messages
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")


def _raised_strings(tree: ast.AST):
    """(line, text): the string constants inside each ``raise`` expression, joined in source
    order (so a message split over several f-string parts is read whole)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Raise) and node.exc is not None:
            parts = sorted((sub.lineno, sub.col_offset, sub.value) for sub in ast.walk(node.exc)
                           if isinstance(sub, ast.Constant) and isinstance(sub.value, str))
            if parts:
                yield node.lineno, "".join(p[2] for p in parts)


def _flags_outside_backticks(text: str) -> list[str]:
    """CLI flags in ``text`` that are not part of a quoted shell command (`pip … --no-deps`)."""
    bare = re.sub(r"`[^`]*`", "", text)
    return FLAG.findall(bare)


def test_library_errors_name_no_cli_flag():
    bad = []
    for mod, path in _modules().items():
        if _layer(mod) in ("commands", "cli"):
            continue
        for line, text in _raised_strings(ast.parse(path.read_text())):
            flags = _flags_outside_backticks(text)
            if flags:
                bad.append(f"abstopk/{path.relative_to(PACKAGE)}:{line}: {', '.join(flags)}")
    assert not bad, "library error messages quoting CLI flags:\n" + "\n".join(bad)


def test_flag_finder_on_known_strings():
    assert _flags_outside_backticks("use --skip-nonfinite to drop them") == ["--skip-nonfinite"]
    assert _flags_outside_backticks("run `pip install --no-deps x` first") == []
    assert _flags_outside_backticks("a range 1--2 and x-->y") == []
