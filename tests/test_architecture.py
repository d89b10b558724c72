"""The layout is the architecture (docs/architecture.md): the layers contract holds and catches an upward import,
no module is part of an import cycle, rlrun modules are imported at the top of a file, rlrun-plot starts without
torch and gymnasium, and the algorithm modules stay readable in one sitting."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

import rlrun.algos  # noqa: F401 (registers every algorithm)
from rlrun.core import registry

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "rlrun"
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
LAYERS = ["rlrun.cli", "rlrun.algos", "rlrun.rlhf", "rlrun.envs", "rlrun.nn", "rlrun.data", "rlrun.core"]
MAX_ALGO_LINES = 370  # "about 350 lines at most" per algorithm module
MAX_TRAIN_LINES = 125  # "train() about 120 lines at most"


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    """import-linter's contracts of pyproject.toml, on the package under ``root``."""
    return subprocess.run([str(LINT_IMPORTS), "--no-cache", "--config", str(ROOT / "pyproject.toml")], cwd=root,
                          capture_output=True, text=True, timeout=120, env={"PYTHONPATH": str(root), "PATH": ""})


def test_the_layers_contract_holds_and_fails_on_an_upward_import(tmp_path):
    kept = lint_imports(ROOT)
    assert kept.returncode == 0, kept.stdout + kept.stderr
    assert "Contracts: 2 kept, 0 broken." in kept.stdout
    # the same tree with one upward import (core -> cli) breaks the contract, naming the import
    copy = tmp_path / "tree"
    shutil.copytree(PACKAGE, copy / "rlrun", ignore=shutil.ignore_patterns("__pycache__"))
    config = copy / "rlrun" / "core" / "config.py"
    config.write_text(config.read_text() + "\nfrom rlrun.cli.train import main  # an upward import\n")
    broken = lint_imports(copy)
    assert broken.returncode == 1, broken.stdout + broken.stderr
    assert "layers: cli > algos > rlhf > envs, nn, data > core BROKEN" in broken.stdout
    assert "rlrun.core.config -> rlrun.cli.train" in broken.stdout


def test_no_module_is_part_of_an_import_cycle():
    graph = grimp.build_graph("rlrun", include_external_packages=False, cache_dir=None)
    modules = sorted(graph.modules)
    edges = {m: sorted(graph.find_modules_directly_imported_by(m)) for m in modules}
    # Tarjan's strongly connected components: a cycle is a component of more than one module (or a self-import)
    index, low, on_stack, stack, cycles, counter = {}, {}, set(), [], [], [0]

    def visit(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in edges[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in edges[node]:
                cycles.append(sorted(component))

    for module in modules:
        if module not in index:
            visit(module)
    assert len(modules) > 40 and cycles == []


def rlrun_imports_inside_functions(path: Path) -> list[str]:
    """'file:line module' of every import of an rlrun module inside a function or class body."""
    tree = ast.parse(path.read_text())
    found: list[str] = []

    def walk(node: ast.AST, nested: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inside = nested or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda))
            if inside and isinstance(child, ast.Import):
                found.extend(f"{path.name}:{child.lineno} {a.name}" for a in child.names
                             if a.name.split(".")[0] == "rlrun")
            elif inside and isinstance(child, ast.ImportFrom) and (child.module or "").split(".")[0] == "rlrun":
                found.append(f"{path.name}:{child.lineno} {child.module}")
            walk(child, inside)

    walk(tree, False)
    return found


def test_rlrun_modules_are_imported_at_the_top_of_every_file():
    found = [hit for path in sorted(PACKAGE.rglob("*.py")) for hit in rlrun_imports_inside_functions(path)]
    assert found == []


def test_the_import_finder_sees_imports_inside_functions_and_classes(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("import os\nfrom rlrun.core import config\n\n\ndef f():\n    from rlrun.core import run\n"
                     "    import numpy\n\n\nclass C:\n    import rlrun.envs\n")
    assert rlrun_imports_inside_functions(probe) == ["probe.py:6 rlrun.core", "probe.py:11 rlrun.envs"]


def test_rlrun_plot_imports_neither_torch_nor_gymnasium_nor_scipy_stats():
    code = ("import sys, rlrun.cli.plot as plot; "
            "print(sorted(m for m in ('torch', 'gymnasium', 'ale_py', 'scipy.stats') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_every_layer_is_a_package_and_nothing_else_sits_beside_them():
    top = sorted(p.name for p in PACKAGE.iterdir() if p.name != "__pycache__")
    assert top == ["__init__.py", "algos", "cli", "core", "data", "envs", "nn", "rlhf"]
    assert all((ROOT / layer.replace(".", "/") / "__init__.py").is_file() for layer in LAYERS)


def function_lines(path: Path, name: str) -> int:
    """Lines of the top-level function ``name`` of a module, its docstring included."""
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.FunctionDef) and node.name == name:
            return node.end_lineno - node.lineno + 1
    raise AssertionError(f"{path} has no function {name}")


@pytest.mark.parametrize("module", sorted({spec.train.__module__ for spec in registry.specs()}))
def test_an_algorithm_module_reads_in_one_sitting(module):
    path = PACKAGE / "algos" / f"{module.rsplit('.', 1)[1]}.py"  # presets (rainbow) share their module
    assert len(path.read_text().splitlines()) <= MAX_ALGO_LINES
    assert function_lines(path, "train") <= MAX_TRAIN_LINES
