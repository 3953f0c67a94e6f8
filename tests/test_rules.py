"""Rules of the test suite that a reviewer would otherwise have to remember: no test module
imports another test module or a conftest by name (shared fixtures come from conftest through
pytest, shared plain helpers from tests.support)."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def _forbidden(name: str) -> bool:
    """True for a dotted module name that is a conftest or a test module."""
    return any(part == "conftest" or part.startswith("test_") for part in name.split("."))


def forbidden_imports(source: str, filename: str = "<test>") -> list[str]:
    """The imports in `source` that name a conftest or a test module, as `line: statement`."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            # `from pkg import test_x` imports a module named by the alias; so does
            # `from . import conftest`.
            names = [module] + [f"{module}.{alias.name}".lstrip(".") for alias in node.names]
        else:
            continue
        if any(_forbidden(name) for name in names if name):
            found.append(f"{node.lineno}: {ast.unparse(node)}")
    return found


def test_no_test_file_imports_a_test_module_or_conftest():
    offending = {
        str(path.relative_to(TESTS)): bad
        for path in sorted(TESTS.rglob("*.py"))
        if (bad := forbidden_imports(path.read_text(), str(path)))}
    assert offending == {}


def test_the_import_rule_sees_every_form():
    bad = [
        "import conftest",
        "from conftest import run_cli",
        "from tests.stepper.conftest import build",
        "from . import conftest",
        "from .conftest import symbol",
        "import test_specs",
        "from test_specs import value",
        "from tests.stepper import test_specs",
        "from .test_specs import value",
        "def f():\n    from conftest import gcc",
    ]
    for source in bad:
        assert forbidden_imports(source), source
    good = [
        "import pytest",
        "from tests.support.runs import run_cli",
        "from stepper import testing_helpers",  # a name that only contains 'test'
        "import emu.testing",
    ]
    for source in good:
        assert not forbidden_imports(source), source
