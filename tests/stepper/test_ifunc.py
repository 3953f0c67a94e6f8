"""stepper.ifunc on the system's libc and on an IFUNC of a program built here: an IFUNC probe becomes
probes on the implementations its resolver can return (decoded from the file; nothing runs)."""

from __future__ import annotations

import pytest

from stepper import ifunc
from stepper.loader import library_closure
from stepper.symbols import ElfSymbols
from tests.support.programs import gcc


@pytest.fixture(scope="module")
def libc() -> ElfSymbols:
    path = next((p for p in library_closure("/bin/ls") if "libc.so" in p), None)
    if path is None:
        pytest.skip("no glibc here")
    return ElfSymbols.load(path)


def test_strlen_resolves_to_its_implementations(libc):
    strlen = libc.lookup("strlen")
    if not strlen or strlen[0].type != "IFUNC":
        pytest.skip("strlen is not an IFUNC in this libc")
    found = ifunc.implementations(libc, strlen[0].value)
    assert len(found) >= 2 and all(s.type != "IFUNC" for s in found)
    if libc.debug_file or libc.lookup("__strlen_sse2"):   # local names need the full symtab
        assert "__strlen_sse2" in {s.name for s in found}   # the x86-64 baseline


def test_every_ifunc_target_is_a_function_start_in_code(libc):
    resolvers = {s.value for s in libc.functions() if s.type == "IFUNC"}
    if not resolvers:
        pytest.skip("no IFUNC in this libc")
    without = 0
    for value in resolvers:
        found = ifunc.implementations(libc, value)
        without += not found
        for symbol in found:
            assert libc.is_code(symbol.value) and symbol.value not in resolvers
    assert without <= len(resolvers) // 10   # nearly every resolver is a lea selector


def test_a_plain_function_is_not_an_ifunc(libc):
    getpid = libc.lookup("getpid")[0]
    assert not ifunc.is_ifunc(libc, getpid.value)
    assert ifunc.implementations(libc, getpid.value) == []


IFUNC_PROGRAM = """
#include <stdlib.h>
int choice;
__attribute__((noinline)) int impl_fast(int x) { return x * 3; }
__attribute__((noinline)) int impl_slow(int x) { return x + x + x; }
__attribute__((noinline)) int unrelated(int x) { return x - 1; }
static void *pick(void) { return getenv("SLOW") ? (void *)impl_slow : (void *)impl_fast; }
int triple(int) __attribute__((ifunc("pick")));
int main(int argc, char **argv) { return triple(argc) + unrelated(argc); }
"""


def test_own_ifunc_resolves_to_exactly_its_two_implementations(tmp_path):
    """A program's own IFUNC: the two functions its resolver can return, nothing else (not
    the resolver, not a function it does not name)."""
    (tmp_path / "ifunc.c").write_text(IFUNC_PROGRAM)
    exe = gcc(tmp_path / "ifunc", "-O1", "-fPIE", "-pie", tmp_path / "ifunc.c")
    symbols = ElfSymbols.load(exe)
    triple = symbols.lookup("triple")[0]
    assert ifunc.is_ifunc(symbols, triple.value)
    found = ifunc.implementations(symbols, triple.value)
    assert [s.name for s in found] == sorted(["impl_fast", "impl_slow"],
                                            key=lambda n: symbols.lookup(n)[0].value)
    assert not ifunc.is_ifunc(symbols, symbols.lookup("impl_fast")[0].value)
