"""The package's shape, checked: imports only downward (no circle, counting imports inside
functions too), no module importing another's ``_private`` name, no module over 400 lines,
and ``import nnkernel`` loading no file-format, ONNX, MPI or command-line code."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "nnkernel"
MAX_LINES = 400


def modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def imports(name: str, path: Path, known: dict) -> list[tuple[str, str | None]]:
    """(module imported, name taken from it or None) for every import of the module."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(alias.name, None) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[:len(package.split(".")) - node.level + 1] \
                if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                out.append((sub, None) if sub in known else (target, alias.name))
    return out


def graph():
    known = modules()
    edges, private = {m: set() for m in known}, []
    for name, path in known.items():
        for target, taken in imports(name, path, known):
            if target in known and target != name:
                edges[name].add(target)
            if taken and taken.startswith("_") and not taken.startswith("__") \
                    and target.startswith("nnkernel"):
                private.append(f"{name} imports {target}.{taken}")
    return edges, private


def circles(edges) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            part = []
            while True:
                w = stack.pop()
                on.discard(w)
                part.append(w)
                if w == v:
                    break
            if len(part) > 1:
                found.append(sorted(part))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10000))
    for v in edges:
        if v not in index:
            visit(v)
    return found


def test_no_import_circles():
    edges, _ = graph()
    assert circles(edges) == []


def test_no_module_imports_another_modules_private_names():
    _, private = graph()
    assert private == []


def test_no_module_is_over_400_lines():
    long = {name: n for name, path in modules().items()
            if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert long == {}


def test_the_circle_finder_finds_a_circle():
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_import_nnkernel_loads_no_file_format_onnx_mpi_or_cli_code():
    code = ("import sys, nnkernel; print(sorted(m for m in sys.modules if m.startswith("
            "('nnkernel.io', 'nnkernel.cli', 'nnkernel.distributed', 'nnkernel.sklearn', "
            "'nnkernel.bench', 'onnx', 'mpi4py', 'zipfile', 'safetensors'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=PACKAGE.parent)
    assert out.stdout.strip() == "[]"
