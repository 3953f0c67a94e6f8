"""The layers of the tree stay visible: no import cycle, and no lower layer importing a higher
one, counting every import a module can execute (function-level ones too; imports under
`if TYPE_CHECKING:` never run and are left out).

The layers, from the bottom:
  emu (the pure emulator)  <  emu.testing, emu.bench (need the `fuzz` extra)
  the stepper engine, itself in layers (docs/engine.md has the map):
    stepper's helpers, stepper.kernel  <  .stops, .records, .debug_stop  <  .strategies, .policy,
    .breakpoints, .instruction_step  <  .process, .stepping, .returns, .user_breakpoints
    <  .tracer  <  .detach  <  .session, .allstop, .thread_step, .debugger
  <  stepper.api  <  stepper.corpus, .coverage, .probing, .fuzz, .bench
  <  stepper.commands  <  stepper.cli
and `import stepper.api` (what a debugger imports) needs only capstone, pyelftools and
python-ptrace.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("emu", "stepper")

#: (prefix, rank): a module's layer is the rank of the longest prefix it starts with.
LAYERS = (
    ("emu", 0), ("emu.testing", 1), ("emu.bench", 1),
    ("stepper", 2), ("stepper.kernel", 2),
    ("stepper.stops", 3), ("stepper.records", 3),
    ("stepper.strategies", 4), ("stepper.policy", 4), ("stepper.breakpoints", 4),
    ("stepper.instruction_step", 4),
    ("stepper.process", 5), ("stepper.stepping", 5), ("stepper.returns", 5),
    ("stepper.user_breakpoints", 5),
    ("stepper.tracer", 6), ("stepper.detach", 7), ("stepper.session", 8),
    ("stepper.allstop", 8), ("stepper.thread_step", 8), ("stepper.debugger", 8),
    ("stepper.debug_stop", 3),
    ("stepper.api", 9),
    ("stepper.corpus", 10), ("stepper.coverage", 10), ("stepper.probing", 10),
    ("stepper.fuzz", 10), ("stepper.bench", 10),
    ("stepper.commands", 11), ("stepper.cli", 12),
)


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _type_checking_only(node: ast.AST, parents: dict) -> bool:
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return True
    return False


def _targets(module: str, is_package: bool, node: ast.AST, modules: dict) -> list[str]:
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        if node.level:
            base = module.split(".") if is_package else module.split(".")[:-1]
            base = base[:len(base) - (node.level - 1)]
            prefix = ".".join(base + ([node.module] if node.module else []))
        else:
            prefix = node.module
        names = [f"{prefix}.{alias.name}" if f"{prefix}.{alias.name}" in modules else prefix
                 for alias in node.names]
    out = []
    for name in names:
        while name not in modules and "." in name:
            name = name.rsplit(".", 1)[0]
        if name in modules and name != module:
            out.append(name)
    return out


def import_graph() -> dict[str, set[str]]:
    """module -> the project modules it imports (at any level of its code)."""
    modules = _modules()
    graph = {}
    for module, path in modules.items():
        tree = ast.parse(path.read_text(), str(path))
        parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
        graph[module] = {
            target
            for node in ast.walk(tree)
            if isinstance(node, (ast.Import, ast.ImportFrom)) and not _type_checking_only(node, parents)
            for target in _targets(module, path.name == "__init__.py", node, modules)}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

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


def layer(module: str) -> int:
    best = max((p for p, _ in LAYERS if module == p or module.startswith(p + ".")), key=len)
    return dict(LAYERS)[best]


def test_the_graph_sees_function_level_imports():
    graph = import_graph()
    assert "stepper.api" in graph["stepper"]  # stepper/__init__ imports api inside a function
    assert "stepper.session" not in graph["stepper.sigtrap"]  # TYPE_CHECKING only


def test_no_import_cycle():
    assert cycles(import_graph()) == []


def test_cycles_are_found():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_lower_layer_imports_a_higher_one():
    graph = import_graph()
    upward = sorted(f"{m} -> {d}" for m, deps in graph.items() for d in deps
                    if layer(d) > layer(m) and m != "stepper")  # the package re-exports api
    assert upward == []


def test_the_library_needs_no_fuzzing_dependency():
    code = ("import sys, stepper.api\n"
            "print(sorted(m for m in ('unicorn', 'keystone', 'hypothesis') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
