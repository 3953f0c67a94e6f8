"""A Unicorn machine for one probed instruction, shared by the XOL-plan and boost-slot
tests: the address layout (the instruction at ORIG, writable DATA and STACK pages, a near and a
far slot), assembling with keystone or GNU as, machines started from a register dict, and what
is compared after a run (registers, xmm, data and stack pages)."""

from __future__ import annotations

import functools
import os
import struct
import subprocess
import tempfile

import capstone
import keystone
import unicorn as uc
from unicorn import x86_const as UX

import emu

ORIG = 0x401234                    # where the probed instruction lives
CODE_PAGE = 0x400000
DATA = 0x600000                    # rip-relative targets live here (2 pages, writable)
DATA_SIZE = 0x2000
STACK = 0x7FF00000
STACK_SIZE = 0x2000
RSP = STACK + 0x1000
NEAR_SLOT = 0x10000040             # within 2 GiB of ORIG and DATA: disp32 re-encoded
FAR_SLOT = 0x7F1234560080          # 127 TiB away: scratch register or stub needed
SLOTS = {"near": NEAR_SLOT, "far": FAR_SLOT}
TF = 0x100

GPRS = ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp",
        "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15")
UC_REG = {name: getattr(UX, f"UC_X86_REG_{name.upper()}") for name in GPRS}
UC_REG.update(rip=UX.UC_X86_REG_RIP, rflags=UX.UC_X86_REG_RFLAGS,
              fs_base=UX.UC_X86_REG_FS_BASE, gs_base=UX.UC_X86_REG_GS_BASE)
XMM = [getattr(UX, f"UC_X86_REG_XMM{i}") for i in range(16)]

_ks = keystone.Ks(keystone.KS_ARCH_X86, keystone.KS_MODE_64)
_cs = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
_cs.detail = True


# ------------------------------------------------------------------------------ assembling --

@functools.lru_cache(maxsize=None)
def ks(text: str, address: int = ORIG) -> bytes:
    return bytes(_ks.asm(text, address)[0])


@functools.lru_cache(maxsize=None)
def gas(text: str) -> bytes:
    """First instruction of `text` assembled by GNU as (for forms keystone lacks)."""
    with tempfile.TemporaryDirectory() as tmp:
        src, obj, out = (os.path.join(tmp, n) for n in ("a.s", "a.o", "a.bin"))
        with open(src, "w") as f:
            f.write(".intel_syntax noprefix\n.text\n" + text + "\n")
        subprocess.run(["as", "--64", "-o", obj, src], check=True, capture_output=True)
        subprocess.run(["objcopy", "-O", "binary", "-j", ".text", obj, out], check=True)
        code = open(out, "rb").read()
    first = next(_cs.disasm(code, 0, 1))
    return code[:first.size]


def riprel(template: str, target: int, assemble=None) -> bytes:
    """Assemble `template` (with `{m}` for a `[rip ± d]` operand) so it addresses `target`,
    with keystone or the given assembler."""
    assemble = assemble or ks
    length = len(assemble(template.format(m="[rip + 0]")))
    disp = target - (ORIG + length)
    sign = "+" if disp >= 0 else "-"
    code = assemble(template.format(m=f"[rip {sign} {abs(disp):#x}]"))
    assert len(code) == length
    return code


def gas_riprel(template: str, target: int) -> bytes:
    """As `riprel`, with GNU as (for prefixes keystone cannot express)."""
    return riprel(template, target, gas)


def decode(code: bytes, address: int = ORIG) -> emu.Instruction:
    return emu.decode(code, address)


# ------------------------------------------------------------------------------- machines --

def initial_regs(seed_regs: dict | None = None) -> dict:
    regs = {name: 0x1111111111111111 * (i + 1) & (2**64 - 1) for i, name in enumerate(GPRS)}
    regs.update(rsp=RSP, rip=ORIG, rflags=0x202, fs_base=DATA + 0x800, gs_base=0)
    if seed_regs:
        regs.update(seed_regs)
    return regs


def new_machine(regs: dict, data: bytes, code_at: dict[int, bytes]) -> uc.Uc:
    mu = uc.Uc(uc.UC_ARCH_X86, uc.UC_MODE_64)
    mu.mem_map(DATA, DATA_SIZE)
    mu.mem_write(DATA, data)
    mu.mem_map(STACK, STACK_SIZE)
    mu.mem_write(STACK, bytes(range(256)) * (STACK_SIZE // 256))
    # Return addresses on top of the stack point into the code page.
    mu.mem_write(RSP, struct.pack("<QQQ", CODE_PAGE + 0x900, CODE_PAGE + 0x980, 0))
    # Code and slot pages are read+execute only, as in the real XOL area: the step never
    # writes them. Branch targets land in the code pages, which are filled with int3.
    mu.mem_map(CODE_PAGE, 0x2000, uc.UC_PROT_READ | uc.UC_PROT_EXEC)
    mu.mem_write(CODE_PAGE, b"\xcc" * 0x2000)
    for address, code in code_at.items():
        if not CODE_PAGE <= address < CODE_PAGE + 0x2000:
            mu.mem_map(address & ~0xFFF, 0x1000, uc.UC_PROT_READ | uc.UC_PROT_EXEC)
        mu.mem_write(address, code)
    for name, reg in UC_REG.items():
        mu.reg_write(reg, regs[name])
    for i, reg in enumerate(XMM):
        mu.reg_write(reg, (0x0123456789ABCDEF << 64 | 0xFEDCBA9876543210) ^ (i * 0x0101))
    return mu


def regs_of(mu: uc.Uc) -> dict:
    return {name: mu.reg_read(reg) for name, reg in UC_REG.items()}


def observable(mu: uc.Uc, regs: dict) -> dict:
    return {"regs": regs, "xmm": [mu.reg_read(r) for r in XMM],
            "data": bytes(mu.mem_read(DATA, DATA_SIZE)),
            "stack": bytes(mu.mem_read(STACK, STACK_SIZE))}


#: Unicorn's errors for an access the CPU would fault on (the instruction did not complete).
MEMORY_FAULTS = (uc.UC_ERR_READ_UNMAPPED, uc.UC_ERR_WRITE_UNMAPPED, uc.UC_ERR_FETCH_UNMAPPED,
                 uc.UC_ERR_WRITE_PROT)


def pattern(seed: int = 7) -> bytes:
    return bytes((i * 37 + seed) & 0xFF for i in range(DATA_SIZE))


def diff(a: dict, b: dict) -> str:
    return ", ".join(f"{k}: xol {a[k]:#x} != in place {b[k]:#x}" for k in a if a[k] != b[k])
