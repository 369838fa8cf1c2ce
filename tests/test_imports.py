"""The package's import graph has no cycles, counting imports inside functions too, and
importing the library changes no process-wide state."""

import ast
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# package -> its folder in the checkout: the command line's sources are cli/ at the root,
# installed as lagnh_pyg.cli (pyproject.toml, package-dir)
PACKAGES = {"lagnh_pyg": "lagnh_pyg", "lagnh_pyg.cli": "cli"}


def _module_name(path: Path) -> str:
    package, folder = next((p, f) for p, f in PACKAGES.items() if path.is_relative_to(ROOT / f))
    parts = [package, *path.relative_to(ROOT / folder).with_suffix("").parts]
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path, name: str, known: set[str]) -> set[str]:
    """Every project module ``path`` imports, at any depth of its code (function bodies too)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            # `from pkg import mod` imports pkg.mod when that is a module
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in known:  # `import a.b.c` of a module: the deepest known prefix
                t = t.rpartition(".")[0]
            if t and t != name:
                out.add(t)
    return out


def import_graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for folder in PACKAGES.values() for p in (ROOT / folder).rglob("*.py")}
    known = set(files)
    return {name: _imports(path, name, known) for name, path in files.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph.get(m, ())):
            if state.get(n) == 1:
                return stack[stack.index(n):] + [n]
            if n not in state:
                found = visit(n)
                if found:
                    return found
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state:
            found = visit(m)
            if found:
                return found
    return None


def test_cycle_finder_finds_a_function_level_cycle(tmp_path):
    graph = {"lagnh_pyg.a": {"lagnh_pyg.b"}, "lagnh_pyg.b": {"lagnh_pyg.a"}, "lagnh_pyg.c": set()}
    assert find_cycle(graph) == ["lagnh_pyg.a", "lagnh_pyg.b", "lagnh_pyg.a"]
    src = tmp_path / "m.py"
    src.write_text("def f():\n    from .b import x\n    from . import c\n")
    assert _imports(src, "lagnh_pyg.m", {"lagnh_pyg", "lagnh_pyg.b", "lagnh_pyg.c", "lagnh_pyg.m"}) == {
        "lagnh_pyg.b", "lagnh_pyg.c"}


def test_no_import_cycles():
    graph = import_graph()
    assert "lagnh_pyg.training.runner" in graph and "lagnh_pyg.rundir" in graph["lagnh_pyg.encode"]
    cycle = find_cycle(graph)
    assert cycle is None, " -> ".join(cycle)


def test_importing_the_library_changes_no_process_state():
    code = (
        "import os, warnings\n"
        "import torch, torch_geometric, numpy, scipy.sparse\n"  # third-party packages may do what they like
        "before = [tuple(map(str, f)) for f in warnings.filters]\n"
        "threads = torch.get_num_threads()\n"
        "import lagnh_pyg, lagnh_pyg.graph, lagnh_pyg.training, lagnh_pyg.encode, lagnh_pyg.rundir\n"
        "import lagnh_pyg.nn, lagnh_pyg.experiments.scaling, lagnh_pyg.retrieval\n"
        "assert 'OMP_WAIT_POLICY' not in os.environ, 'OMP_WAIT_POLICY set on import'\n"
        "after = [tuple(map(str, f)) for f in warnings.filters]\n"
        "assert after == before, set(after) ^ set(before)\n"
        "assert torch.get_num_threads() == threads\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    env["PYTHONPATH"] = str(ROOT)
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]


# no function in lagnh_pyg/ or cli/ (lagnh_pyg.cli) is longer than this many lines, unless a reason is written
# at its top ("long because ..." in its docstring); none needs one today
MAX_FUNCTION_LINES = 80


def test_functions_a_reader_can_hold():
    too_long = []
    for folder in PACKAGES.values():
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = str(path.relative_to(ROOT))
            for node in ast.walk(ast.parse(path.read_text())):
                if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    continue
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES and "long because" not in (ast.get_docstring(node) or ""):
                    too_long.append(f"{rel}:{node.lineno} {node.name} ({length} lines)")
    assert not too_long, "split these or say at their top why not: " + "; ".join(too_long)
