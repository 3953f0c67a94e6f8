"""Evaluating fetch arguments: over a memory image (types, dereferences, faults), and in a
library callback on a real tracee (`api.parse_fetch` once, `hit.fetch` per hit)."""

from __future__ import annotations

import re

import pytest

from stepper import api
from stepper.fetchargs import parse_fetch
from stepper import kernel
from stepper.fetching import STRING_MAX, Fetcher, HitContext, compile_fetch, compile_raw
from tests.support.elf import symbol

BASE = 0x10000


class Memory:
    """A readable window [BASE, BASE+len): reads past its end are short, before it fail,
    as /proc/PID/mem reads are."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def read(self, address: int, size: int) -> bytes:
        if not BASE <= address < BASE + len(self.data):
            raise OSError(5, "Input/output error")
        return self.data[address - BASE:address - BASE + size]


class Context(HitContext):
    """Strings from the memory image rather than a process."""

    def __init__(self, memory: Memory) -> None:
        super().__init__()
        self.memory = memory

    def string(self, address: int):
        try:
            data = self.memory.read(address, STRING_MAX)
        except OSError:
            return None
        return data.split(b"\0")[0].decode()


def value(text: str, regs: dict, memory: Memory, retval: int | None = None):
    ctx = Context(memory)
    ctx.retval = retval
    return Fetcher(parse_fetch(text, is_return=retval is not None)).value(regs, memory.read, ctx)


MEM = Memory((BASE + 16).to_bytes(8, "little") + (-2).to_bytes(8, "little", signed=True)
             + b"hello\0" + b"\xff" * 10 + b"tail")
REGS = {"rdi": BASE, "rsi": BASE + 16, "rsp": BASE, "rax": 0xFFFF_FFFF_FFFF_FFFE,
        "rdx": 3, "rcx": 4, "r8": 5, "r9": 6}


@pytest.mark.parametrize("text, expected", [
    ("%di", BASE), ("%ax:s64", -2), ("%ax:s32", -2), ("%ax:u32", 0xFFFF_FFFE), ("%dx:s8", 3), ("%ax:s8", -2), ("%ax:u8", 0xFE), ("%ax:x16", 0xFFFE),
    ("+0(%di)", BASE + 16), ("+8(%di):s32", -2), ("+0(+0(%di)):u8", ord("h")),
    ("+0(%si):string", "hello"), ("%si:string", "hello"), ("+16(%di):string", "hello"),
    ("+32(%di):string", "tail"),           # a short read at the end of the mapping
    ("-8(%si):s64", -2), ("$stack1:s64", -2), ("$stack", BASE), ("@0x10008:s64", -2),
    ("$arg1", BASE), ("$arg6", 6), ("$arg7:s64", -2),   # $arg7: [rsp + 8]
    ("+0(%dx)", None), ("%dx:string", None), ("+0(+8(%di))", None),   # faults
    ("+35(%di):u8", ord("l")), ("+35(%di):u64", None),     # exactly the bytes of the type
])
def test_values(text, expected):
    assert value(text, REGS, MEM) == expected
    # the hot path's closures agree with the general evaluation
    assert compile_fetch(parse_fetch(text))(REGS, MEM.read, Context(MEM)) == expected


def _buffer(regs: dict) -> kernel.RegsBuffer:
    buf = kernel.RegsBuffer()
    for name, v in regs.items():
        buf[kernel.REG_INDEX[name]] = v
    return buf


@pytest.mark.parametrize("text", [
    "%di", "%ax:s64", "%ax:s32", "%ax:u32", "%dx:s8", "%ax:s8", "%ax:u8", "%ax:x16", "%rsp",
    "$arg1", "$arg6:u8", "+0(%si):string", "%si:string", "+16(%di):string", "+32(%di):string",
    "%dx:string", "+1(%si):string",
])
def test_raw_fetchers_read_the_register_buffer_as_compile_fetch_reads_the_dict(text):
    """The observer path (no Hit: the thread's own register buffer) gives the same values."""
    arg = parse_fetch(text)
    raw = compile_raw(arg)
    assert raw is not None
    assert raw(_buffer(REGS), Context(MEM)) == compile_fetch(arg)(REGS, MEM.read, Context(MEM))


@pytest.mark.parametrize("text", ["+0(%di)", "+8(%di):s32", "$stack1", "$stack", "@0x10008",
                                  "$arg7", "%ip:symbol", "+0(+0(%di)):string"])
def test_shapes_that_read_memory_as_numbers_need_a_hit(text):
    assert compile_raw(parse_fetch(text)) is None


def test_retval_and_long_strings():
    assert value("$retval:s64", REGS, MEM, retval=(1 << 64) - 1) == -1
    long = Memory(b"a" * 1000)
    assert value("+0(%di):string", {"rdi": BASE}, long) == "a" * STRING_MAX


def test_library_parse_once_fetch_per_hit(build):
    exe = build("tracework")
    s_arg, a_arg = api.parse_fetch("s=+0(%si):string"), api.parse_fetch("%di:s64")
    proc = api.spawn([exe, "7"])
    seen = []
    proc.break_at(proc.load_bias + symbol(exe, "work")[0],
                  callback=lambda hit: seen.append((hit.fetch(a_arg), hit.fetch(s_arg))))
    status = proc.run()
    assert status.exit_code == 7
    # the program's own account of the calls: a = 3i - 5, s = words[i % 5]
    words = ["alpha", "beta gamma", 'quote"d', "", "x"]
    assert seen == [(3 * i - 5, words[i % 5]) for i in range(7)]


def test_library_parse_error_names_the_character():
    with pytest.raises(Exception, match=re.escape("unknown type 'u3'")):
        api.parse_fetch("%di:u3")
