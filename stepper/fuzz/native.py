"""The native oracle: run one instruction of a case on the real CPU and report what it did.

Why a real CPU as well as Unicorn: Unicorn is another emulator (QEMU's translator) and shares
blind spots with any emulator; the CPU is the ground truth stepper must be transparent against.

How: a tiny sandbox tracee (stepper/data/fuzz_sandbox.S: no libc, no stack use, linked at
0x6ff000000000, far from the cases' pages) maps pages on request. When a case's page layout
differs from the last one, the oracle makes one process_vm_writev (command block + page
contents) and one PTRACE_CONT: the sandbox unmaps the previous pages, maps, fills and protects
the new ones, and stops at INT3. When the layout is the same (a template's variants), only the
pages whose bytes differ are rewritten through /proc/PID/mem, with no round trip. Then
PTRACE_SETREGS (and SETFPREGS for an instruction naming an xmm register), one
PTRACE_SINGLESTEP, GETREGS, and one process_vm_readv of every page. A case whose pages would
overlap the sandbox's own is reported as a collision (MAP_FIXED_NOREPLACE refuses it), one
whose fs/gs base the kernel refuses to load as unloadable; neither is run.

The sandbox installs a seccomp filter before the first case (see fuzz_sandbox.S): a system call
made by a case's instruction (`syscall`, `int 0x80`, `sysenter`) kills it with SIGSYS before the
call acts, whatever the generator or a corpus produced. Such a case is reported as a SIGSYS
fault and a fresh sandbox takes the next one.

Two facts of single-stepping under ptrace, not of the instruction, are undone here, and
nothing else is adjusted: TF is never set in a case's initial rflags (the kernel sets it to
step), and PUSHF stores the image with TF set while stepping, so that one bit is cleared
in the pushed image when the case's own TF was clear.
"""

from __future__ import annotations

import ctypes
import os
import signal
import struct
from dataclasses import dataclass

from capstone import x86_const as X

from emu.testing.unicorn_oracle import Outcome

from .. import kernel as P
from .. import toolchain
from ..errors import StepperError

PAGE = 0x1000
TF = P.TF  # the trap flag (stepper.kernel)
SANDBOX_SOURCE = "fuzz_sandbox.S"
SANDBOX_FLAGS = ("-nostdlib", "-static", "-no-pie", "-Wl,-Ttext-segment=0x6ff000000000",
                 "-Wl,--build-id=none")
STAGING_OFFSET = 4096
STAGING_SIZE = 0x100000
MAX_OPS = (STAGING_OFFSET - 8) // 32

#: Outcome.error of a case the oracle did not run: pages overlapping the sandbox's own, or
#: registers the kernel refuses to load.
from .judge import SKIPPED

COLLISION, UNLOADABLE = SKIPPED


OP_MUNMAP, OP_MMAP, OP_COPY, OP_MPROTECT = 1, 2, 3, 4
PROT_READ, PROT_WRITE, PROT_EXEC = 1, 2, 4

TRACEME = 0
# The libc binding and the FXSAVE layout are the hot path's (stepper.kernel), bound once.
GETFPREGS, SETFPREGS, XMM_OFFSET = P.GETFPREGS, P.SETFPREGS, P.XMM_OFFSET
_ptrace, _readv, _writev = P._ptrace, P._process_vm_readv, P._process_vm_writev


class NativeError(StepperError):
    """The sandbox could not be started or stopped answering."""


class _Iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


@dataclass
class _Region:
    start: int
    size: int


def sandbox_path() -> str:
    """Build (once, cached by toolchain) and return the sandbox executable."""
    return str(toolchain.build(SANDBOX_SOURCE, SANDBOX_FLAGS))


class NativeOracle:
    """One sandbox process, reused for every case; `close()` kills it."""

    def __init__(self) -> None:
        self.pid = 0
        self.fp = ctypes.create_string_buffer(512)
        self.regs = P.new_regs()
        self.info = P.Siginfo()
        self._start()

    def _start(self) -> None:
        """Start a sandbox: it installs its seccomp filter, then stops at its first INT3."""
        path = sandbox_path()
        pid = os.fork()
        if pid == 0:  # child: become traced and exec the sandbox, nothing else
            try:
                _ptrace(TRACEME, 0, 0, 0)
                os.execv(path, [path])
            finally:
                os._exit(127)
        self.pid = pid
        self._expect_stop(signal.SIGTRAP, "exec")
        P.setoptions(pid, P.O_EXITKILL)
        P.cont(pid)
        self._expect_stop(signal.SIGTRAP, "start (installing its seccomp filter)")
        self.home = P.new_regs()
        P.getregs(pid, self.home)
        self.cmd = self.home[P.USER_REGS_FIELDS.index("rbx")]
        self.fp_home = ctypes.create_string_buffer(512)
        self._fp(GETFPREGS, self.fp_home)
        self.mapped: list[_Region] = []
        self.layout: tuple = ()  # (start, size, prot) of each mapped region
        self.loaded: dict[int, bytes] = {}  # what each mapped region holds now
        self.mem = P.ProcMem(pid)  # writes read-only pages too (FOLL_FORCE)

    # ------------------------------------------------------------------ plumbing

    def _wait(self) -> int:
        _, status = os.waitpid(self.pid, 0)
        if not os.WIFSTOPPED(status):
            raise NativeError(f"the fuzz sandbox (pid {self.pid}) ended unexpectedly "
                              f"(status {status:#x})")
        return os.WSTOPSIG(status)

    def _expect_stop(self, sig: int, when: str) -> None:
        got = self._wait()
        if got != sig:
            raise NativeError(f"the fuzz sandbox stopped with signal {got} at {when}, "
                              f"expected {sig}")

    def _fp(self, request: int, buf) -> None:
        if _ptrace(request, self.pid, 0, buf) == -1:
            raise NativeError(f"PTRACE_{'GET' if request == GETFPREGS else 'SET'}FPREGS failed: "
                              f"{os.strerror(ctypes.get_errno())}")

    def _vm(self, call, local: list[tuple[int, int]], remote: list[tuple[int, int]]) -> int:
        lv = (_Iovec * len(local))(*[_Iovec(a, n) for a, n in local])
        rv = (_Iovec * len(remote))(*[_Iovec(a, n) for a, n in remote])
        return call(self.pid, lv, len(local), rv, len(remote), 0)

    def close(self) -> None:
        """Kill the sandbox and reap it."""
        if self.pid:
            try:
                os.kill(self.pid, signal.SIGKILL)
                os.waitpid(self.pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
            self.pid = 0
            self.mem.close()

    def __enter__(self) -> "NativeOracle":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ one case

    def _load(self, regions: list[tuple[int, bytes, bool]], rip: int) -> bool:
        """Make the sandbox's pages hold the case's; False on a collision.

        Same layout as the last case (a template's variants): only the regions whose bytes
        differ are rewritten, through /proc/PID/mem, with no round trip to the sandbox.
        Otherwise the sandbox remaps (see `_map`)."""
        layout = tuple((start, len(data), _prot(start, data, writable, rip))
                       for start, data, writable in regions)
        if layout != self.layout:
            self.layout, self.loaded = (), {}
            if not self._map(regions, rip):
                return False
            self.layout = layout
            self.loaded = {start: data for start, data, _ in regions}
            return True
        loaded = self.loaded
        for start, data, _ in regions:
            if loaded.get(start) != data:
                self.mem.write(start, data)
                loaded[start] = data
        return True

    def _map(self, regions: list[tuple[int, bytes, bool]], rip: int) -> bool:
        """Unmap the previous case's pages and map this one's; False on a collision."""
        ops: list[tuple[int, int, int, int]] = [(OP_MUNMAP, r.start, r.size, 0) for r in self.mapped]
        self.mapped = []
        staging, offset = [], 0
        for start, data, writable in regions:
            ops.append((OP_MMAP, start, len(data), 0))
            ops.append((OP_COPY, start, len(data), offset))
            prot = _prot(start, data, writable, rip)
            if prot != PROT_READ | PROT_WRITE:
                ops.append((OP_MPROTECT, start, len(data), prot))
            staging.append(data)
            offset += len(data)
        if len(ops) > MAX_OPS or offset > STAGING_SIZE:
            raise NativeError(f"case too large for the sandbox ({len(ops)} ops, {offset} bytes)")
        header = struct.pack(f"<Q{4 * len(ops)}Q", len(ops), *(v for op in ops for v in op))
        blob = b"".join(staging)
        hbuf, sbuf = ctypes.create_string_buffer(header), ctypes.create_string_buffer(blob)
        done = self._vm(_writev, [(ctypes.addressof(hbuf), len(header)), (ctypes.addressof(sbuf), len(blob))],
                        [(self.cmd, len(header)), (self.cmd + STAGING_OFFSET, len(blob))])
        if done != len(header) + len(blob):
            raise NativeError("could not write the command block into the fuzz sandbox")
        P.setregs(self.pid, self.home)
        P.cont(self.pid)
        sig = self._wait()
        if sig == signal.SIGTRAP:
            self.mapped = [_Region(start, len(data)) for start, data, _ in regions]
            return True
        if sig != signal.SIGILL:
            raise NativeError(f"the fuzz sandbox stopped with signal {sig} while mapping")
        P.getregs(self.pid, self.regs)
        failed = (self.regs[P.USER_REGS_FIELDS.index("r13")] - self.cmd - 8) // 32
        # Only what was mapped before the failing op is ours to unmap next time.
        self.mapped = [_Region(op[1], op[2]) for op in ops[:failed] if op[0] == OP_MMAP]
        return False

    def run(self, state) -> Outcome:
        """Run the instruction at state.regs['rip'] of `state` (a FlatState, not modified).

        Returns an Outcome like the Unicorn oracle's: registers (with xmm0..15) and every
        region's bytes, or fault="signal" (error names the signal, fault_address is si_addr),
        or error in SKIPPED when the case cannot be run (pages overlapping the sandbox's own,
        registers the kernel refuses)."""
        regions = state.regions()
        rip = state.regs["rip"]
        for start, data, _ in regions:
            if start % PAGE or len(data) % PAGE:
                raise ValueError(f"region {start:#x}+{len(data):#x} is not whole pages")
        if not self._load(regions, rip):
            return Outcome(error=COLLISION)
        regs = self.regs
        ctypes.memmove(regs, self.home, ctypes.sizeof(regs))
        values = state.regs
        for name, index in P.REG_INDEX.items():
            regs[index] = values[name]
        regs[P.REG_INDEX["rflags"]] &= ~TF
        vector = _uses_xmm(state, rip)
        if vector:
            ctypes.memmove(self.fp, self.fp_home, 512)
            xmm = b"".join((values.get(f"xmm{n}", 0)).to_bytes(16, "little") for n in range(16))
            ctypes.memmove(ctypes.addressof(self.fp) + XMM_OFFSET, xmm, 256)
            self._fp(SETFPREGS, self.fp)
        try:
            P.setregs(self.pid, regs)
        except P.PtraceFailed:
            # fs_base/gs_base at or above the user address limit: no user process can have
            # that state (arch_prctl refuses it too), so the case is not run.
            return Outcome(error=UNLOADABLE)
        P.singlestep(self.pid)
        _, status = os.waitpid(self.pid, 0)
        if os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGSYS:
            # A system call from the case's code: the seccomp filter killed the sandbox before
            # the call acted. Reported as the signal the CPU run ended with; a fresh sandbox
            # takes the next case.
            self.pid = 0
            self.mem.close()
            self._start()
            return Outcome(fault="signal", error=signal.SIGSYS.name)
        if not os.WIFSTOPPED(status):
            raise NativeError(f"the fuzz sandbox (pid {self.pid}) ended unexpectedly "
                              f"(status {status:#x})")
        sig = os.WSTOPSIG(status)
        fault = None
        if sig != signal.SIGTRAP:
            P.getsiginfo(self.pid, self.info)
            fault = (sig, self.info.addr)
        P.getregs(self.pid, regs)
        size = sum(len(d) for _, d, _ in regions)
        buf = ctypes.create_string_buffer(size)
        base = ctypes.addressof(buf)
        local, remote, offset = [], [], 0
        for start, data, _ in regions:
            local.append((base + offset, len(data)))
            remote.append((start, len(data)))
            offset += len(data)
        if self._vm(_readv, local, remote) != size:
            raise NativeError("could not read the case's pages back from the fuzz sandbox")
        if fault is not None:
            raw, offset = buf.raw, 0
            for start, contents, _ in regions:
                self.loaded[start] = raw[offset:offset + len(contents)]
                offset += len(contents)
            return Outcome(fault="signal", fault_address=fault[1],
                           error=signal.Signals(fault[0]).name)
        after = {name: regs[index] for name, index in P.REG_INDEX.items()}
        if after["rflags"] & (UNLOADABLE_FLAGS | TF) or _is_popf(state):
            # SETREGS cannot clear NT/ID, and a stepped POPF leaves the kernel's record of who
            # set TF behind: the sandbox's own POPF (reached by remapping) resets both.
            self.layout = ()
        if vector:
            self._fp(GETFPREGS, self.fp)
            raw = self.fp.raw[XMM_OFFSET:XMM_OFFSET + 256]
            for n in range(16):
                after[f"xmm{n}"] = int.from_bytes(raw[16 * n:16 * n + 16], "little")
        else:  # an instruction that names no xmm register cannot change one
            after.update((f"xmm{n}", values.get(f"xmm{n}", 0)) for n in range(16))
        memory, offset, data = {}, 0, buf.raw
        for start, contents, _ in regions:
            memory[start] = self.loaded[start] = data[offset:offset + len(contents)]
            offset += len(contents)
        _undo_pushf_trap_flag(state, after, memory)
        return Outcome(regs=after, memory=memory)


#: rflags bits PTRACE_SETREGS silently drops (the kernel's FLAG_MASK lacks them).
UNLOADABLE_FLAGS = 0x4000 | 0x200000  # NT, ID


def loadable(case):
    """`case` with NT and ID cleared from its initial rflags: ptrace cannot load them, so the
    native oracle's cases are drawn without them (the emulator runs the same, cleared case)."""
    from dataclasses import replace
    regs = tuple((n, v & ~UNLOADABLE_FLAGS if n == "rflags" else v) for n, v in case.regs)
    return case if regs == case.regs else replace(case, regs=regs)


def _undo_pushf_trap_flag(state, after: dict, memory: dict) -> None:
    """PUSHF under single-step stores TF=1: clear it if the case's TF was clear (see module doc)."""
    code = _code_at(state)
    if code is None or state.regs["rflags"] & TF:
        return
    from .judge import instruction
    try:
        insn = instruction(code, state.regs["rip"]).capstone
    except Exception:  # noqa: BLE001 - not an instruction: nothing to undo
        return
    if insn.id not in (X.X86_INS_PUSHFQ, X.X86_INS_PUSHF):
        return
    slot = after["rsp"]
    for start, data in memory.items():
        if start <= slot < start + len(data):
            offset = slot - start + 1  # TF is bit 8: the second byte of the image
            memory[start] = data[:offset] + bytes([data[offset] & ~(TF >> 8) & 0xFF]) + data[offset + 1:]


def _is_popf(state) -> bool:
    from .judge import instruction
    try:
        return instruction(_code_at(state) or b"", state.regs["rip"]).capstone.id in (
            X.X86_INS_POPFQ, X.X86_INS_POPF)
    except Exception:  # noqa: BLE001 - undecodable: not a popf
        return False


def _prot(start: int, data: bytes, writable: bool, rip: int) -> int:
    """Page protection of a region: the one holding the instruction is executable."""
    prot = PROT_READ | (PROT_WRITE if writable else 0)
    return prot | PROT_EXEC if start <= rip < start + len(data) else prot


def _uses_xmm(state, rip: int) -> bool:
    from .judge import instruction, uses_xmm
    code = _code_at(state)
    try:
        return uses_xmm(instruction(code, rip))
    except Exception:  # noqa: BLE001 - undecodable: load them all, to be safe
        return True


def _code_at(state) -> bytes | None:
    rip = state.regs["rip"]
    for start, data, _ in state.regions():
        if start <= rip < start + len(data):
            return data[rip - start:rip - start + 15]
    return None
