"""stepper.elf_cache: what is parsed from ELF files, kept between runs, private and verified.

A warm run reads the same symbols, imports and line tables as a cold one without parsing the
ELF file (a spy on the parser counts); a changed file gets a fresh entry; an entry that does
not validate, or a file the cache must not trust (someone else's, group-writable, a symlink),
is parsed again, never used.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.support.programs import build_pie_and_nopie, counter_program
from stepper import elf as elfread
from stepper import ifunc
from stepper.loader import library_closure
from stepper.symbols import ElfSymbols

PROGRAM = counter_program(third="__attribute__((noinline)) int t_three(int x) { return x; }",
                          result="t_three(argc) & 0")


@pytest.fixture(scope="module")
def build(tmp_path_factory):
    return build_pie_and_nopie(tmp_path_factory.mktemp("elf_cache"), PROGRAM)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A fresh cache directory of our own, and a count of symbol-table parses."""
    root = tmp_path / "cache"
    monkeypatch.setenv("STEPPER_CACHE", str(root))
    monkeypatch.delenv("STEPPER_ELF_CACHE", raising=False)
    parses = [0]
    real = elfread.function_symbols

    def counting(elf, section):
        parses[0] += 1
        return real(elf, section)
    monkeypatch.setattr(elfread, "function_symbols", counting)
    return root, parses


def fresh(path: str) -> ElfSymbols:
    """A new ElfSymbols (not the per-run one from ElfSymbols.load): what a new run sees."""
    return ElfSymbols(os.path.realpath(path))


def entries(root: Path, kind: str) -> list[Path]:
    return sorted((root / "elf").glob(f"{kind}-*.json"))


def test_warm_read_equals_cold_parse_without_parsing(build, cache):
    root, parses = cache
    exe = build["pie"]
    cold = fresh(exe)
    table, lines, imports = cold.functions(), cold.lines("prog.c", 1), cold.imports
    assert parses[0] >= 1 and entries(root, "symbols") and entries(root, "lines")
    parses[0] = 0
    warm = fresh(exe)
    assert warm.functions() == table and warm.lines("prog.c", 1) == lines
    assert warm.imports == imports and "__libc_start_main" in imports
    assert parses[0] == 0
    assert warm.source_files() == cold.source_files()


def test_entries_are_private(build, cache):
    root, _ = cache
    fresh(build["nopie"]).functions()
    (entry,) = entries(root, "symbols")
    assert entry.stat().st_mode & 0o777 == 0o600
    assert (root / "elf").stat().st_mode & 0o777 == 0o700


def test_a_changed_file_gets_a_fresh_entry(build, cache, tmp_path):
    root, parses = cache
    copy = tmp_path / "copy"
    copy.write_bytes(Path(build["nopie"]).read_bytes())
    fresh(str(copy)).functions()
    os.utime(copy, ns=(1, 1))                       # same bytes, another mtime: another key
    parses[0] = 0
    fresh(str(copy)).functions()
    assert parses[0] >= 1 and len(entries(root, "symbols")) == 2


@pytest.mark.parametrize("content", ["not json", "[]x", '[["t_one", -1, 0, "FUNC", "GLOBAL"]]',
                                     '[["t_one", 4096, 0, "BOGUS", "GLOBAL"]]', '{"a": 1}'])
def test_an_invalid_entry_is_parsed_again_and_rewritten(build, cache, content):
    root, parses = cache
    exe = build["nopie"]
    table = fresh(exe).functions()
    (entry,) = entries(root, "symbols")
    entry.write_text(content)
    parses[0] = 0
    assert fresh(exe).functions() == table
    assert parses[0] >= 1
    assert json.loads(entry.read_text())[0][0] == table[0].name   # rewritten, valid again


def test_an_entry_others_could_write_is_not_trusted(build, cache):
    root, parses = cache
    exe = build["nopie"]
    table = fresh(exe).functions()
    (entry,) = entries(root, "symbols")
    planted = [["t_one", 0x1234, 1, "FUNC", "GLOBAL"]]   # valid, but not ours to trust
    entry.write_text(json.dumps(planted))
    entry.chmod(0o666)
    parses[0] = 0
    assert fresh(exe).functions() == table
    assert parses[0] >= 1


def test_a_symlinked_entry_is_not_followed(build, cache, tmp_path):
    root, parses = cache
    exe = build["nopie"]
    table = fresh(exe).functions()
    (entry,) = entries(root, "symbols")
    elsewhere = tmp_path / "planted.json"
    elsewhere.write_text(json.dumps([["t_one", 0x1234, 1, "FUNC", "GLOBAL"]]))
    entry.unlink()
    entry.symlink_to(elsewhere)
    parses[0] = 0
    assert fresh(exe).functions() == table
    assert parses[0] >= 1


def test_an_unusable_cache_directory_only_costs_time(build, cache, tmp_path, monkeypatch):
    _root, parses = cache
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)                                # writable by others: refused
    monkeypatch.setenv("STEPPER_CACHE", str(shared))
    table = fresh(build["nopie"]).functions()
    assert table and parses[0] >= 1
    assert not (shared / "elf").exists()


def test_switched_off(build, cache, monkeypatch):
    root, _ = cache
    monkeypatch.setenv("STEPPER_ELF_CACHE", "0")
    assert fresh(build["nopie"]).functions()
    assert not (root / "elf").exists()


def test_ifunc_resolvers_are_kept_too(cache):
    root, _ = cache
    libc = next(p for p in library_closure("/bin/ls") if "libc.so" in p)
    (strlen,) = fresh(libc).lookup("strlen")
    cold = [s.name for s in ifunc.implementations(fresh(libc), strlen.value)]
    assert entries(root, "ifunc")
    warm = [s.name for s in ifunc.implementations(fresh(libc), strlen.value)]
    assert warm == cold and len(cold) > 1
