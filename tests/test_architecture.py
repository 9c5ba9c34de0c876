"""The layout's rules, checked on the source."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "bertino_rag"
def _module(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def _imports(path: Path, modules: set[str]) -> set[str]:
    """The package's modules that ``path`` imports, at module level or inside functions alike
    (a lazy import is still a dependency); imports under ``if TYPE_CHECKING:`` are not."""
    name = _module(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    skip: set[int] = set()
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if _type_checking(node):
            skip.update(id(n) for n in ast.walk(node))
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                root = ".".join(base + ([node.module] if node.module else []))
            else:
                root = node.module or ""
            targets = [root] + [f"{root}.{a.name}" for a in node.names]
        for t in targets:
            while t and t not in modules:  # the deepest module named
                t = t.rpartition(".")[0]
            if t and t != name:
                found.add(t)
    return found


def _graph() -> dict[str, set[str]]:
    files = {_module(p): p for p in PACKAGE.rglob("*.py")}
    modules = set(files)
    return {m: _imports(p, modules) for m, p in files.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
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

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _is_package_init(module: str) -> bool:
    return (PACKAGE.parent / module.replace(".", "/") / "__init__.py").exists()


def test_no_import_circle():
    """A package's ``__init__`` re-exporting its submodules is not a circle: an edge from a
    module to the package that contains it is left out."""
    graph = _graph()
    for m, deps in graph.items():
        graph[m] = {d for d in deps if not (_is_package_init(d) and m.startswith(d + "."))}
    assert _cycles(graph) == []


#: the most lines a source file may have: one idea per file
MAX_LINES = 600


def test_no_source_file_is_oversized():
    sizes = {str(p.relative_to(PACKAGE)): len(p.read_text(encoding="utf-8").splitlines())
             for p in PACKAGE.rglob("*.py")}
    assert {path: n for path, n in sizes.items() if n > MAX_LINES} == {}


def test_store_modules_do_not_reimplement_the_funnel():
    """Rescoring, fusion, the union of candidates and expansion live in ``search/``: no store
    module runs them itself (a pushdown declares a capability instead, and may use the shared
    rules: the rescoring product of ``rescore_rows``, the tie-break by id, the shape of a
    grouped hit)."""
    stores = PACKAGE / "stores"
    banned = ("rescore_hits", "rescore_candidates", "fuse_ranked", "fuse_scores", ".fuse(",
              "expand_hits", "union(")
    found = {}
    for path in stores.rglob("*.py"):
        if path.name in ("__init__.py", "base.py", "searching.py"):
            continue  # the checked public methods re-export them for compatibility
        text = path.read_text(encoding="utf-8")
        used = [name for name in banned if name in text]
        if used:
            found[str(path.relative_to(PACKAGE))] = used
    assert found == {}
