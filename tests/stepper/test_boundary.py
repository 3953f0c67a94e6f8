"""stepper.boundary: where instructions start inside a function, decoded once per function.

Two properties: the answer is emu.straddling's (decoding forward from the function's start),
for every target and in any order of asking; and N probes in one function decode the function
once plus O(1) per probe, counted through a spy on the decoder (no timing), for the file check
(probe specs) and for a live process (breakpoint insertion).
"""

from __future__ import annotations

import random
import sys

import pytest

import emu
from tests.support.programs import gcc
from stepper import boundary
from stepper.boundary import Boundaries
from stepper.errors import StepperError
from stepper.specs import OffsetError, parse_spec, resolve_static
from stepper.symbols import ElfSymbols

# push rbp; mov rbp, rsp; mov eax, 0x12345678; nop dword [rax+0]; lea rsi, [rip+0x10]; ret
CODE = bytes.fromhex("55" "4889e5" "b878563412" "0f1f4000" "488d3510000000" "c3")
START = 0x401000
BAD = bytes.fromhex("55" "4889e5" "06" "90")   # 0x06 (push es) is invalid in 64-bit mode

BIG = "volatile int v;\n__attribute__((noinline)) int big(int x) {\n%s    return v;\n}\n" \
      "int main(int argc, char **argv) { return big(argc) & 0; }\n" % "".join(
          f"    v = v * {i + 3} + x;\n" for i in range(60))


def reader(code: bytes, start: int):
    def read(address: int, size: int) -> bytes:
        return code[address - start:address - start + size]
    return read


def old_answer(code: bytes, start: int, target: int):
    try:
        insn = emu.straddling(code, start, target)
    except emu.DecodeError:
        return "error"
    return None if insn is None else (insn.address, insn.length)


def new_answer(bounds: Boundaries, code: bytes, start: int, target: int):
    try:
        insn = bounds.straddling(start, target, reader(code, start))
    except emu.DecodeError:
        return "error"
    return None if insn is None else (insn.address, insn.length)


@pytest.mark.parametrize("code", [CODE, BAD], ids=["valid", "undecodable"])
@pytest.mark.parametrize("seed", range(4))
def test_same_answer_as_decoding_from_the_start_in_any_order(code, seed):
    targets = list(range(START, START + len(code) + 1))
    random.Random(seed).shuffle(targets)
    bounds = Boundaries()
    for target in targets:
        assert new_answer(bounds, code, START, target) == old_answer(code, START, target), \
            hex(target)


@pytest.fixture
def decodes(monkeypatch):
    """How many instructions get decoded: a spy around stepper.boundary's decoder and around
    emu's (which emu.straddling and every breakpoint use), so going back to decoding from the
    function's start for each probe shows up whichever decoder it uses."""
    count = [0]
    real_lengths = boundary._instructions
    emu_decode = sys.modules["emu.decode"]
    real_decode = emu_decode.decode

    def counting_lengths(code, address):
        for item in real_lengths(code, address):
            count[0] += 1
            yield item

    def counting_decode(*args, **kwargs):
        count[0] += 1
        return real_decode(*args, **kwargs)
    monkeypatch.setattr(boundary, "_instructions", counting_lengths)
    monkeypatch.setattr(emu_decode, "decode", counting_decode)
    monkeypatch.setattr(emu, "decode", counting_decode)
    return count


def test_many_targets_decode_the_function_once(decodes):
    code = bytes.fromhex("4889e5") * 300     # 300 instructions of 3 bytes
    bounds = Boundaries()
    starts = [START + 3 * i for i in range(300)]
    for target in starts + [t + 1 for t in starts]:   # boundaries, then inside each one
        bounds.straddling(START, target, reader(code, START))
    # Decoding from the start for each target would be about 600 * 150 instructions.
    assert decodes[0] <= 300 + 600


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    d = tmp_path_factory.mktemp("boundary")
    (d / "big.c").write_text(BIG)
    exe = gcc(d / "big", d / "big.c")
    symbols = ElfSymbols.load(exe)
    (function,) = symbols.lookup("big")
    code = symbols.read(function.value, function.size)
    found = list(boundary._instructions(code, function.value))
    starts = [a for a, _size in found]
    inside = next(a + 1 for a, size in reversed(found) if size > 1)   # not a boundary
    return exe, function, starts, inside


def test_offset_specs_decode_each_function_once(big, decodes):
    exe, function, starts, inside = big
    for address in starts:
        resolve_static(parse_spec(f"big+{address - function.value:#x}"), exe)
    with pytest.raises(OffsetError, match="is inside the instruction at big\\+"):
        resolve_static(parse_spec(f"big+{inside - function.value:#x}"), exe)
    assert len(starts) > 100
    # once the function, a few per probe; from the start each time: len(starts)**2 / 2
    assert decodes[0] <= 5 * len(starts)


def test_breakpoint_insertion_decodes_each_function_once(big, spawn_captured, decodes):
    exe, _function, starts, inside = big
    proc, _out = spawn_captured([exe])
    for address in starts:
        proc.break_at(proc.load_bias + address)
    with pytest.raises(StepperError, match="is not an instruction boundary"):
        proc.break_at(proc.load_bias + inside)
    assert decodes[0] <= 5 * len(starts)
    proc.kill()
