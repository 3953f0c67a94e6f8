"""A hit's registers made lazily (stepper.hit_regs): every way of reading them gives what the
filled dict of the registers at the hit gives, later changes of the thread's buffer do not
show, and writes are noted. No process needed: a register buffer with distinct values."""

from __future__ import annotations

import copy
import dataclasses
import json
import pickle

import pytest

from stepper import kernel
from stepper.hit_regs import Regs
from stepper.records import Hit


def _buffer():
    return kernel.RegsBuffer(*(0x1000 + 0x11 * i for i in range(len(kernel.USER_REGS_FIELDS))))


def _expected(buf) -> dict:
    return {name: buf[i] for name, i in kernel.REG_INDEX.items()}


def test_every_reading_gives_the_registers_at_the_hit_in_register_order():
    buf = _buffer()
    want = _expected(buf)
    assert Regs.at(buf)["rdi"] == want["rdi"] and Regs.at(buf)["rflags"] == want["rflags"]
    assert dict(Regs.at(buf)) == want
    assert list(Regs.at(buf)) == list(want)
    assert list(Regs.at(buf).items()) == list(want.items())
    assert list(Regs.at(buf).keys()) == list(want)
    assert list(Regs.at(buf).values()) == list(want.values())
    assert len(Regs.at(buf)) == len(want)
    assert "rsi" in Regs.at(buf) and "xmm0" not in Regs.at(buf)
    assert Regs.at(buf).get("rsp") == want["rsp"] and Regs.at(buf).get("nope", 7) == 7
    assert {**Regs.at(buf)} == want and (lambda **kw: kw)(**Regs.at(buf)) == want
    assert json.dumps(Regs.at(buf)) == json.dumps(want)
    assert repr(Regs.at(buf)) == repr(want)
    assert Regs.at(buf) == want and want == Regs.at(buf) and Regs.at(buf) == Regs.at(buf)
    assert not Regs.at(buf) != want
    assert Regs.at(buf).copy() == want and copy.copy(Regs.at(buf)) == want
    assert pickle.loads(pickle.dumps(Regs.at(buf))) == want
    assert Regs.at(buf) | {"x": 1} == {**want, "x": 1}
    assert "{rdi:x}".format_map(Regs.at(buf)) == f"{want['rdi']:x}"
    assert isinstance(Regs.at(buf), dict)
    with pytest.raises(KeyError):
        Regs.at(buf)["xmm0"]


def test_values_stay_those_of_the_hit_when_the_buffer_is_reused():
    buf = _buffer()
    want = _expected(buf)
    regs = Regs.at(buf)
    read_before = regs["rdi"]
    for i in range(len(buf)):
        buf[i] = 0xdead
    assert read_before == want["rdi"] and regs["rax"] == want["rax"] and regs == want


def test_writes_are_noted_masked_and_refused_for_unknown_names():
    buf = _buffer()
    want = _expected(buf)
    regs = Regs.at(buf)
    assert regs.written is False
    regs["rax"] = -1
    assert regs.written is True and regs["rax"] == (1 << 64) - 1
    assert regs["rdi"] == want["rdi"] and list(regs) == list(want)
    assert buf[kernel.REG_INDEX["rax"]] == want["rax"]   # the thread's buffer: write_back's
    assert regs.buffer[kernel.REG_INDEX["rax"]] == (1 << 64) - 1   # the copy write_back puts
    regs.update(rsp=8)
    assert regs["rsp"] == 8
    filled = Regs.at(buf)
    assert len(filled) == len(want)
    filled["rdi"] = 3
    assert dict(filled)["rdi"] == 3 and filled.buffer[kernel.REG_INDEX["rdi"]] == 3
    del filled["rax"]   # removing an entry: a plain dict from then on
    assert "rax" not in filled and filled.buffer is None and filled["rdi"] == 3
    with pytest.raises(KeyError, match="'xmm0' is not a register of a hit"):
        Regs.at(buf)["xmm0"] = 1
    assert pickle.loads(pickle.dumps(regs)).written is True
    plain = Regs(want)
    assert plain.written is False and plain == want
    plain["rip"] = 5
    assert plain.written and plain["rip"] == 5


def test_the_hit_paths_constructor_makes_the_same_hit():
    buf = _buffer()
    regs = Regs.at(buf)
    fast = Hit.at(7, 0x401000, regs, len, process=None)
    slow = Hit(7, 0x401000, regs, len, process=None)
    assert fast == slow
    assert ({f.name: getattr(fast, f.name) for f in dataclasses.fields(Hit)}
            == {f.name: getattr(slow, f.name) for f in dataclasses.fields(Hit)})
    assert fast.data == {} and fast.data is not Hit.at(7, 0, regs, len, None).data
    with pytest.raises(dataclasses.FrozenInstanceError):
        fast.tid = 8   # type: ignore[misc]
