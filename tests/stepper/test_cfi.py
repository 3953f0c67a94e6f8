"""stepper.cfi's FDE index in the ELF facts cache: a warm read parses no FDE until one is
looked up and finds the same rules as a parse without the cache; an index that does not
describe the file is never trusted."""

from __future__ import annotations

import io
import json

import pytest
from elftools.dwarf.callframe import FDE

from stepper import cfi


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("STEPPER_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("STEPPER_ELF_CACHE", raising=False)
    return tmp_path / "cache" / "elf"


def load(path: str, cached: bool = True) -> cfi.ObjectCfi:
    with open(path, "rb") as f:
        data = f.read()
    return cfi.ObjectCfi(io.BytesIO(data), path, path if cached else None)


def rules(table: cfi.ObjectCfi, vaddr: int):
    row = table.row(vaddr)
    return None if row is None else (str(row.cfa), sorted((n, str(r)) for n, r in
                                                          row.rules.items()), row.fde_start)


def addresses(table: cfi.ObjectCfi) -> list[int]:
    return [a for start, end, _ in table._fdes for a in (start, (start + end) // 2, end - 1)]


def test_a_warm_read_parses_only_what_it_looks_up(build, cache):
    exe = build("unwind")
    cold = load(exe)
    assert list(cache.glob("cfi-*.json"))
    warm = load(exe)
    assert len(warm) == len(cold) > 0
    assert not any(isinstance(fde, FDE) for _s, _e, fde in warm._fdes)  # none parsed yet
    plain = load(exe, cached=False)
    for vaddr in addresses(plain):
        assert rules(warm, vaddr) == rules(plain, vaddr)


def test_an_index_that_does_not_match_the_file_is_parsed_again(build, cache):
    exe = build("unwind")
    plain = load(exe, cached=False)
    load(exe)
    (entry,) = cache.glob("cfi-*.json")
    index = json.loads(entry.read_text())
    for row in index:
        row[3] += 4                     # every offset wrong: no FDE is where it says
    entry.write_text(json.dumps(index))
    tampered = load(exe)
    for vaddr in addresses(plain):
        assert rules(tampered, vaddr) == rules(plain, vaddr)
