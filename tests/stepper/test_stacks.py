"""hit.stack() and `stepper probe --stack/--folded` on the unwind tracee (call chains of known
shape, -O2, with and without frame pointers): every physical frame's (pc, function) equals
gdb's `bt` at the same stop where gdb is installed, across a signal frame and in a thread;
file:line come from the program's DWARF; the folded output adds up to the hits."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

from stepper import api
from stepper.errors import StepperError
from stepper.records import Hit
from stepper.stacks import StackReader, reader_of
from tests.support.elf import symbol
from tests.support.gdb import assert_frames_match, gdb_frames, no_randomization
from tests.support.programs import TRACEES
from tests.support.runs import probe_specs

CHAIN = ["leaf", "f4", "f3", "f2", "f1", "main"]
#: the frames of the signal stop: the handler's leaf, the trampoline, kill, then the chain
SIGNAL = ["leaf", "on_signal", "__restore_rt", "kill"] + CHAIN


def source_line(text: str) -> int:
    """The line of unwind.c that holds `text`."""
    lines = (TRACEES / "unwind.c").read_text().splitlines()
    return next(i for i, line in enumerate(lines, 1) if text in line)


def stacks_at_leaf(exe: str, mode: str) -> tuple[int, list[list]]:
    """(address of leaf, hit.stack() at each hit of leaf) in a run of `exe mode`."""
    with no_randomization():
        proc = api.spawn([exe, mode])
    address = proc.load_bias + symbol(exe, "leaf")[0]
    seen: list[list] = []
    proc.break_at(address, callback=lambda hit: seen.append(hit.stack()))
    status = proc.run()
    assert status.exit_code == 0
    return address, seen


@pytest.mark.parametrize("name", ["unwind", "unwind_fp"])
@pytest.mark.parametrize("mode, nth, names", [("chain", 1, CHAIN), ("signal", 2, SIGNAL),
                                              ("thread", 1, CHAIN[:-1] + ["worker"])])
def test_hit_stack_in_a_callback_matches_gdb(build, tmp_path, name, mode, nth, names):
    exe = build(name)
    address, seen = stacks_at_leaf(exe, mode)
    assert len(seen) == nth if mode != "signal" else len(seen) >= nth
    frames = seen[nth - 1]
    if mode == "thread":
        names = ["leaf", "f4", "f3", "f2", "f1", "worker", "start_thread"]
    assert [f.function for f in frames[:len(names)]] == names
    assert frames[0].pc == address and all(f.error is None for f in frames)
    assert frames[-1].function in ("_start", "clone3", "clone")      # the outermost frame
    assert [f.signal for f in frames].count(True) == (mode == "signal")
    assert_frames_match(frames, gdb_frames([exe, mode], address, tmp_path, nth))


@pytest.mark.parametrize("name", ["unwind", "unwind_fp"])
@pytest.mark.parametrize("mode", ["chain", "signal", "thread"])
def test_the_cached_plans_give_the_general_unwinders_frames(build, name, mode):
    """A stack walked through the per-pc plans (the fast path) equals, frame for frame, the
    one stepper.unwind.frames gives, at every hit; the plans were used where they apply
    (unwind_fp has no CFI: its frames take the general unwinder's frame-pointer path)."""
    exe = build(name)
    with no_randomization():
        proc = api.spawn([exe, mode])
    address = proc.load_bias + symbol(exe, "leaf")[0]
    pairs: list[tuple[list, list]] = []
    readers: list[StackReader] = []

    def compare(hit):
        if not readers:
            readers.extend(StackReader(hit.process.pid, hit.process.read_memory, plans=p)
                           for p in (True, False))
        pairs.append(tuple(r.stack(hit.regs) for r in readers))

    proc.break_at(address, callback=compare)
    assert proc.run().exit_code == 0
    assert pairs and all(fast == general for fast, general in pairs)
    assert all(len(fast) > 3 for fast, _general in pairs)
    used = any(plan is not None for plan in (*readers[0]._innermost.values(),
                                         *readers[0]._callers.values()))
    assert used == (name == "unwind")


def test_file_and_line_from_dwarf(build):
    _, seen = stacks_at_leaf(build("unwind"), "chain")
    frames = {f.function: f for f in seen[0]}
    for caller, call in (("f4", "leaf(x + 1)"), ("f3", "f4(x + 1)"), ("f2", "f3(x + 1)"),
                         ("f1", "f2(x + 1)")):
        f = frames[caller]
        assert f.file.endswith("unwind.c") and f.line == source_line(call), f
        assert str(f) == f"{caller}+{f.offset:#x} ({f.file}:{f.line})"
    # without DWARF: sym+off only
    _, seen = stacks_at_leaf(build("unwind_fp"), "chain")
    assert [str(f) for f in seen[0][:2]] == ["leaf+0x0", f"f4+{seen[0][1].offset:#x}"]
    assert seen[0][1].file is None


def test_a_hit_made_outside_the_engine_has_no_stack():
    hit = Hit(1, 0x1000, {"rip": 0x1000, "rsp": 0x2000}, lambda a, n: b"\0" * n)
    with pytest.raises(StepperError, match="no process"):
        hit.stack()


def function_of(frame: str) -> str:
    return frame.split("+")[0]


@pytest.mark.parametrize("name", ["unwind", "unwind_fp"])
def test_stack_in_jsonl_records_and_the_report(build, tmp_path, name):
    exe = build(name)
    out = tmp_path / "trace.jsonl"
    run, report = probe_specs(tmp_path, ["leaf"], [exe, "signal"], "--stack",
                              "--format", "jsonl", "-o", str(out))
    assert run.returncode == 0, run.stderr
    events = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(events) == 2
    chain, handler = (e["stack"] for e in events)
    assert [function_of(f) for f in chain[:6]] == CHAIN
    assert [function_of(f) for f in handler[:10]] == SIGNAL
    assert function_of(chain[-1]) == "_start"
    if name == "unwind":        # with DWARF: f4's frame is the line of its call to leaf
        assert chain[1].endswith(f"unwind.c:{source_line('leaf(x + 1)')})")
    else:
        assert "(" not in chain[1]
    stacks = report["trace"][0]["stacks"]
    assert sorted(s["count"] for s in stacks) == [1, 1]
    assert sorted(s["stack"] for s in stacks) == sorted([chain, handler])


def test_stack_in_text_trace_lines_across_threads(build, tmp_path):
    out = tmp_path / "trace.txt"
    run, _ = probe_specs(tmp_path, ["leaf x=%di"], [build("unwind"), "thread"], "--stack",
                         "-o", str(out))
    assert run.returncode == 0, run.stderr
    lines = out.read_text().splitlines()
    assert "leaf: x=" in lines[0] and not lines[0].startswith("\t")
    frames = [line[1:] for line in lines[1:]]
    assert all(line.startswith("\t") for line in lines[1:])
    assert [function_of(f) for f in frames[:7]] == CHAIN[:-1] + ["worker", "start_thread"]
    assert "stacks (1 distinct):" in run.stderr        # the summary at the end


def test_folded_counts_sum_to_the_hits(build, tmp_path):
    folded = tmp_path / "leaf.folded"
    exe = build("unwind_fp")
    run, report = probe_specs(tmp_path, ["leaf", "f4"], [exe, "signal"],
                              "--folded", str(folded))
    assert run.returncode == 0, run.stderr
    counts = {}
    for line in folded.read_text().splitlines():
        stack, count = line.rsplit(" ", 1)
        counts[stack] = int(count)
    hits = sum(p["count"] for p in report["trace"])
    assert hits == 3 and sum(counts.values()) == hits      # leaf twice, f4 once
    root = "_start;__libc_start_main;__libc_start_call_main;main;f1;f2;f3;f4"
    assert counts == {root: 1, root + ";leaf": 1,
                      root + ";leaf;kill;__restore_rt;on_signal;leaf": 1}


@pytest.mark.parametrize("path", ["missing-dir/x.folded", "."])
def test_a_bad_folded_path_is_one_line_and_nothing_runs(build, tmp_path, path):
    target = tmp_path / path
    run = subprocess.run([sys.executable, "-m", "stepper.cli", "probe", "-p", "leaf",
                          "--folded", str(target), "--", build("unwind"), "chain"],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 2
    assert run.stdout == ""                                 # the program never ran
    assert len(run.stderr.splitlines()) == 1 and "cannot write" in run.stderr, run.stderr
    assert not (tmp_path / "missing-dir").exists()


#: Debian's own -O2 binaries (no frame pointers): (argv, libc function to stop in).
DEBIAN = {
    "python3.11": (["/usr/bin/python3.11", "-c", "print(1)"], "write"),
    "sort": (["/usr/bin/sort", "/etc/passwd"], "malloc"),
}


@pytest.mark.parametrize("name", DEBIAN)
def test_hit_stack_on_debian_binaries_matches_gdb(name, tmp_path):
    """hit.stack() at the first call of a libc function (its breakpoint put there from the
    program's entry point, once libc is mapped) against gdb's bt at the same stop."""
    argv, function = DEBIAN[name]
    if not Path(argv[0]).exists():
        pytest.skip(f"{argv[0]} is not installed")
    with no_randomization():
        proc = api.spawn(argv)
    with open(proc.exe, "rb") as stream:
        entry = ELFFile(stream).header["e_entry"] + proc.load_bias
    seen: dict = {}

    def at_function(hit):
        seen.setdefault("frames", hit.stack())

    def at_entry(hit):
        libc = [o for o in reader_of(hit.process).objects() if "libc.so" in o.path]
        seen["address"] = libc[0].address_of(function)
        proc.break_at(seen["address"], callback=at_function)

    proc.break_at(entry, callback=at_entry)
    assert proc.run().exit_code == 0
    frames = seen["frames"]
    assert frames[0].function == function and len(frames) >= 5
    assert_frames_match(frames, gdb_frames(argv, seen["address"], tmp_path, 1, (entry,)))


def test_only_events_that_pass_the_filter_have_stacks(build, tmp_path):
    folded = tmp_path / "leaf.folded"
    run, report = probe_specs(tmp_path, ["leaf x=%di if x == 4"], [build("unwind"), "signal"],
                              "--folded", str(folded))
    assert run.returncode == 0, run.stderr
    assert report["trace"][0]["count"] == 1                 # leaf(4), not the handler's
    assert folded.read_text() == \
        "_start;__libc_start_main;__libc_start_call_main;main;f1;f2;f3;f4;leaf 1\n"
