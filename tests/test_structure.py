"""The package's shape, checked statically: no import circles between modules, no source file over 800 lines.

Imports are read with :mod:`ast` (module level and inside functions alike: a lazy import that closes a
circle is still a circle a reader has to untangle), so the check needs no import of the package.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
MAX_FILE_LINES = 800


def module_files(src: Path = SRC) -> dict[str, Path]:
    """Dotted module name -> file, for every module of ``src/textdistill`` (a package is its __init__)."""
    out = {}
    for path in sorted((src / "textdistill").rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the package modules it imports (``from a import b`` names module ``a.b`` when it is one)."""
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join(up + ([base] if base else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            graph[name] |= {t for t in targets if t in modules and t != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (each holds an import circle)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_cycle_finder_sees_direct_and_lazy_circles(tmp_path: Path) -> None:
    pkg = tmp_path / "textdistill"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from textdistill.sub import b\n")
    (pkg / "sub" / "b.py").write_text("def f():\n    from .c import g  # lazy\n")
    (pkg / "sub" / "c.py").write_text("import textdistill.a\n")
    (pkg / "d.py").write_text("from textdistill import a\n")  # imports into the circle, is not part of it
    graph = import_graph(module_files(tmp_path))
    assert graph["textdistill.sub.b"] == {"textdistill.sub.c"}
    assert cycles(graph) == [["textdistill.a", "textdistill.sub.b", "textdistill.sub.c"]]
    (pkg / "sub" / "c.py").write_text("import textdistill.sub\n")  # the (empty) package: no circle
    assert cycles(import_graph(module_files(tmp_path))) == []


def test_no_import_circles() -> None:
    found = cycles(import_graph(module_files()))
    assert found == [], "import circles (move the shared piece into a module both can import): " + "; ".join(
        " <-> ".join(c) for c in found
    )


def test_graph_reads_the_real_package() -> None:
    graph = import_graph(module_files())
    assert "textdistill.training.distiller" in graph["textdistill.training.teacher_cache.build"]
    # the package itself (its __init__ registers the terms)
    assert "textdistill.losses" in graph["textdistill.cli"]


def test_no_source_file_over_800_lines() -> None:
    long = {
        str(path.relative_to(SRC)): n
        for path in module_files().values()
        if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_FILE_LINES
    }
    assert long == {}, f"split these files by concern (at most {MAX_FILE_LINES} lines each): {long}"


MAX_FUNCTION_LINES = 100


def test_no_function_over_100_lines() -> None:
    """One step per function: a function (signature and docstring included) fits on a screen or two."""
    long = {}
    for name, path in module_files().items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    long[f"{name}.{node.name}"] = n
    assert long == {}, f"split these into named steps (at most {MAX_FUNCTION_LINES} lines each): {long}"
