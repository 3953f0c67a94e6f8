"""stepper.loader: the dynamic loader's search, emulated (DT_NEEDED breadth-first, DT_RPATH
with $ORIGIN, the ldconfig cache, the interpreter last)."""

from __future__ import annotations

import os

import pytest

from tests.support.programs import gcc
from stepper.loader import LoaderError, file_matches, find_library, find_on_disk, library_closure
from stepper.symbols import ElfSymbols

LIBRARY = "int dup_fn(int x) { return x + %d; }\n"
PROGRAM = "int dup_fn(int);\nint main(void) { return dup_fn(0) & 0; }\n"


@pytest.fixture(scope="module")
def build(tmp_path_factory):
    d = tmp_path_factory.mktemp("loader")
    (d / "amb.c").write_text(PROGRAM)
    for lib, n in (("a", 1), ("b", 2)):
        (d / f"{lib}.c").write_text(LIBRARY % n)
        gcc(d / f"lib{lib}.so", "-shared", "-fPIC", d / f"{lib}.c")
    return {"dir": str(d),
            "amb": gcc(d / "amb", d / "amb.c", f"-L{d}", "-Wl,--no-as-needed", "-la", "-lb",
                       "-Wl,-rpath,$ORIGIN")}


def test_closure_follows_rpath_and_ends_with_the_interpreter(build):
    closure = [os.path.basename(p) for p in library_closure(build["amb"])]
    assert closure[:3] == ["amb", "liba.so", "libb.so"]
    assert "libc.so.6" in closure and closure[-1].startswith("ld-linux")


def test_find_library_by_rpath_origin_and_by_the_system_search(build):
    exe = build["amb"]
    symbols = ElfSymbols.load(exe)
    assert find_library("liba.so", symbols, exe) == os.path.join(build["dir"], "liba.so")
    libc = find_library("libc.so.6", symbols, exe)
    assert libc is not None and ElfSymbols.load(libc).soname == "libc.so.6"
    assert find_library("libnosuch-stepper.so.9", symbols, exe) is None


def test_find_on_disk_and_file_matches(build):
    exe = build["amb"]
    libc = find_on_disk("libc.so.6", exe)
    assert libc is not None and file_matches("libc.so.6", libc)   # by soname
    assert file_matches("libc.so*", libc) and not file_matches("liba.so", libc)
    assert find_on_disk("libc.so*", exe) is None                   # a glob names no one file
    assert file_matches(libc, os.path.realpath(libc))              # by path (same inode)


def test_missing_executable_is_one_line_error(tmp_path):
    with pytest.raises(LoaderError, match="no such executable") as e:
        library_closure(str(tmp_path / "missing"))
    assert "\n" not in str(e.value)
