"""The layout keeps its shape: no import circles (function-local and string imports counted), no pointless
function-local imports, and the layout tables (README, docs/architecture.md) name every package and module."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"


def _modules() -> dict[str, Path]:
    out = {}
    for path in (SRC / "tuneoff").rglob("*.py"):
        rel = path.relative_to(SRC).with_suffix("")
        out[".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)] = path
    return out


def _owner(name: str, modules: dict) -> str | None:
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    edges: dict[str, set[str]] = {m: set() for m in modules}
    for module, path in modules.items():
        text = path.read_text()
        targets = []
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.Import):
                targets += [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                targets += [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        targets += re.findall(r"""(?:__import__|import_module)\(\s*["']([\w.]+)["']""", text)
        for target in targets:
            owner = _owner(target, modules) if target.startswith("tuneoff") else None
            if owner and owner != module and owner != "tuneoff":
                edges[module].add(owner)
    return edges


def _cycles(edges: dict[str, set[str]]) -> list[set[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]
    sys.setrecursionlimit(10_000)

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(component)

    for v in edges:
        if v not in index:
            visit(v)
    return out


def test_no_import_circles_counting_local_and_string_imports():
    edges = _graph()
    assert sum(map(len, edges.values())) > 150, "the graph was not read"
    assert _cycles(edges) == []


def test_the_cycle_finder_finds_a_circle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [{"a", "b", "c"}]


def test_function_local_imports_are_never_pointless():
    """A function-local import keeps start-up fast only for a heavy or optional library (torch, pandas, ray...) or a
    tuneoff module that pulls one in. The standard library, or a module the file already imports at the top, gains
    nothing from it."""
    pointless = []
    for module, path in _modules().items():
        tree = ast.parse(path.read_text())
        top = {a.name for n in tree.body if isinstance(n, ast.Import) for a in n.names}
        top |= {n.module for n in tree.body if isinstance(n, ast.ImportFrom) and n.module}
        for fn in ast.walk(tree):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(fn):
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    if name.split(".")[0] in sys.stdlib_module_names or name in top:
                        pointless.append(f"{path.relative_to(SRC)}:{node.lineno} {name}")
    assert pointless == []


def test_readme_layout_names_every_package():
    readme = (SRC.parent / "README.md").read_text()
    layout = readme[readme.index("## Layout") :]
    packages = sorted(p.parent.name for p in (SRC / "tuneoff").glob("*/__init__.py"))
    assert len(packages) >= 10
    assert [p for p in packages if f"`{p}/`" not in layout] == []


@pytest.mark.parametrize("page", ["docs/architecture.md"])
def test_layout_tables_name_every_module(page):
    """Each layer's row names every module it holds (methods/: one file per method, named by `tuneoff methods`): a
    reader looking for where a thing lives finds it; a module added without a row entry fails here."""
    text = (SRC.parent / page).read_text()
    rows = {line.split("|")[1].strip(" `/"): line for line in text.splitlines() if line.startswith("| `")}
    missing = []
    for init in sorted((SRC / "tuneoff").glob("*/__init__.py")):
        package = init.parent.name
        if package in ("methods", "studies"):
            continue
        stems = sorted(p.stem for p in init.parent.glob("*.py") if p.stem != "__init__")
        missing += [f"{package}/{s}" for s in stems if f"`{s}`" not in rows.get(package, "")]
    assert missing == []
