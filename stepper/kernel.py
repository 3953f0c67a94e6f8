"""The kernel boundary: every ptrace request, wait flag, event and register index the engine
uses, and the few calls a breakpoint hit makes, bound once with ctypes. One home, so that no
other module defines a ptrace constant by hand.

Why not python-ptrace here: its object layers cost several microseconds per hit (see
docs/costs.md). This module binds libc's `ptrace` once *without* argtypes (ctypes then passes
small ints and ready-made pointers directly), keeps the registers in one preallocated
`user_regs_struct` buffer per thread, and reads errno only when a call failed. python-ptrace
still spawns the process (stepper.session); everything per hit goes through here.

Memory: `/proc/PID/mem` (pread/pwrite) writes read-only text, which is how INT3 bytes and XOL
slots are written; process_vm_readv/writev honour page protections, which is what the
emulator needs so that an access the CPU would fault on faults in emulation too.
"""

from __future__ import annotations

import ctypes
import os

from .errors import StepperError

_libc = ctypes.CDLL(None, use_errno=True)
_ptrace = _libc.ptrace
_ptrace.restype = ctypes.c_long
_process_vm_readv = _libc.process_vm_readv
_process_vm_readv.restype = ctypes.c_ssize_t
_process_vm_writev = _libc.process_vm_writev
_process_vm_writev.restype = ctypes.c_ssize_t
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long

#: Bumped by every request that lets a thread run (cont, singlestep, detach, PTRACE_SYSCALL)
#: and by every write into a tracee's memory: while it is unchanged, no traced program ran
#: and the tracer wrote nothing, so code bytes checked at that value are still the bytes
#: (stepper.instruction_step keeps its checked plans per epoch).
epoch = 0

# Requests (linux/ptrace.h).
PEEKUSER = 3
POKEUSER = 6
CONT = 7
SINGLESTEP = 9
GETREGS = 12
SETREGS = 13
GETFPREGS = 14
SETFPREGS = 15
ATTACH = 16
DETACH = 17
SYSCALL = 24
SETOPTIONS = 0x4200
GETEVENTMSG = 0x4201
GETSIGINFO = 0x4202
SETSIGINFO = 0x4203
GETSIGMASK = 0x420A
SETSIGMASK = 0x420B

# Options and events (PTRACE_O_*, PTRACE_EVENT_*).
O_TRACEFORK = 0x02
O_TRACEVFORK = 0x04
O_TRACECLONE = 0x08
O_TRACEEXEC = 0x10
O_EXITKILL = 0x100000
#: What the engine follows: threads, child processes, exec.
O_FOLLOW = O_TRACECLONE | O_TRACEEXEC | O_TRACEFORK | O_TRACEVFORK
EVENT_FORK = 1
EVENT_VFORK = 2
EVENT_CLONE = 3
EVENT_EXEC = 4
EVENT_VFORK_DONE = 5
EVENT_EXIT = 6

# siginfo si_code values of a SIGTRAP: an INT3 (SI_KERNEL), a single-step trap (TRAP_TRACE),
# a debug-register hit alone (TRAP_HWBKPT; with a single step in the same trap: TRAP_TRACE).
SI_KERNEL = 0x80
TRAP_TRACE = 2
TRAP_HWBKPT = 4
#: The trap flag in rflags.
TF = 0x100

# waitpid: also wait for threads (clone children).
WALL = 0x40000000

#: Field order of struct user_regs_struct (sys/user.h), 27 unsigned longs.
USER_REGS_FIELDS = (
    "r15", "r14", "r13", "r12", "rbp", "rbx", "r11", "r10", "r9", "r8", "rax", "rcx", "rdx",
    "rsi", "rdi", "orig_rax", "rip", "cs", "eflags", "rsp", "ss", "fs_base", "gs_base",
    "ds", "es", "fs", "gs",
)
RegsBuffer = ctypes.c_ulong * len(USER_REGS_FIELDS)

#: emu register name -> index into a RegsBuffer (emu calls the flags register "rflags").
REG_INDEX: dict[str, int] = {
    name: USER_REGS_FIELDS.index("eflags" if name == "rflags" else name)
    for name in ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp", "r8", "r9", "r10",
                 "r11", "r12", "r13", "r14", "r15", "rip", "rflags", "fs_base", "gs_base")
}
RIP = REG_INDEX["rip"]
RAX = REG_INDEX["rax"]
RSP = REG_INDEX["rsp"]
EFLAGS = REG_INDEX["rflags"]
ORIG_RAX = USER_REGS_FIELDS.index("orig_rax")


class PtraceFailed(StepperError):
    """A ptrace call failed; `errno` says why (ESRCH: the thread is gone)."""

    def __init__(self, what: str, tid: int, errno: int) -> None:
        super().__init__(f"{what} on thread {tid} failed: {os.strerror(errno)}")
        self.errno = errno


def _check(result: int, what: str, tid: int) -> int:
    if result == -1:
        errno = ctypes.get_errno()
        if errno:
            raise PtraceFailed(what, tid, errno)
    return result


#: libc's ptrace, for the hit path's few calls made inline (a wrapper's Python frame is about
#: 0.05 µs a call): `if ptrace(GETREGS, tid, 0, buf) == -1: failed("PTRACE_GETREGS", tid)`.
#: Arguments as everywhere here: small ints, and buffers passed as pointers.
ptrace = _ptrace


def failed(what: str, tid: int) -> None:
    """After a call of `ptrace` returned -1: raise PtraceFailed with its errno."""
    _check(-1, what, tid)


def new_regs() -> ctypes.Array:
    """A fresh, zeroed register buffer (one per thread, reused on every hit)."""
    return RegsBuffer()


def getregs(tid: int, buf) -> None:
    # A ctypes array passed without argtypes goes as a pointer to its buffer: no byref().
    if _ptrace(GETREGS, tid, 0, buf) == -1:
        _check(-1, "PTRACE_GETREGS", tid)


def setregs(tid: int, buf) -> None:
    if _ptrace(SETREGS, tid, 0, buf) == -1:
        _check(-1, "PTRACE_SETREGS", tid)


#: struct user_fpregs_struct: the 512-byte FXSAVE image; xmm0..xmm15 start at byte 160.
FpregsBuffer = ctypes.c_ubyte * 512
XMM_OFFSET = 160


def getfpregs(tid: int, buf) -> None:
    if _ptrace(GETFPREGS, tid, 0, buf) == -1:
        _check(-1, "PTRACE_GETFPREGS", tid)


def setfpregs(tid: int, buf) -> None:
    if _ptrace(SETFPREGS, tid, 0, buf) == -1:
        _check(-1, "PTRACE_SETFPREGS", tid)


def peekuser(tid: int, offset: int) -> int:
    """The word at `offset` in the stopped thread's `struct user` (e.g. a debug register),
    as an unsigned int. errno is cleared first: -1 is a valid word."""
    ctypes.set_errno(0)
    value = _ptrace(PEEKUSER, tid, ctypes.c_ulong(offset), 0)
    if value == -1:
        _check(-1, "PTRACE_PEEKUSER", tid)
    return value & _WORD


def pokeuser(tid: int, offset: int, value: int) -> None:
    """Write the word at `offset` in the stopped thread's `struct user` (the kernel
    validates debug registers and refuses a bad one with EINVAL)."""
    if _ptrace(POKEUSER, tid, ctypes.c_ulong(offset), ctypes.c_ulong(value & _WORD)) == -1:
        _check(-1, "PTRACE_POKEUSER", tid)


_WORD = (1 << 64) - 1


def cont(tid: int, sig: int = 0) -> None:
    global epoch
    epoch += 1
    if _ptrace(CONT, tid, 0, sig) == -1:
        _check(-1, "PTRACE_CONT", tid)


def singlestep(tid: int, sig: int = 0) -> None:
    global epoch
    epoch += 1
    if _ptrace(SINGLESTEP, tid, 0, sig) == -1:
        _check(-1, "PTRACE_SINGLESTEP", tid)


def detach(tid: int, sig: int = 0) -> None:
    global epoch
    epoch += 1
    if _ptrace(DETACH, tid, 0, sig) == -1:
        _check(-1, "PTRACE_DETACH", tid)


def setoptions(tid: int, options: int) -> None:
    if _ptrace(SETOPTIONS, tid, 0, options) == -1:
        _check(-1, "PTRACE_SETOPTIONS", tid)


def geteventmsg(tid: int) -> int:
    value = ctypes.c_ulong()
    if _ptrace(GETEVENTMSG, tid, 0, ctypes.byref(value)) == -1:
        _check(-1, "PTRACE_GETEVENTMSG", tid)
    return value.value


class Siginfo(ctypes.Structure):
    """The head of siginfo_t: what stepper needs to tell an INT3 from a genuine signal."""

    _fields_ = [("signo", ctypes.c_int), ("errno", ctypes.c_int), ("code", ctypes.c_int),
                ("_pad", ctypes.c_int), ("addr", ctypes.c_ulong), ("_rest", ctypes.c_byte * 104)]


def getsiginfo(tid: int, info: Siginfo | None = None) -> Siginfo:
    info = info if info is not None else Siginfo()
    if _ptrace(GETSIGINFO, tid, 0, ctypes.byref(info)) == -1:
        _check(-1, "PTRACE_GETSIGINFO", tid)
    return info


def siginfo_if_any(tid: int) -> Siginfo | None:
    """The stopped thread's siginfo, or None (a group-stop has none)."""
    try:
        return getsiginfo(tid)
    except PtraceFailed:
        return None


def setsiginfo(tid: int, info: Siginfo) -> None:
    if _ptrace(SETSIGINFO, tid, 0, ctypes.byref(info)) == -1:
        _check(-1, "PTRACE_SETSIGINFO", tid)


def getsigmask(tid: int) -> int:
    """The stopped thread's blocked-signal mask (bit n-1 = signal n)."""
    mask = ctypes.c_uint64()
    if _ptrace(GETSIGMASK, tid, 8, ctypes.byref(mask)) == -1:
        _check(-1, "PTRACE_GETSIGMASK", tid)
    return mask.value


def setsigmask(tid: int, mask: int) -> None:
    """Replace the stopped thread's blocked-signal mask (the kernel keeps SIGKILL and
    SIGSTOP unblocked whatever `mask` says)."""
    value = ctypes.c_uint64(mask)
    if _ptrace(SETSIGMASK, tid, 8, ctypes.byref(value)) == -1:
        _check(-1, "PTRACE_SETSIGMASK", tid)


def tgkill(tgid: int, tid: int, sig: int) -> None:
    """Send `sig` to one thread (SYS_tgkill = 234)."""
    if _syscall(234, tgid, tid, sig) == -1:
        _check(-1, "tgkill", tid)


class _Iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


class _BytesIovec(ctypes.Structure):
    """An iovec whose base is set from a bytes object: ctypes stores a pointer to the bytes'
    own buffer (and keeps the object alive), so a write copies nothing in Python."""

    _fields_ = [("base", ctypes.c_char_p), ("len", ctypes.c_size_t)]


class VmAccess:
    """process_vm_readv/writev for one process, with its iovecs made once.

    These calls go through the page tables with the target's own permissions (no FOLL_FORCE),
    so reading an unmapped or PROT_NONE page, or writing a read-only one, fails as the CPU
    would. A transfer that stops part-way returns the count done; the caller decides.

    The emulated hit's store goes through `write`, so its Python side is kept to field stores
    on prebuilt iovecs and one foreign call (each ctypes call, memmove included, costs about
    0.3-0.5 µs here; docs/costs.md): the data is pointed at, not copied, and a length is set
    only when it differs from the last transfer's.
    """

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._local = _Iovec()
        self._remote = _Iovec()
        self._local_p = ctypes.byref(self._local)
        self._remote_p = ctypes.byref(self._remote)
        self._bufs: dict[int, ctypes.Array] = {}  # one exact-size buffer per read size:
        # `raw` is then the result, with no slice
        self._buf = self._use(8)
        self._out = _BytesIovec()
        self._out_remote = _Iovec()
        self._out_p = ctypes.byref(self._out)
        self._out_remote_p = ctypes.byref(self._out_remote)
        self._out_size = -1  # the length both write iovecs hold now

    def _use(self, size: int) -> ctypes.Array:
        """Point the read iovecs at the `size`-byte buffer (made on first use)."""
        buf = self._bufs.get(size)
        if buf is None:
            buf = ctypes.create_string_buffer(size)
            if size <= 256:  # the emulator's sizes and fetched strings (at most 32 KiB
                # in all); a larger read is a one-off
                self._bufs[size] = buf
        self._local.base = ctypes.addressof(buf)
        self._local.len = self._remote.len = size
        self._buf = buf
        return buf

    def read(self, address: int, size: int, upto_nul: bool = False) -> bytes | None:
        """The `size` bytes at `address`, or None if any of them cannot be read. `upto_nul`:
        only those before the first NUL (all `size` if there is none: a string reader reads
        on), found by ctypes' `value` (C's strlen), not by slicing in Python."""
        buf = self._buf
        if size != len(buf):
            buf = self._use(size)
        self._remote.base = address
        if _process_vm_readv(self.pid, self._local_p, 1, self._remote_p, 1, 0) != size:
            return None
        return buf.value if upto_nul else buf.raw

    def read_upto(self, address: int, size: int) -> bytes:
        """The readable bytes of [address, address + size): the kernel stops at the first
        page it cannot read (the end of a stack mapping), and what came before is kept."""
        buf = self._use(size)
        self._remote.base = address
        done = _process_vm_readv(self.pid, self._local_p, 1, self._remote_p, 1, 0)
        return buf.raw[:done] if done > 0 else b""

    def write(self, address: int, data: bytes) -> int:
        """Write `data`; returns how many leading bytes were written (-1: none, error)."""
        global epoch
        epoch += 1
        out = self._out
        out.base = data
        size = len(data)
        if size != self._out_size:
            out.len = self._out_remote.len = self._out_size = size
        self._out_remote.base = address
        return _process_vm_writev(self.pid, self._out_p, 1, self._out_remote_p, 1, 0)


class ProcMem:
    """/proc/PID/mem opened once: reads and writes that ignore page protections.

    Used for what the tracer itself owns (INT3 bytes, XOL slots), never for emulated accesses.
    """

    def __init__(self, pid: int) -> None:
        self.fd = os.open(f"/proc/{pid}/mem", os.O_RDWR | os.O_CLOEXEC)

    def read(self, address: int, size: int) -> bytes:
        return os.pread(self.fd, size, address)

    def write(self, address: int, data: bytes) -> None:
        global epoch
        epoch += 1
        done = os.pwrite(self.fd, data, address)
        if done != len(data):
            raise StepperError(f"short write of {len(data)} byte(s) at {address:#x}")

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
