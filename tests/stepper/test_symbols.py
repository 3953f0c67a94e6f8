"""stepper.symbols against real files: gcc-built PIE and non-PIE programs, the system libc,
separate debug files, and the maps of running children (no ptrace needed to read those)."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
from hypothesis import given
from hypothesis import strategies as st

import stepper.symbols as symbols_module
from tests.support.programs import LINE_OF_COUNTER, build_pie_and_nopie, counter_program
from stepper.errors import StepperError
from stepper.symbols import ElfFileError, ElfSymbols, path_matches

PROGRAM = counter_program(
    third="__attribute__((noinline)) static int t_static(int x) { return t_two(x) * 3; }",
    result="t_static(argc) & 1")


@pytest.fixture(scope="module")
def build(tmp_path_factory):
    return build_pie_and_nopie(tmp_path_factory.mktemp("symbols"), PROGRAM)


def test_pie_flag(build):
    assert ElfSymbols(build["pie"]).is_pie
    assert not ElfSymbols(build["nopie"]).is_pie
    libc = ElfSymbols(_libc_path())
    assert not libc.is_pie and libc.soname == "libc.so.6"


def test_functions_lookup_and_alias(exe):
    elf = ElfSymbols.load(exe)
    names = {s.name for s in elf.functions()}
    assert {"t_one", "t_two", "t_static", "t_one_alias", "main"} <= names
    (one,), (alias,) = elf.lookup("t_one"), elf.lookup("t_one_alias")
    assert one.value == alias.value and one.type == "FUNC" and one.binding == "GLOBAL"
    assert elf.lookup("t_static")[0].binding == "LOCAL"
    assert elf.lookup("no_such_function") == []
    # The shown name among aliases is the plain one.
    assert elf.aliases(one.value)[0].name == "t_one"


def test_containing_and_describe(exe):
    elf = ElfSymbols.load(exe)
    (one,) = elf.lookup("t_one")
    assert elf.containing(one.value) == (one, 0)
    assert elf.containing(one.value + one.size - 1) == (one, one.size - 1)
    assert elf.describe(one.value + 2) == "t_one+0x2"
    assert elf.describe(one.value) == "t_one"
    assert elf.containing(0) is None and elf.describe(0) == "0x0"


def test_read_returns_file_code(exe):
    elf = ElfSymbols.load(exe)
    (one,) = elf.lookup("t_one")
    assert elf.is_code(one.value)
    code = elf.read(one.value, one.size)
    objdump = subprocess.run(["objdump", "-d", f"--start-address={one.value:#x}",
                              f"--stop-address={one.value + one.size:#x}", exe],
                             capture_output=True, text=True, check=True).stdout
    hex_bytes = "".join(part for line in objdump.splitlines() if ":\t" in line
                        for part in line.split("\t")[1].split())
    assert code.hex() == hex_bytes


def test_lines_by_basename_and_suffix(build):
    elf = ElfSymbols.load(build["pie"])
    assert elf.has_lines
    (path, addresses), = elf.lines("prog.c", LINE_OF_COUNTER).items()
    assert path.endswith("/prog.c") and addresses
    (one,) = elf.lookup("t_one")
    assert all(one.value <= a < one.value + one.size for a in addresses)
    suffix = os.path.basename(str(build["dir"])) + "/prog.c"
    assert elf.lines(suffix, LINE_OF_COUNTER) == {path: addresses}
    assert elf.lines("other/prog.c", LINE_OF_COUNTER) == {}
    assert elf.lines("prog.c", 1) == {path: []}          # `#define`: no code
    assert LINE_OF_COUNTER in elf.lines_with_code(path)
    assert not ElfSymbols.load(build["nopie"]).has_lines


def test_separate_debug_file_by_build_id(build, tmp_path, monkeypatch):
    """A stripped executable gets its .symtab and line table from /usr/lib/debug/.build-id."""
    full = build["pie"]
    stripped = tmp_path / "stripped"
    subprocess.run(["strip", "--strip-all", "-o", str(stripped), full], check=True)
    build_id = ElfSymbols(full).build_id
    assert build_id and ElfSymbols(str(stripped)).build_id == build_id
    debug_root = tmp_path / "debug"
    monkeypatch.setattr(symbols_module, "DEBUG_ROOT", str(debug_root))
    bare = ElfSymbols(str(stripped))
    assert bare.debug_file is None and bare.lookup("t_static") == [] and not bare.has_lines
    target = debug_root / ".build-id" / build_id[:2] / (build_id[2:] + ".debug")
    target.parent.mkdir(parents=True)
    subprocess.run(["objcopy", "--only-keep-debug", full, str(target)], check=True)
    found = ElfSymbols(str(stripped))
    assert found.debug_file == str(target)
    assert found.lookup("t_static")[0].value == ElfSymbols(full).lookup("t_static")[0].value
    assert found.lines("prog.c", LINE_OF_COUNTER) == ElfSymbols(full).lines(
        "prog.c", LINE_OF_COUNTER)
    # Code still comes from the stripped file (the debug file has none).
    (one,) = found.lookup("t_one")
    assert found.read(one.value, 8) == ElfSymbols(full).read(one.value, 8)


def test_dynsym_only_names_versions_like_the_loader(tmp_path, monkeypatch):
    """Without any .symtab, .dynsym: the default version is the plain name, others keep @V."""
    monkeypatch.setattr(symbols_module, "DEBUG_ROOT", str(tmp_path))
    libc = ElfSymbols(_libc_path())
    if libc.debug_file is not None:
        pytest.skip("libc has a debug file beside it")
    names = {s.name for s in libc.functions()}
    assert "getpid" in names and "malloc" in names
    assert all(s.exported for s in libc.functions())
    versioned = [n for n in names if "@" in n]
    assert versioned, "glibc keeps compatibility versions (e.g. realpath@GLIBC_2.2.5)"
    if "realpath@GLIBC_2.2.5" in names:       # an old ABI kept beside the default one
        assert libc.lookup("realpath")[0].value != libc.lookup("realpath@GLIBC_2.2.5")[0].value
    assert any(s.type == "IFUNC" for s in libc.functions())      # memcpy and friends


def test_system_debug_file_gives_local_symbols():
    libc = ElfSymbols(_libc_path())
    if libc.debug_file is None:
        pytest.skip("no libc debug file installed (libc6-dbg)")
    assert any(s.binding == "LOCAL" for s in libc.functions())
    # getpid has aliases; the plain name is preferred for display.
    (getpid,) = libc.lookup("getpid")
    assert libc.describe(getpid.value) == "getpid"


def test_not_elf_is_one_line_error(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("hello\n")
    with pytest.raises(ElfFileError, match="is not a readable ELF file") as e:
        ElfSymbols(str(text))
    assert "\n" not in str(e.value)
    with pytest.raises(StepperError, match="cannot read .*missing") as e:
        ElfSymbols.load(str(tmp_path / "missing"))
    assert "\n" not in str(e.value)


segment = st.text(alphabet="abc.-_", min_size=1, max_size=5).filter(lambda s: s not in (".", ".."))


@given(st.lists(segment, min_size=1, max_size=5), st.integers(min_value=1, max_value=5))
def test_path_matches_any_trailing_components(parts, keep):
    path = "/" + "/".join(parts)
    suffix = "/".join(parts[-keep:])
    assert path_matches(suffix, path)
    assert path_matches(parts[-1], path)
    assert not path_matches(parts[-1] + "x", path)
    assert not path_matches("zz/" + "/".join(parts), path)


def _libc_path() -> str:
    out = subprocess.run(["ldd", shutil.which("true") or "/bin/true"], capture_output=True,
                         text=True).stdout
    for line in out.splitlines():
        if "libc.so.6 =>" in line:
            return os.path.realpath(line.split("=>")[1].split()[0])
    pytest.skip("no libc.so.6")
