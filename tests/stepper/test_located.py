"""stepper.located on the counter program while it runs, built as PIE and non-PIE: the load
bias and the symbol of a run-time address agree with what the program prints about itself
(&t_one and dlsym(getpid))."""

from __future__ import annotations

import os

import pytest

from stepper import located, maps
from tests.support.elf import symbol
from tests.support.programs import build_pie_and_nopie, counter_program

PROGRAM = counter_program(third="", result="t_two(argc) & 1")


@pytest.fixture(scope="module")
def build(tmp_path_factory):
    return build_pie_and_nopie(tmp_path_factory.mktemp("located"), PROGRAM)


def test_main_bias_gives_the_runtime_address(running):
    proc, exe, t_one, _ = running
    bias = located.main_bias(proc.pid, exe)
    assert bias + symbol(exe, "t_one")[0] == t_one
    assert (bias != 0) == exe.endswith("/pie")


def test_containing_symbol_in_the_executable(running):
    proc, exe, t_one, _ = running
    mappings = maps.read(proc.pid)
    size = symbol(exe, "t_one")[1]
    for address in (t_one, t_one + size - 1):
        found = located.containing_symbol(mappings, address)
        assert found is not None and os.path.samefile(found.object, exe)
        assert (found.address, found.size) == (t_one, size)
        assert found.name in ("t_one", "t_one_alias")   # two names of one function
    after = located.containing_symbol(mappings, t_one + size)
    assert after is None or after.address != t_one  # one past the end is not t_one


def test_containing_symbol_in_libc_and_outside_any_file(running):
    proc, _, _, getpid = running
    mappings = maps.read(proc.pid)
    found = located.containing_symbol(mappings, getpid)
    assert found is not None and "libc" in os.path.basename(found.object)
    assert found.address == getpid and "getpid" in found.name
    stack = next(m for m in mappings if m.path == "[stack]")
    assert located.containing_symbol(mappings, stack.start) is None
    assert located.load_bias(stack) is None
    assert located.containing_symbol(mappings, 0x1000) is None  # unmapped
