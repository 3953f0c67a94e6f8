"""stepper.cfi_expr: the DWARF expressions of call-frame rules, decoded by pyelftools from
their bytes (as the linker and glibc emit them) and evaluated against registers and memory."""

from __future__ import annotations

import pytest
from elftools.dwarf.dwarf_expr import DWARFExprParser
from elftools.dwarf.structs import DWARFStructs

from stepper.cfi_expr import UnwindError, evaluate

PARSER = DWARFExprParser(DWARFStructs(little_endian=True, dwarf_format=32, address_size=8))

#: GNU ld's CFA expression for .plt entries: rsp + 8 + ((rip & 15) >= 11) << 3.
PLT_CFA = [0x77, 0x08,        # DW_OP_breg7 (rsp) 8
           0x80, 0x00,        # DW_OP_breg16 (rip) 0
           0x3f, 0x1a,        # DW_OP_lit15; DW_OP_and
           0x3b, 0x2a,        # DW_OP_lit11; DW_OP_ge
           0x33, 0x24,        # DW_OP_lit3; DW_OP_shl
           0x22]              # DW_OP_plus


def run(raw, regs, memory=None, push=None):
    memory = memory or {}
    return evaluate(PARSER.parse_expr(raw), regs, lambda a, n: memory.get(a, b"")[:n], push)


@pytest.mark.parametrize("rip, cfa", [(0x1030, 0x7f08), (0x1036, 0x7f08), (0x103b, 0x7f10)])
def test_plt_cfa_before_and_after_the_push(rip, cfa):
    assert run(PLT_CFA, {"rsp": 0x7f00, "rip": rip}) == cfa


def test_signal_frame_cfa_reads_the_saved_rsp():
    # glibc's __restore_rt: CFA = *(rsp + 160), the rsp saved in the ucontext_t.
    memory = {0x7000 + 160: (0x7ffe1234).to_bytes(8, "little")}
    assert run([0x77, 0xa0, 0x01, 0x06], {"rsp": 0x7000}, memory) == 0x7ffe1234


def test_register_rules_start_with_the_cfa_pushed():
    # DW_OP_lit8; DW_OP_minus: CFA - 8.
    assert run([0x38, 0x1c], {}, push=0x1000) == 0xff8


def test_unsupported_operation_is_named():
    # DW_OP_call_frame_cfa (0x9c) is not allowed in CFI and not evaluated.
    with pytest.raises(UnwindError, match="DW_OP_call_frame_cfa"):
        run([0x9c], {"rsp": 0})


def test_unknown_register_is_named():
    with pytest.raises(UnwindError, match="needs rbx"):
        run([0x73, 0x00], {"rsp": 0})               # DW_OP_breg3 (rbx) 0


def test_unreadable_memory_is_named():
    with pytest.raises(UnwindError, match="0x10"):
        run([0x40, 0x06], {})                       # DW_OP_lit16; DW_OP_deref
