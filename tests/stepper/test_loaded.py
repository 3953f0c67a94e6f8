"""stepper.loaded: the ELF objects a live process has mapped, their load biases, and the
dynamic loader's r_debug rendezvous."""

from __future__ import annotations

import os

import pytest

from tests.support.programs import build_pie_and_nopie, counter_program
from stepper.loaded import RT_CONSISTENT, loaded_objects, r_debug_breakpoint, r_debug_state
from stepper.symbols import ElfSymbols

PROGRAM = counter_program(third="__attribute__((noinline)) int t_three(int x) { return x; }",
                          result="t_three(argc) & (int)getpid() & 0")


@pytest.fixture(scope="module")
def build(tmp_path_factory):
    return build_pie_and_nopie(tmp_path_factory.mktemp("loaded"), PROGRAM)


def test_load_bias_matches_runtime_addresses(running):
    proc, exe, t_one, getpid = running
    objects = loaded_objects(proc.pid)
    main = objects[0]
    assert main.main and os.path.samefile(main.path, exe)
    assert main.bias + ElfSymbols.load(exe).lookup("t_one")[0].value == t_one
    if ElfSymbols.load(exe).is_pie:
        assert main.bias != 0
    else:
        assert main.bias == 0
    (libc,) = [o for o in objects if "libc.so.6" in o.names()]
    assert libc.bias + libc.symbols.lookup("getpid")[0].value == getpid
    assert all(o.start <= o.bias + ElfSymbols.load(o.path).segments[0][0] < o.end
               for o in objects)


def test_r_debug_breakpoint_in_the_loader(running):
    proc, _exe, _t_one, _getpid = running
    objects = loaded_objects(proc.pid)
    brk = r_debug_breakpoint(objects)
    (loader,) = [o for o in objects if o.start <= brk < o.end]
    assert loader.symbols.describe(brk - loader.bias) == "_dl_debug_state"

    def read(address: int, size: int) -> bytes:
        with open(f"/proc/{proc.pid}/mem", "rb") as mem:
            mem.seek(address)
            return mem.read(size)
    assert r_debug_state(read, objects) == RT_CONSISTENT
    assert r_debug_breakpoint(objects[:1]) is None        # the executable is not the loader
