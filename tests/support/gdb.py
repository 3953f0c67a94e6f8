"""gdb as the oracle of stack tests: the (pc, function) of the physical frames its `bt`
shows at a breakpoint, in a run with address-space randomization off (what gdb does by
default; the stepper run turns it off too, so the pcs compare as numbers). A test that
needs gdb skips with the reason where it is not installed."""

from __future__ import annotations

import ctypes
import re
import shutil
import subprocess
from contextlib import contextmanager
from pathlib import Path

import pytest

ADDR_NO_RANDOMIZE = 0x0040000

GDB_FRAMES = r"""
import gdb
f, exact = gdb.newest_frame(), True
while f is not None:
    if f.type() != gdb.INLINE_FRAME:
        sigtramp = f.type() == gdb.SIGTRAMP_FRAME
        at = f.pc() if exact or sigtramp else f.pc() - 1
        text = gdb.execute("info symbol %#x" % at, to_string=True)
        name = text.split(" in section")[0].split(" + ")[0] if " in section" in text else "??"
        print("FRAME %#x %s" % (f.pc(), name))
        exact = sigtramp
    f = f.older()
"""


@contextmanager
def no_randomization():
    libc = ctypes.CDLL(None, use_errno=True)
    old = libc.personality(0xFFFFFFFF)
    libc.personality(old | ADDR_NO_RANDOMIZE)
    try:
        yield
    finally:
        libc.personality(old)


def gdb_frames(argv: list[str], address: int, tmp: Path, nth: int,
               before: tuple[int, ...] = ()) -> list[tuple[int, str]]:
    """(pc, function) of the physical frames gdb's backtrace shows at hit `nth` of
    `address`, after stopping once at each address of `before` (to reach code that is not
    mapped at the first instruction); skips the test when gdb is not installed."""
    if shutil.which("gdb") is None:
        pytest.skip("gdb is not installed: nothing to compare the frames with")
    script = tmp / "gdb_frames.py"
    script.write_text(GDB_FRAMES)
    with no_randomization():
        run = subprocess.run(
            ["gdb", "-nx", "-batch", "-ex", "set debuginfod enabled off",
             "-ex", "set pagination off", "-ex", "handle SIGUSR1 nostop noprint pass",
             "-ex", "starti",
             *[arg for stop in before for arg in ("-ex", f"tbreak *{stop:#x}", "-ex", "continue")],
             "-ex", f"break *{address:#x}",
             "-ex", f"ignore {len(before) + 1} {nth - 1}", "-ex", "continue",
             "-ex", f"source {script}",
             "-ex", "kill", "--args", *argv],
            capture_output=True, text=True, timeout=120)
    frames = []
    for line in run.stdout.splitlines():
        if line.startswith("FRAME "):
            _, pc, name = line.split(" ", 2)
            frames.append((int(pc, 16), name))
    assert frames, f"gdb printed no frames:\n{run.stdout}\n{run.stderr}"
    return frames


def plain(name: str) -> str:
    """gdb prints GCC's clone names without their number (msort_with_tmp.part.0 is shown as
    msort_with_tmp.part): compare without it."""
    return re.sub(r"\.\d+$", "", name)



def assert_frames_match(frames, expected: list[tuple[int, str]]) -> None:
    """`frames` (anything with .pc, .function, .error, innermost first) equal to gdb's
    (pc, function) frame by frame. gdb stops at main, or at the outermost frame (_start, a
    thread's clone3) when no symbol names main or the stack is a thread's: then the frames
    must end there too."""
    assert expected[-1][1] in ("main", "_start", "clone3", "clone", "??"), expected
    if expected[-1][1] != "main":
        assert len(frames) == len(expected) and frames[-1].error is None
    mine = [(f.pc, plain(f.function or "??")) for f in frames[:len(expected)]]
    assert mine == [(pc, plain(name)) for pc, name in expected]
