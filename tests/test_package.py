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


def test_the_built_wheel_installs_asterisk_without_the_checkout(tmp_path: Path) -> None:
    """``pip install`` of the built wheel (not editable), then ``agi-router asterisk setup``: the Asterisk
    configuration is package data, so the one-command set-up works outside a checkout (before: "the project's
    asterisk/ folder is missing: run from the repository checkout")."""
    import os
    import subprocess
    import sys
    import zipfile

    import pytest

    wheels = tmp_path / "wheels"
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", str(PACKAGE.parent), "--no-deps", "-q", "-w",
                            str(wheels)], capture_output=True, text=True, timeout=600)  # fmt: skip
    if build.returncode != 0 and "setuptools" in build.stderr and "No matching distribution" in build.stderr:
        pytest.skip("building the wheel needs setuptools>=77 from the package index, unreachable here")
    assert build.returncode == 0, build.stderr[-2000:]
    (wheel,) = wheels.glob("agi_router-*.whl")
    shipped = {Path(n).name for n in zipfile.ZipFile(wheel).namelist() if n.startswith("agi_router/data/asterisk/")}
    assert shipped == {p.name for p in (PACKAGE.parent / "asterisk").glob("*.conf")}
    site = tmp_path / "site"
    inst = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site),
                           str(wheel)], capture_output=True, text=True, timeout=300)  # fmt: skip
    assert inst.returncode == 0, inst.stderr[-2000:]
    work = tmp_path / "elsewhere"  # not the checkout: the installed copy is the one imported
    (work / "etc").mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGI_ROUTER_")} | {"PYTHONPATH": str(site)}
    where = subprocess.run([sys.executable, "-c", "import agi_router; print(agi_router.__file__)"], cwd=work, env=env,
                           capture_output=True, text=True, timeout=60)  # fmt: skip
    assert where.stdout.startswith(str(site)), where.stdout + where.stderr
    r = subprocess.run([sys.executable, "-m", "agi_router", "asterisk", "setup", "--etc", str(work / "etc")], cwd=work,
                       env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert r.returncode == 0, r.stderr
    for conf in (PACKAGE.parent / "asterisk").glob("*.conf"):
        assert (work / "etc" / conf.name).read_bytes() == conf.read_bytes()
    assert (work / "etc" / "agi-router-ami.conf").is_file() and (work / "etc" / "agi-router-pjsip.conf").is_file()
