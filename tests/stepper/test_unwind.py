"""stepper.unwind on real tracees stopped at a breakpoint: the frames found from the CFI of
the program, libc and the vDSO, compared with gdb's `bt` at the same stop where gdb is
installed (physical frames: gdb's inline frames aside; gdb stops at main).

Both the stepper run and the gdb run get address-space randomization turned off
(personality ADDR_NO_RANDOMIZE, what gdb does by default), so the same code is at the same
addresses in both and the pcs are compared as numbers."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

from tests.support.elf import instructions, symbol
from tests.support.gdb import gdb_frames, no_randomization, plain
from tests.support.programs import TRACEES, gcc
from stepper import api, unwind, unwind_objects


@pytest.fixture(scope="module")
def programs(tmp_path_factory):
    """The unwind tracee at -O2 without frame pointers (CFI only), with frame pointers but no
    unwind tables in the program itself (libc keeps its CFI), and with its CFI in
    .debug_frame only (-g without unwind tables)."""
    if shutil.which("gcc") is None:
        pytest.skip("gcc is needed to build the tracees")
    out = tmp_path_factory.mktemp("unwind")
    source = TRACEES / "unwind.c"
    return {
        "cfi": gcc(out / "cfi", "-O2", "-fomit-frame-pointer", "-pthread", source),
        "fp": gcc(out / "fp", "-O2", "-pthread", "-fno-omit-frame-pointer",
                  "-fno-asynchronous-unwind-tables", "-fno-unwind-tables", source),
        "debug_frame": gcc(out / "debug_frame", "-O2", "-pthread", "-fomit-frame-pointer", "-g",
                           "-fno-asynchronous-unwind-tables", "-fno-unwind-tables", source),
    }


def inside_leaf(exe: str) -> int:
    """Link-time address in `leaf` past its prologue (a push, or push rbp; mov rbp, rsp),
    so that the CFA is no longer rsp + 8."""
    insns = instructions(exe, "leaf")
    for i, insn in enumerate(insns):
        if insn.mnemonic == "push" or insn.text == "mov rbp, rsp":
            last = i
            if insn.text == "mov rbp, rsp":
                break
    return insns[last + 1].address


def stop_and_unwind(argv: list[str], where, nth: int = 1,
                    libc: str | None = None) -> tuple[list[unwind.Frame], dict]:
    """Run argv, stop at hit number `nth` of `where(proc)` (a run-time address), unwind there.
    With `libc`: stop first at the program's entry point (libc is mapped by then) and put
    the breakpoint on that libc function; `seen["entry"]` and `seen["address"]` say where."""
    seen: dict = {"hits": 0}
    with no_randomization():
        proc = api.spawn(argv)

    def at_hit(hit):
        seen["hits"] += 1
        if seen["hits"] != nth:
            return
        objects = unwind_objects.process_objects(proc.pid, hit.read)
        seen["frames"] = unwind.frames(hit.regs, hit.read, objects)
        seen["caller"] = unwind.caller(hit.regs, hit.read, objects)
        start = time.perf_counter()
        rounds = 20
        for _ in range(rounds):
            unwind.frames(hit.regs, hit.read, objects, limit=6)
        seen["warm_us"] = (time.perf_counter() - start) / rounds * 1e6
        seen["regs"] = dict(hit.regs)
        words = {a: hit.read(a, 8) for a in range(hit.regs["rsp"], hit.regs["rsp"] + 64, 8)}
        seen["word"] = lambda a: int.from_bytes(words[a], "little")

    def at_entry(hit):
        objects = unwind_objects.process_objects(proc.pid, hit.read)
        found = [o.address_of(libc) for o in objects if "libc.so" in o.path]
        assert found and found[0] is not None, f"no {libc} in libc"
        seen["address"] = found[0]
        proc.break_at(found[0], callback=at_hit)

    if libc is None:
        seen["address"] = where(proc)
        proc.break_at(seen["address"], callback=at_hit)
    else:
        with open(proc.exe, "rb") as stream:
            seen["entry"] = ELFFile(stream).header["e_entry"] + proc.load_bias
        proc.break_at(seen["entry"], callback=at_entry)
    status = proc.run()
    assert status.exit_code == 0
    assert "frames" in seen, "the breakpoint was never hit"
    return seen["frames"], seen


def names(frames: list[unwind.Frame]) -> list[str]:
    return [f.function or "??" for f in frames]


def assert_same_as_gdb(frames: list[unwind.Frame], argv: list[str], address: int,
                       tmp: Path, nth: int = 1, before: tuple[int, ...] = ()) -> None:
    """The (pc, function) of every physical frame equal to gdb's at hit `nth` of `address`."""
    expected = gdb_frames(argv, address, tmp, nth, before)
    # gdb stops at main, or at the outermost frame (_start, a thread's clone3) when no
    # symbol names main or the stack is a thread's.
    assert expected[-1][1] in ("main", "_start", "clone3", "clone", "??"), expected
    if expected[-1][1] != "main":
        assert len(frames) == len(expected) and frames[-1].error is None
    mine = [(f.pc, f.function or "??") for f in frames[:len(expected)]]
    assert [(pc, plain(name)) for pc, name in mine] == [(pc, plain(n)) for pc, n in expected]


def leaf_address(exe):
    return lambda proc: proc.load_bias + inside_leaf(exe)


@pytest.mark.parametrize("build", ["cfi", "fp", "debug_frame"])
def test_call_chain_matches_gdb(programs, build, tmp_path):
    exe = programs[build]
    frames, seen = stop_and_unwind([exe, "chain"], leaf_address(exe))
    assert names(frames)[:6] == ["leaf", "f4", "f3", "f2", "f1", "main"]
    assert frames[-1].error is None, frames[-1].error
    # The program's own frames are unwound by CFI, or by rbp where it has none.
    assert {f.how for f in frames[:5]} == {"fp" if build == "fp" else "cfi"}
    assert_same_as_gdb(frames, [exe, "chain"], frames[0].pc, tmp_path)
    print(f"one unwind of 6 frames, warm caches: {seen['warm_us']:.0f} us")


def test_caller_is_the_return_into_f4(programs):
    exe = programs["cfi"]
    frames, seen = stop_and_unwind([exe, "chain"], leaf_address(exe))
    back, regs = seen["caller"], seen["regs"]
    # The stop is right after leaf's one push: [rsp] is the saved register, [rsp+8] the
    # return address, and the return leaves rsp 16 bytes higher.
    assert back["rsp"] == regs["rsp"] + 16 == frames[0].cfa
    assert back["rip"] == frames[1].pc == seen["word"](regs["rsp"] + 8)
    assert frames[1].function == "f4"


def test_through_libc_qsort_matches_gdb(programs, tmp_path):
    exe = programs["cfi"]
    frames, _ = stop_and_unwind([exe, "qsort"], leaf_address(exe))
    got = names(frames)
    assert got[:2] == ["leaf", "compare"]
    assert "sort_them" in got and "main" in got
    between = frames[2:got.index("sort_them")]
    assert between and all(f.object and "libc" in f.object for f in between)
    assert_same_as_gdb(frames, [exe, "qsort"], frames[0].pc, tmp_path)


def test_through_a_signal_frame_matches_gdb(programs, tmp_path):
    exe = programs["cfi"]
    # leaf runs twice: called by f4 (before it sends the signal), then by the handler.
    frames, _ = stop_and_unwind([exe, "signal"], leaf_address(exe), nth=2)
    got = names(frames)
    assert got[:2] == ["leaf", "on_signal"]
    assert frames[2].signal and not any(f.signal for f in frames[:2] + frames[3:])
    # Past the trampoline: the interrupted kill() in libc, then the leaf that called it.
    assert got[4:10] == ["leaf", "f4", "f3", "f2", "f1", "main"]
    assert_same_as_gdb(frames, [exe, "signal"], frames[0].pc, tmp_path, nth=2)


def test_return_address_past_the_end_of_its_function_matches_gdb(programs, tmp_path):
    # ends_in_call's last instruction calls a noreturn function: the return address is the
    # first byte after ends_in_call (padding or the next function), so it is looked up at
    # pc - 1 for both its CFI row and its name.
    exe = programs["cfi"]
    frames, _ = stop_and_unwind([exe, "noreturn"], leaf_address(exe))
    assert names(frames)[:4] == ["leaf", "die", "ends_in_call", "main"]
    value, size = symbol(exe, "ends_in_call")
    assert frames[2].pc - frames[2].offset + size == frames[2].pc  # right at its end
    assert all(f.how == "cfi" for f in frames)
    assert_same_as_gdb(frames, [exe, "noreturn"], frames[0].pc, tmp_path)


def test_in_a_thread_matches_gdb(programs, tmp_path):
    exe = programs["cfi"]
    frames, seen = stop_and_unwind([exe, "thread"], leaf_address(exe))
    got = names(frames)
    assert got[:6] == ["leaf", "f4", "f3", "f2", "f1", "worker"]
    assert "main" not in got and frames[-1].error is None
    assert_same_as_gdb(frames, [exe, "thread"], frames[0].pc, tmp_path)


def vdso_function(proc) -> int:
    objects = unwind_objects.process_objects(proc.pid, proc.read)
    vdso = next((o for o in objects if o.path == "[vdso]"), None)
    if vdso is None:
        pytest.skip("this kernel maps no vDSO")
    address = vdso.address_of("__vdso_clock_gettime")
    if address is None:
        pytest.skip("the vDSO has no __vdso_clock_gettime")
    return address


def test_from_inside_the_vdso_matches_gdb(programs, tmp_path):
    exe = programs["cfi"]
    frames, _ = stop_and_unwind([exe, "vdso"], vdso_function)
    assert frames[0].object == "[vdso]"
    assert frames[0].function == "clock_gettime" and frames[0].how == "cfi"
    assert "main" in names(frames)
    assert_same_as_gdb(frames, [exe, "vdso"], frames[0].pc, tmp_path)


def test_symbol_of_a_program_address(programs):
    exe = programs["cfi"]
    value, _size = symbol(exe, "f2")
    frames, _ = stop_and_unwind([exe, "chain"], leaf_address(exe))
    f2 = frames[3]
    assert f2.function == "f2" and f2.pc - f2.offset == value + (frames[0].pc - frames[0].offset
                                                                  - symbol(exe, "leaf")[0])


def plt_entry(exe: str, function: str) -> int:
    """Link-time address of `function@plt` (lazy binding: .plt entry i+1 for relocation i)."""
    with open(exe, "rb") as stream:
        elf = ELFFile(stream)
        plt = elf.get_section_by_name(".plt")
        relocations = elf.get_section_by_name(".rela.plt")
        symbols = elf.get_section(relocations["sh_link"])
        for i, reloc in enumerate(relocations.iter_relocations()):
            if symbols.get_symbol(reloc["r_info_sym"]).name == function:
                return plt["sh_addr"] + 16 * (i + 1)
    raise KeyError(function)


def test_from_a_plt_entry_matches_gdb(programs, tmp_path):
    # The .plt's CFA is an expression: rsp + 8, and 8 more once the entry has pushed its
    # relocation index (rip & 15 >= 11). Stop on the jump after that push.
    exe = programs["cfi"]
    entry = plt_entry(exe, "qsort")
    frames, seen = stop_and_unwind([exe, "qsort"], lambda proc: proc.load_bias + entry + 11)
    assert frames[0].how == "cfi" and frames[0].cfa == seen["regs"]["rsp"] + 16
    assert names(frames)[1:3] == ["sort_them", "main"]
    # Named after its relocation's symbol, as gdb does.
    assert (frames[0].function, frames[0].offset) == ("qsort@plt", 11)
    assert_same_as_gdb(frames, [exe, "qsort"], frames[0].pc, tmp_path)


#: Debian's own -O2 binaries, built without frame pointers: (argv, libc function to stop in).
DEBIAN = {
    "python3.11": (["/usr/bin/python3.11", "-c", "print(1)"], "write"),
    "sort": (["/usr/bin/sort", "/etc/passwd"], "write"),
    "ls": (["/usr/bin/ls", "/"], "malloc"),
}


@pytest.mark.parametrize("name", DEBIAN)
def test_debian_binaries_match_gdb(name, tmp_path):
    argv, function = DEBIAN[name]
    if not Path(argv[0]).exists():
        pytest.skip(f"{argv[0]} is not installed")
    frames, seen = stop_and_unwind(argv, None, libc=function)
    assert frames[0].function == function and len(frames) >= 5
    assert all(f.how == "cfi" for f in frames)
    assert_same_as_gdb(frames, argv, seen["address"], tmp_path, before=(seen["entry"],))
    print(f"{name}: {len(frames)} frames")
