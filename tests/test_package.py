"""The package as a whole (issue #24): no import circle between its modules, counting the imports made inside
functions too (a lazy import hides a circle from Python, not from a reader). Imports for type checkers only
(``if TYPE_CHECKING:``) are not counted: they never run."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "agi_router"


def _module(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, modules: set[str]) -> set[str]:
    """The package modules ``path`` imports, anywhere in it (``from .x import y`` may name module x.y)."""
    me = _module(path)
    base = me if path.name == "__init__.py" else me.rpartition(".")[0]
    out: set[str] = set()
    tree = ast.parse(path.read_text(), str(path))
    typing_only = {
        id(n)
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and isinstance(block.test, ast.Name) and block.test.id == "TYPE_CHECKING"
        for stmt in block.body
        for n in ast.walk(stmt)
    }
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name in modules}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = base.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                target = ".".join([*anchor, node.module] if node.module else anchor)
            else:
                target = node.module or ""
            for a in node.names:
                if f"{target}.{a.name}" in modules:
                    out.add(f"{target}.{a.name}")
                elif target in modules:
                    out.add(target)
    out.discard(me)
    return out


def test_no_import_circle_in_the_package() -> None:
    files = sorted(PACKAGE.rglob("*.py"))
    modules = {_module(f) for f in files}
    graph = {_module(f): _imports(f, modules) for f in files}
    # a package's __init__ re-exporting its modules is not a circle with them
    for name in list(graph):
        graph[name] = {m for m in graph[name] if not (m == name.rpartition(".")[0] and m != "agi_router")}
    graph = {k: {m for m in v if not m.startswith(k + ".")} for k, v in graph.items()}
    state: dict[str, int] = {}
    stack: list[str] = []
    circles: list[list[str]] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph.get(m, ())):
            if state.get(n) == 1:
                circles.append([*stack[stack.index(n) :], n])
            elif n not in state:
                visit(n)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
    assert len(modules) > 80 and sum(map(len, graph.values())) > 150  # the walk saw the package's imports
    assert not circles, "import circles: " + "; ".join(" -> ".join(c) for c in circles)


def test_helper_scripts_outside_the_environment_say_what_to_run(tmp_path: Path) -> None:
    """``loadtest/run`` and ``python -m loadtest.sipp`` with a Python that lacks the project's environment:
    one line saying what to run, exit 2, never a ModuleNotFoundError traceback."""
    import shutil
    import subprocess

    system = shutil.which("python3", path="/usr/bin:/bin")
    if system is None or subprocess.run([system, "-c", "import numpy"], capture_output=True).returncode == 0:
        import pytest

        pytest.skip("needs a system python3 without the project's dependencies")
    shutil.copytree(PACKAGE.parent / "loadtest", tmp_path / "loadtest")  # a checkout without .venv
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    for cmd in ([str(tmp_path / "loadtest" / "run"), "--help"], [system, "-m", "loadtest.sipp", "--help"]):
        r = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
        assert r.returncode == 2 and "bootstrap.sh test" in r.stderr, (cmd, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr, r.stderr
