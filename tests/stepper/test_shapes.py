"""Probed programs behave byte-identically to unprobed ones, for every probe-site instruction
shape of the `probes` tracee (PROBE_FUNCTIONS, ASM_SITES), in auto, emulate (where the
instruction is emulated) and xol, driven both through `stepper probe` and through the
library."""

from __future__ import annotations

import pytest

from tests.support.elf import symbol
from tests.support.programs import ASM_SITES, PROBE_FUNCTIONS
from tests.support.programs import every_probe_instruction as _every_instruction
from tests.support.runs import run_cli, run_plain


def _decode_from(exe: str, label: str, count: int) -> list:
    """`count` instructions decoded from an assembly label (labels carry no symbol size)."""
    import emu
    from elftools.elf.elffile import ELFFile

    address = symbol(exe, label)[0]
    with open(exe, "rb") as f:
        text = ELFFile(f).get_section_by_name(".text")
        code = text.data()[address - text["sh_addr"]:][:15 * count]
    result = []
    for _ in range(count):
        insn = emu.decode(code, address)
        result.append(insn)
        code, address = code[insn.length:], insn.next_address
    return result


def test_probe_functions_cover_the_listed_shapes(build):
    """The C tracee really contains the shapes the other tests claim to probe."""
    texts = [i.text for i in _every_instruction(build("probes"))]
    assert texts.count("push rbp") == len(PROBE_FUNCTIONS)  # prologues
    for width in ("byte", "word", "dword", "qword"):
        assert any(f"{width} ptr [rip" in t and t.startswith("mov") and t.index("[") < t.index(",")
                   for t in texts), f"no RIP-relative {width} store"
        assert any(f"{width} ptr [rip" in t and t.index(",") < t.index("[") for t in texts), \
            f"no RIP-relative {width} load"
    assert any(t.startswith("call qword ptr [rip") for t in texts)  # -fno-plt calls
    assert any("fs:[0x28]" in t for t in texts)  # stack protector
    assert any(t.startswith(("jmp r", "notrack jmp r")) for t in texts)  # jump table


@pytest.mark.parametrize("mode", ["auto", "emulate", "xol"])
def test_every_instruction_of_c_functions_via_cli(build, tmp_path, mode):
    exe = build("probes")
    insns = _every_instruction(exe)
    if mode == "emulate":
        insns = [i for i in insns if i.emulatable]
    plain = run_plain([exe, "60"])
    probed = run_cli([exe, "60"], [i.address for i in insns], mode, tmp_path)
    assert probed.stderr == b""
    assert (probed.stdout, probed.returncode) == (plain.stdout, plain.returncode)
    report = probed.report
    assert report["exit_code"] == plain.returncode and report["signal"] is None
    hits = {p["spec"]: p["hits"] for p in report["probes"]}
    assert hits[hex(symbol(exe, "probe_loads")[0])] == 60
    assert sum(hits.values()) == sum(report["steps"][k] for k in ("emulate", "xol", "reinsert"))
    assert all(p["object"] == "probes" and p["symbol"] in PROBE_FUNCTIONS
               for p in report["probes"])
    if mode in ("emulate", "xol"):
        assert report["steps"][mode] == sum(hits.values())


@pytest.mark.parametrize("mode", ["auto", "xol"])
def test_hand_written_sites_via_cli(build, tmp_path, mode):
    exe = build("asmmain")
    plain = run_plain([exe])
    probed = run_cli([exe], [symbol(exe, s)[0] for s in ASM_SITES], mode, tmp_path)
    assert probed.stderr == b""
    assert (probed.stdout, probed.returncode) == (plain.stdout, plain.returncode)
    assert b"acc=" in plain.stdout
    strategies = {p["instruction"].split()[0]: p["strategy"] for p in probed.report["probes"]}
    assert strategies["syscall"] == "xol"  # never boosted: the kernel writes RCX
    # SSE moves are emulated on the thread's FXSAVE image; AVX goes out of line (boosted)
    assert strategies["movdqu"] == ("emulate" if mode == "auto" else "xol")
    assert strategies["vmovdqu"] == ("boost" if mode == "auto" else "xol")
    assert all(p["hits"] == 20 for p in probed.report["probes"])


def test_sse_moves_are_emulated_on_the_live_thread(build, tmp_path):
    """movdqu/movdqa loads and stores (RIP-relative) run in the emulator against the thread's
    xmm registers (PTRACE_GETFPREGS/SETFPREGS): the program's vector sums stay right."""
    exe = build("asmmain")
    plain = run_plain([exe])
    sites = [i for i in _decode_from(exe, "sse_load_site", 6) if i.mnemonic in ("movdqu", "movdqa")]
    assert len(sites) == 4
    probed = run_cli([exe], [i.address for i in sites], "emulate", tmp_path)
    assert probed.stderr == b""
    assert (probed.stdout, probed.returncode) == (plain.stdout, plain.returncode)
    assert probed.report["steps"]["emulate"] == 4 * 20
    assert {p["strategy"] for p in probed.report["probes"]} == {"emulate"}


def test_emulated_hand_written_sites_via_library(build, spawn_captured):
    """`ret 8` and the pushes around it, emulated, through the library API with a callback."""
    exe = build("asmmain")
    plain = run_plain([exe])
    proc, out = spawn_captured([exe], "emulate")
    seen = []
    for name in ("call_ret_imm", "ret_imm_site"):
        proc.break_at(proc.load_bias + symbol(exe, name)[0],
                      callback=lambda hit: seen.append((hit.address, hit.regs["rsp"])))
    status = proc.run()
    assert (status.exit_code, status.signal) == (plain.returncode, None)
    assert out.read_bytes() == plain.stdout
    assert len(seen) == 40
    stats = proc.stats()
    assert all(s.hits == 20 and s.emulate == 20 and not s.fallbacks for s in stats.values())


@pytest.mark.parametrize("mode", ["auto", "xol", "reinsert", "boost"])
def test_library_hits_and_callback_registers(build, spawn_captured, mode):
    exe = build("probes")
    plain = run_plain([exe, "25"])
    proc, out = spawn_captured([exe, "25"], mode)
    args = []
    switch = proc.load_bias + symbol(exe, "probe_switch")[0]
    bp = proc.break_at(switch, callback=lambda hit: args.append(hit.regs["rdi"] & 0xFFFFFFFF))
    code = proc.read(switch, 1)
    status = proc.run()
    assert out.read_bytes() == plain.stdout and status.exit_code == plain.returncode
    assert args == [i % 10 for i in range(25)]
    assert code != b"\xcc"  # read() shows the program's byte, not the breakpoint's
    assert bp.stats.hits == 25 and bp.stats.steps[bp.strategy] == 25
