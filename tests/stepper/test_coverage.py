"""stepper.coverage: corpus rows classified with policy's verdict, weighted by count, and the
Markdown tables of `stepper corpus coverage`."""

from __future__ import annotations

from stepper import coverage
from tests.support.flat import CODE, asm


def row(kind: str, text: str, count: int) -> dict:
    return {"kind": kind, "bytes": asm(text).hex(), "count": count,
            "examples": [{"address": CODE}]}


def test_classify():
    assert coverage.classify(asm("add rax, rbx"), CODE) == ("emulate", "add")
    assert coverage.classify(asm("syscall"), CODE) == ("xol", "syscall")
    assert coverage.classify(asm("hlt"), CODE) == ("refused", "hlt")
    assert coverage.classify(b"\x06", CODE) == ("refused", "(invalid)")  # push es: not in 64-bit
    assert coverage.classify(b"", CODE) == ("refused", "(invalid)")


def test_coverage_weights_rows_by_count():
    rows = [row("entry", "push rbp", 10), row("entry", "syscall", 3), row("sample", "hlt", 2),
            row("sample", "add rax, rbx", 5), row("sample", "syscall", 4)]
    result = coverage.coverage(rows)
    assert result.entry.as_dict() == {"sites": 13, "emulate": 10, "xol": 3, "refused": 0}
    assert result.all.as_dict() == {"sites": 11, "emulate": 5, "xol": 4, "refused": 2}
    assert result.missing == [("syscall", 7), ("hlt", 2)]
    assert result.as_json()["missing"] == [["syscall", 7], ["hlt", 2]]
    assert result.entry.share("emulate") == 10 / 13
    assert coverage.Tally().share("emulate") == 0.0


def test_merge_adds_every_count():
    a = coverage.coverage([row("entry", "push rbp", 1), row("sample", "syscall", 2)])
    b = coverage.coverage([row("entry", "syscall", 5)])
    a.merge(b)
    assert a.entry.as_dict() == {"sites": 6, "emulate": 1, "xol": 5, "refused": 0}
    assert a.missing_by_kind["entry"]["syscall"] == 5
    assert a.missing_by_kind["sample"]["syscall"] == 2
    assert a.missing == [("syscall", 7)]


def test_format_table():
    one = coverage.coverage([row("entry", "push rbp", 3), row("entry", "syscall", 1)])
    text = coverage.format_table([("libc", one)], total=one, top=5)
    lines = text.splitlines()
    assert lines[0] == "| input | kind | sites | emulate | xol | refused |"
    assert "| libc | entry | 4 | 75.0% (3) | 25.0% (1) | 0.0% (0) |" in lines
    assert "| libc | all (sample) | 0 | - | - | - |" in lines
    assert "| **total** | entry | 4 | 75.0% (3) | 25.0% (1) | 0.0% (0) |" in lines
    assert lines[-1] == "| syscall | 1 | 0 | 1 |"
    clean = coverage.coverage([row("entry", "push rbp", 1)])
    assert coverage.format_table([("x", clean)]).splitlines()[-1] == "| (none) | 0 | 0 | 0 |"
