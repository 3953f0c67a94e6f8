"""Corpus harvesting and coverage, on small binaries that gcc builds here.

The hand-counted binary is assembled from known instructions so every number the coverage
report gives for it can be checked against a count made by reading the source below.
"""

from __future__ import annotations

import gzip
import json
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stepper import corpus, coverage
from stepper.cli import main

# Function entries, by hand (the first 4 instructions of each sized STT_FUNC symbol):
#   full:   push rbp | mov rbp, rsp | sub rsp, 16 | mov eax, 1      4 sites, 4 emulated
#   probe:  cpuid | ret                                             2 sites, 1 emulated
#   call_kernel: xor eax, eax | syscall | ret                      3 sites, 2 emulated
#   trap:   int3 | ret                                              2 sites, 1 emulated
#   alias (same address as `full`) and unsized (size 0) add none.
# cpuid and syscall are plain user-mode instructions: executed out of line. int3 raises the
# very trap a breakpoint uses: refused by both.
# All instructions of .text: full has 6 (+ leave, ret), probe 2, call_kernel 3, trap 2 and
# unsized 1: 14, of which cpuid, syscall and int3 (3) are not emulated.
HAND_ASM = """
    .intel_syntax noprefix
    .text
    .globl full, alias, probe, call_kernel, trap, unsized
    .type full, @function
    .type alias, @function
    .type probe, @function
    .type call_kernel, @function
    .type trap, @function
    .type unsized, @function
full:
alias:
    push rbp
    mov rbp, rsp
    sub rsp, 16
    mov eax, 1
    leave
    ret
    .size full, .-full
    .size alias, .-full
probe:
    cpuid
    ret
    .size probe, .-probe
call_kernel:
    xor eax, eax
    syscall
    ret
    .size call_kernel, .-call_kernel
trap:
    int3
    ret
    .size trap, .-trap
unsized:
    ret
"""
HAND_ENTRY = {"sites": 11, "emulate": 8, "xol": 2, "refused": 1}
HAND_ALL = {"sites": 14, "emulate": 11, "xol": 2, "refused": 1}
HAND_MISSING = {"cpuid": 2, "int3": 2, "syscall": 2}

C_PROGRAM = r"""
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
static int compare(const void *a, const void *b) { return *(const int *)a - *(const int *)b; }
int main(int argc, char **argv) {
    int values[64];
    for (int i = 0; i < 64; i++) values[i] = (i * 7919) % 101 - argc;
    qsort(values, 64, sizeof *values, compare);
    char buffer[128];
    snprintf(buffer, sizeof buffer, "%d %d %s", values[0], values[63], argv[0]);
    printf("%zu\n", strlen(buffer));
    return values[0] > 0;
}
"""


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict[str, Path]:
    """The hand-counted shared object and an ordinary C program, built once."""
    directory = tmp_path_factory.mktemp("corpus")
    asm, source = directory / "hand.S", directory / "prog.c"
    asm.write_text(HAND_ASM)
    source.write_text(C_PROGRAM)
    hand, prog = directory / "hand.so", directory / "prog"
    subprocess.run(["gcc", "-shared", "-nostdlib", "-o", hand, asm], check=True)
    subprocess.run(["gcc", "-O2", "-o", prog, source], check=True)
    return {"hand": hand, "prog": prog, "dir": directory}


def _objdump_starts(path: Path) -> dict[int, bytes]:
    """Instruction starts of .text as GNU objdump sees them: an independent linear sweep."""
    out = subprocess.run(["objdump", "-d", "-j", ".text", "-w", str(path)], check=True,
                         capture_output=True, text=True).stdout
    starts = {}
    for line in out.splitlines():
        match = re.match(r"\s+([0-9a-f]+):\t([0-9a-f ]+?)\s*\t", line)
        if match:
            starts[int(match.group(1), 16)] = bytes.fromhex(match.group(2).replace(" ", ""))
    return starts


def _symbols(path: Path) -> dict[str, int]:
    out = subprocess.run(["nm", "--defined-only", str(path)], check=True,
                         capture_output=True, text=True).stdout
    return {name: int(value, 16) for value, kind, name in
            (line.split() for line in out.splitlines()) if kind in "Tt"}


# --------------------------------------------------------------------------- harvesting

def test_entry_sites_are_the_first_four_instructions_of_each_sized_function(built):
    sites = [s for s in corpus.harvest(built["hand"], sample=0) if s.kind == "entry"]
    symbols = _symbols(built["hand"])
    by_symbol: dict[str, list[int]] = {}
    for site in sites:
        by_symbol.setdefault(site.symbol, []).append(site.offset)
        assert site.address == symbols[site.symbol] + site.offset
    # `alias` shares full's address: one function; `unsized` has size 0: not a function.
    assert by_symbol == {"full": [0, 1, 4, 8], "probe": [0, 2], "call_kernel": [0, 2, 4],
                         "trap": [0, 1]}


def test_sampled_sites_are_instruction_starts_with_their_bytes(built):
    starts = _objdump_starts(built["prog"])
    sites = [s for s in corpus.harvest(built["prog"], sample=40, seed=3) if s.kind == "sample"]
    assert len(sites) == 40 == len({s.address for s in sites})
    for site in sites:
        assert starts[site.address] == site.code


def test_sample_larger_than_text_takes_every_instruction(built):
    starts = _objdump_starts(built["prog"])
    sites = [s for s in corpus.harvest(built["prog"], sample=10**6) if s.kind == "sample"]
    assert {s.address: s.code for s in sites} == starts


def test_sample_depends_on_the_seed(built):
    def addresses(seed):
        return [s.address for s in corpus.harvest(built["prog"], sample=20, seed=seed)
                if s.kind == "sample"]
    assert addresses(1) == addresses(1)
    assert addresses(1) != addresses(2)


def test_eh_frame_finds_functions_of_a_stripped_executable(built, tmp_path):
    stripped = tmp_path / "stripped"
    subprocess.run(["strip", "-o", stripped, built["prog"]], check=True)
    plain = [s for s in corpus.harvest(stripped, sample=0) if s.kind == "entry"]
    framed = [s for s in corpus.harvest(stripped, sample=0, eh_frame=True) if s.kind == "entry"]
    main_address = _symbols(built["prog"])["main"]
    assert plain == []  # stripped: no function symbols left
    assert any(s.address == main_address and s.offset == 0 and s.symbol is None
               for s in framed)


# --------------------------------------------------------------------------- files

def test_build_is_byte_deterministic(built, tmp_path):
    first, second = tmp_path / "a.jsonl.gz", tmp_path / "b.jsonl.gz"
    for output, inputs in ((first, [built["prog"], built["hand"]]),
                           (second, [built["hand"], built["prog"]])):
        assert main(["corpus", "build", *map(str, inputs), "-o", str(output),
                     "--sample", "50", "--seed", "7"]) == 0
    assert first.read_bytes() == second.read_bytes()


def test_corpus_rows_follow_the_schema(built, tmp_path):
    output = tmp_path / "hand.jsonl.gz"
    assert main(["corpus", "build", str(built["hand"]), "-o", str(output)]) == 0
    with gzip.open(output, "rt") as lines:
        rows = [json.loads(line) for line in lines]
    assert [(r["kind"], r["bytes"]) for r in rows] == sorted((r["kind"], r["bytes"]) for r in rows)
    entry = {r["text"]: r["count"] for r in rows if r["kind"] == "entry"}
    assert entry == {"push rbp": 1, "mov rbp, rsp": 1, "sub rsp, 0x10": 1, "mov eax, 1": 1,
                     "cpuid": 1, "ret": 3, "xor eax, eax": 1, "syscall": 1, "int3": 1}
    assert sum(r["count"] for r in rows if r["kind"] == "sample") == HAND_ALL["sites"]
    for row in rows:
        assert set(row) == {"kind", "bytes", "count", "mnemonic", "text", "examples"}
        assert 1 <= len(row["examples"]) <= min(row["count"], corpus.EXAMPLES_PER_ROW)
        for example in row["examples"]:
            assert set(example) == {"object", "address", "symbol", "offset"}
            assert example["object"] == "hand.so"


sites_strategy = st.lists(st.builds(
    corpus.Site, kind=st.sampled_from(corpus.KINDS),
    code=st.sampled_from([b"\x55", b"\xc3", b"\x48\x89\xe5", b"\x0f\xa2"]),
    object=st.sampled_from(["a", "b"]), address=st.integers(0, 2**40),
    symbol=st.none() | st.sampled_from(["f", "g"]), offset=st.none() | st.integers(0, 64)),
    max_size=40)


@settings(max_examples=60, deadline=None)
@given(sites=sites_strategy, seed=st.integers())
def test_rows_count_every_site_whatever_the_order(sites, seed):
    rows = corpus.deduplicate(sites)
    assert sum(r["count"] for r in rows) == len(sites)
    assert len(rows) == len({(s.kind, s.code) for s in sites})
    shuffled = list(sites)
    random.Random(seed).shuffle(shuffled)
    assert corpus.dumps(corpus.deduplicate(shuffled)) == corpus.dumps(rows)


# --------------------------------------------------------------------------- coverage

def test_coverage_matches_the_hand_count(built, tmp_path):
    report = tmp_path / "coverage.json"
    assert main(["corpus", "coverage", str(built["hand"]), "--json", str(report)]) == 0
    result = json.loads(report.read_text())
    assert set(result) == {"schema", "entry", "all", "missing"}
    assert result["schema"] == 1   # docs/schema.md
    for kind, hand in (("entry", HAND_ENTRY), ("all", HAND_ALL)):
        assert result[kind] == hand
    assert result["missing"] == [[m, c] for m, c in sorted(HAND_MISSING.items())]


def test_coverage_of_a_corpus_equals_coverage_of_its_binary(built, tmp_path, capsys):
    output = tmp_path / "prog.jsonl.gz"
    assert main(["corpus", "build", str(built["prog"]), "-o", str(output)]) == 0
    from_corpus = coverage.coverage(corpus.load(output)).as_json()
    from_binary = coverage.coverage(corpus.load(built["prog"])).as_json()
    assert from_corpus == from_binary
    capsys.readouterr()
    assert main(["corpus", "coverage", str(output), str(built["hand"]), "--json", "-"]) == 0
    out = capsys.readouterr().out
    assert "| prog.jsonl.gz | entry |" in out and "| **total** | entry |" in out
    totals = json.loads(out[out.index("\n{") + 1:])
    assert totals["entry"]["sites"] == from_corpus["entry"]["sites"] + HAND_ENTRY["sites"]


# --------------------------------------------------------------------------- bad input

def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stepper.cli", "corpus", *args],
                          capture_output=True, text=True)


@pytest.mark.parametrize("make_input, message", [
    (lambda d: d / "missing", "no such file"),
    (lambda d: _write(d / "notes.txt", b"hello\n"), "neither an ELF file nor a corpus"),
    (lambda d: _write(d / "bad.jsonl.gz", b"\x1f\x8b\x08garbage"), "not a readable"),
    (lambda d: _write(d / "rows.jsonl.gz", gzip.compress(b'{"kind": "entry"}\n')),
     "field 'bytes' missing"),
])
def test_bad_coverage_input_is_one_line_and_a_failure(tmp_path, make_input, message):
    result = _run("coverage", str(make_input(tmp_path)))
    assert result.returncode != 0
    assert result.stdout == ""
    assert len(result.stderr.splitlines()) == 1 and message in result.stderr


def test_bad_build_input_changes_nothing(built, tmp_path):
    output = tmp_path / "out.jsonl.gz"
    text = _write(tmp_path / "notes.txt", b"not a binary\n")
    for args in ([str(built["hand"]), str(text)], [str(tmp_path / "missing")]):
        result = _run("build", *args, "-o", str(output))
        assert result.returncode != 0
        assert len(result.stderr.splitlines()) == 1 and "stepper: error:" in result.stderr
        assert list(tmp_path.iterdir()) == [text]  # no output, no temporary left behind
    result = _run("build", str(built["hand"]), "-o", str(tmp_path / "nodir" / "x.jsonl.gz"))
    assert result.returncode != 0 and "does not exist" in result.stderr


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_relocatable_object_is_refused(tmp_path):
    source = _write(tmp_path / "f.S", b".text\nf: ret\n")
    subprocess.run(["gcc", "-c", "-o", tmp_path / "f.o", source], check=True)
    result = _run("coverage", str(tmp_path / "f.o"))
    assert result.returncode != 0 and "link it first" in result.stderr
    assert len(result.stderr.splitlines()) == 1


COMMITTED = sorted((Path(__file__).resolve().parents[2] / "corpus").glob("*.jsonl.gz"))


@pytest.mark.parametrize("path", COMMITTED, ids=[p.name for p in COMMITTED])
def test_committed_corpora_are_well_formed(path):
    rows = corpus.read(path)
    assert {row["kind"] for row in rows} == set(corpus.KINDS)
    assert corpus.dumps({k: v for k, v in row.items() if k != "code"} for row in rows) \
        == path.read_bytes()  # as `build` writes it: sorted, canonical, reproducible
