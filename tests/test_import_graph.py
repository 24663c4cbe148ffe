"""The import graph of src/dermino is one-way: no circles, and each layer imports only layers below it.

Every import counts, including those inside functions (a lazy import is still a dependency) and
under ``if TYPE_CHECKING:`` (a type-only import still couples the modules). Layers follow the data:
base helpers -> data -> knowledge / models / losses -> features -> pretrain / evaluate
-> segment / classifier / caption / federated -> serve / study -> report -> commands / cli / api / demo.
No module has a layer of its own outside its package's: adding one makes
``test_no_layer_exceptions`` fail.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "dermino"

LAYERS: dict[str, int] = {
    # shared helpers every layer may use
    "dermino": 0, "dermino.config": 0, "dermino.files": 0, "dermino.runtime": 0, "dermino.progress": 0,
    "dermino.results": 0, "dermino.sharding": 0,
    "dermino.data": 1,
    "dermino.knowledge": 2, "dermino.models": 2, "dermino.losses": 2,
    "dermino.features": 3,
    "dermino.pretrain": 4, "dermino.evaluate": 4,
    "dermino.segment": 5, "dermino.classifier": 5, "dermino.caption": 5, "dermino.federated": 5,
    "dermino.serve": 6, "dermino.study": 6,
    "dermino.report": 7,
    # entry points above everything: the command line, the Python API (``dermino.load``) and the
    # demo (which runs commands the way a user would)
    "dermino.commands": 8, "dermino.cli": 8, "dermino.api": 8, "dermino.demo": 8,
}


def _modules() -> dict[str, Path]:
    mods = {}
    for path in (SRC / PACKAGE).rglob("*.py"):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = path
    return mods


def _imports(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Modules of this package that ``module`` imports, anywhere in the file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    is_pkg = path.name == "__init__.py"
    found: set[str] = set()

    def resolve(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == PACKAGE and (m := resolve(alias.name)):
                    found.add(m)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_pkg else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != PACKAGE:
                return
            for alias in node.names:  # ``from pkg import submodule`` depends on the submodule
                sub = f"{target}.{alias.name}"
                m = sub if sub in modules else resolve(target)
                if m:
                    found.add(m)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    found.discard(module)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    return {m: _imports(m, p, modules) for m, p in modules.items()}


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def strong(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            strong(v)
    return out


def _layer(module: str) -> int | None:
    name = module
    while name:
        if name in LAYERS:
            return LAYERS[name]
        name = name.rpartition(".")[0]
    return None


def test_no_import_circles_in_src():
    graph = import_graph()
    assert len(graph) > 50 and "dermino.models.registry" in graph
    cycles = find_cycles(graph)
    assert not cycles, "import circles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


# the package's lazy ``dermino.load``: resolved by ``__getattr__`` on first use, never at import time
ALLOWED_UPWARD = {("dermino", "dermino.api")}


def test_layers_import_only_downwards():
    bad = []
    for mod, deps in import_graph().items():
        lm = _layer(mod)
        for dep in sorted(deps):
            ld = _layer(dep)
            # a package's own __init__ and modules of packages not in LAYERS are only cycle-checked
            if lm is None or ld is None or dep == mod.rpartition(".")[0] or mod.startswith(dep + "."):
                continue
            same_package = mod.split(".")[:2] == dep.split(".")[:2]
            if ld > lm and not same_package and (mod, dep) not in ALLOWED_UPWARD:
                bad.append(f"{mod} (layer {lm}) imports {dep} (layer {ld})")
    assert not bad, "imports against the layer order:\n" + "\n".join(bad)


def test_no_layer_exceptions():
    """Every LAYERS entry is a top-level module or package: no sub-module pinned above its package."""
    nested = [name for name in LAYERS if name.count(".") > 1]
    assert not nested, f"modules pinned to a layer other than their package's: {nested}"
    modules = _modules()
    unplaced = sorted(m for m in modules if m.count(".") == 1 and m not in LAYERS)
    assert not unplaced, f"modules with no layer (add them to LAYERS): {unplaced}"


def test_registry_is_a_leaf():
    assert import_graph()["dermino.models.registry"] == set()


def test_the_checker_sees_circles_and_lazy_imports(tmp_path, monkeypatch):
    pkg = tmp_path / PACKAGE
    (pkg / "a").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a" / "__init__.py").write_text("")
    (pkg / "a" / "x.py").write_text("from dermino.a.y import f\n")
    (pkg / "a" / "y.py").write_text("def f():\n    from . import x  # lazy, still a dependency\n")
    (pkg / "a" / "z.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from dermino.a import x\n")
    monkeypatch.setattr(__import__(__name__), "SRC", tmp_path)
    graph = import_graph()
    assert find_cycles(graph) == [["dermino.a.x", "dermino.a.y"]]
    assert graph["dermino.a.z"] == {"dermino.a.x"}  # type-only imports count too
