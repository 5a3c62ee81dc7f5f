"""The package's layering, checked from its source: the rules a new module must keep."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "jfbgym"


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node except those under ``if TYPE_CHECKING:`` (imports for annotations only)."""
    nodes, todo = [], [tree]
    while todo:
        node = todo.pop()
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            todo.extend(node.orelse)
            continue
        nodes.append(node)
        todo.extend(ast.iter_child_nodes(node))
    return nodes


def _imports(path: Path) -> set[str]:
    """The modules ``path`` imports when it runs, at module level or inside functions."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in _runtime_nodes(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
            found |= {f"{target}.{alias.name}" for alias in node.names}
    return found


MODULES = {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def test_no_import_cycles() -> None:
    """Counting imports inside functions too: a lazy import that closes a circle is still a
    circle in the design (the old ``baselines`` <-> ``evaluation`` one was of that kind)."""
    graph = {name: {m for m in _imports(path) if m in MODULES and m != name}
             for name, path in MODULES.items()}
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in graph[node]:
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt):] + [nxt] if nxt in stack else [node, nxt]
                raise AssertionError(f"import cycle: {' -> '.join(cycle)}")
            if nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for name in graph:
        if name not in state:
            visit(name, [name])


@pytest.mark.parametrize("name", sorted(n for n in MODULES if n.startswith("jfbgym.problems")))
def test_problems_import_nothing_from_above(name: str) -> None:
    allowed = ("jfbgym.problems", "jfbgym.validation")
    above = [m for m in _imports(MODULES[name])
             if m.startswith("jfbgym") and not m.startswith(allowed) and m != "jfbgym"]
    assert above == [], f"{name} imports {above}"


def test_agents_do_not_import_envs() -> None:
    for name, path in MODULES.items():
        if name.startswith("jfbgym.agents"):
            assert not any(m.startswith("jfbgym.envs") for m in _imports(path)), name


def test_argparse_only_in_the_cli_package() -> None:
    users = [name for name, path in MODULES.items()
             if "argparse" in _imports(path) and not name.startswith("jfbgym.cli")]
    assert users == []


def _run(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip()


def test_problems_work_without_gymnasium() -> None:
    code = ("import sys; sys.modules['gymnasium'] = None; sys.modules['pettingzoo'] = None\n"
            "import torch\n"
            "from jfbgym.problems import make_problem\n"
            "p = make_problem('QuadSwarm', n_agents=2)\n"
            "print(float(p.objective(p.heuristic(), p.sample_initial_states(2)).mean()) > 0)")
    assert _run(code) == "True"


def test_help_and_argument_errors_do_not_import_torch() -> None:
    code = ("import sys\n"
            "from jfbgym.cli import main\n"
            "for argv in (['--help'], ['train', '--help'], ['train', '--grad', 'bogus'],\n"
            "             ['evaluate', '--help'], ['compare', '--help'], ['demo', '--help']):\n"
            "    try:\n"
            "        main(argv)\n"
            "    except SystemExit:\n"
            "        pass\n"
            "print('torch' in sys.modules, 'gymnasium' in sys.modules)")
    assert _run(code).splitlines()[-1] == "False True"  # gymnasium: the id registration
