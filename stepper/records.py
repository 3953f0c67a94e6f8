"""The engine's plain records, near the bottom of the layers: what a breakpoint is and what
happened at it, how a program ended, what a callback receives, a traced thread, and the
thread's step in progress. They hold state; the modules above them (strategies, stepping,
the tracer) decide what to do with it. Nothing here issues a ptrace request.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

import emu

from . import kernel, located
from .errors import StepperError
from .hit_regs import Regs  # noqa: F401 - Hit.regs; importers of records.Regs
from .live import LiveState

if TYPE_CHECKING:  # pragma: no cover
    from .strategies.base import Ops


@dataclass(eq=False)
class Stats:
    """What happened at one breakpoint: hits, steps by strategy, fall-backs by reason."""

    hits: int = 0
    emulate: int = 0
    xol: int = 0
    reinsert: int = 0
    fallbacks: dict[str, int] = field(default_factory=dict)
    #: steps abandoned because a signal arrived first (the thread was put back at the
    #: breakpoint and hit it again after the handler: `hits` counts that hit once)
    abandoned: int = 0
    boost: int = 0  # boosted out-of-line steps (stepper.strategies.boost)
    #: on_return (stepper.returns): returns reported, pending returns expired (their frame
    #: was abandoned: longjmp, an exception), entries whose return could not be armed
    returns: int = 0
    expired: int = 0
    unarmed: int = 0

    @property
    def steps(self) -> dict[str, int]:
        return {"emulate": self.emulate, "xol": self.xol, "reinsert": self.reinsert,
                "boost": self.boost}

    def as_dict(self) -> dict:
        return {"hits": self.hits, "steps": self.steps, "fallbacks": dict(self.fallbacks),
                "abandoned": self.abandoned}


@dataclass(eq=False)
class Breakpoint:
    """One INT3 at `address`, with its instruction decoded and its ops chosen."""

    address: int
    insn: emu.Instruction
    mode: str
    ops: "Ops"
    callback: Callable | None = None
    symbol: located.Symbol | None = None
    stats: Stats = field(default_factory=Stats)
    inserted: bool = False
    #: on_return(ret) at each return of the function this breakpoint enters (stepper.returns)
    on_return: Callable | None = None
    #: the engine's own work at a hit, before the callback: hook(p, bp, t, hit) (returns)
    hook: Callable | None = None
    internal: bool = False  # a return breakpoint of the engine's, not the user's
    #: the user's breakpoint this location belongs to (stepper.user_breakpoints), if any
    owner: Any = None
    #: a USDT semaphore this breakpoint holds one count of (stepper.usdt), or None
    semaphore: int | None = None
    #: observer(tid, regs_buffer): a read-only callback for the engine's own tracers
    #: (stepper.probing.trace), called before `callback` with the thread's register buffer
    #: itself (valid only during the call, never written) and no Hit made: the cheapest way
    #: to look at a hit
    observer: Callable | None = None

    @property
    def original(self) -> bytes:
        return self.insn.bytes[:1]

    @property
    def strategy(self) -> str:
        return self.ops.name

    @property
    def text(self) -> str:
        """The instruction, as the tables show it."""
        return self.insn.text

    def describe(self) -> str:
        where = ""
        if self.symbol is not None:
            where = f" <{self.symbol.name}+{self.address - self.symbol.address:#x}>"
        return f"{self.address:#x}{where}: {self.insn.text}"


class PendingBreakpoint(Breakpoint):
    """A Breakpoint whose bytes were decided before (stepper.policy.known): `insn` and `ops`
    are built at their first use (a hit, a fork, a table asking for what it cannot know
    without them) by `build(code, address, mode)`, from the bytes read at insertion, so they
    are what insertion would have built. Inserting thousands of probes then costs no
    decoding that was done already from the file."""

    def __init__(self, address: int, mode: str, callback: Callable | None,
                 symbol: "located.Symbol | None", code: bytes, pending: tuple,
                 build: Callable[[bytes, int, str], tuple]) -> None:
        super().__init__(address, None, mode, None, callback, symbol)  # type: ignore[arg-type]
        del self.insn, self.ops          # absent until built: __getattr__ builds them
        self.code = code
        self.pending: tuple | None = pending   # stepper.policy's Known, None once built
        self._build = build

    def __getattr__(self, name: str):
        if name in ("insn", "ops"):
            self.insn, self.ops = self._build(self.code, self.address, self.mode)
            self.pending = None
            return self.__dict__[name]
        raise AttributeError(name)

    @property
    def original(self) -> bytes:
        return self.code[:1]

    @property
    def strategy(self) -> str:
        return self.pending[1] if self.pending is not None else self.ops.name

    @property
    def text(self) -> str:
        if self.pending is not None and self.pending[3] is not None:
            return self.pending[3]
        return self.insn.text


@dataclass(frozen=True)
class ExitStatus:
    """How the program ended: `exit_code` (normal exit) or `signal` (killed), the other None."""

    exit_code: int | None
    signal: int | None
    detached: bool = False  # run() let the program go on untraced (both fields are None)

    @classmethod
    def from_wait(cls, status: int) -> "ExitStatus":
        if os.WIFSIGNALED(status):
            return cls(None, os.WTERMSIG(status))
        return cls(os.WEXITSTATUS(status), None)


_new = object.__new__


@dataclass(frozen=True)
class Hit:
    """What a breakpoint callback receives: the thread, its registers at the breakpoint
    (rip = the breakpoint address) and `read`. `regs` is writable: what the callback
    changes is written to the thread before the displaced instruction runs; a changed
    `rip` skips that instruction (the thread resumes at the new rip)."""

    tid: int
    address: int
    regs: dict[str, int]
    read: Callable[[int, int], bytes]
    #: what a callback keeps for this call's return: `ret.entry.data` in on_return (as
    #: Frida's onEnter/onLeave share `this`)
    data: dict = field(default_factory=dict, compare=False, repr=False)
    #: the traced process (the engine's), for what needs more than registers and memory
    process: Any = field(default=None, compare=False, repr=False)

    @classmethod
    def at(cls, tid: int, address: int, regs: dict[str, int],
           read: Callable[[int, int], bytes], process: Any) -> "Hit":
        """Hit(tid, address, regs, read, process=process), made for the hit path: a frozen
        dataclass's __init__ sets each field through object.__setattr__ (about 0.9 µs for
        these six); filling the new instance's __dict__ at once costs under half of that.
        The same fields, the same values (tests/stepper/test_hit_regs.py compares them)."""
        hit = _new(cls)
        hit.__dict__.update(tid=tid, address=address, regs=regs, read=read, data={},
                            process=process)
        return hit

    def stack(self, limit: int = 64) -> list:
        """The user stack of the thread at this hit, innermost first: stepper.stacks
        StackFrame records (pc, function, offset, object, file, line; str() gives
        `sym+0xoff (file:line)`), unwound with the call-frame information of the loaded
        objects (docs/unwind.md)."""
        if self.process is None:
            raise StepperError("this hit has no process to unwind (made outside the engine)")
        from .stacks import reader_of   # the unwinder sits above these records
        return reader_of(self.process).stack(self.regs, limit)

    def skip_call(self, return_value: int = 0) -> None:
        """At a function's entry: return to the caller at once with rax = `return_value`
        (rip = [rsp], rsp += 8); the function's body never runs."""
        regs = self.regs
        rsp = regs["rsp"]
        regs["rip"] = int.from_bytes(self.read(rsp, 8), "little")
        regs["rsp"] = rsp + 8
        regs["rax"] = return_value

    def fetch(self, parsed: Any) -> object:
        """The value of a fetch argument parsed once with `api.parse_fetch` (stepper.fetchargs):
        an int, a str, or None where memory could not be read."""
        return parsed.fetch(self)


@dataclass(slots=True, eq=False)
class Step:
    """A thread's single-step in progress: the ops that started it (they complete or abort
    it), its breakpoint, the ops' own token (e.g. the XOL plan and slot), and the program's
    signals held until the instruction has run (delivered right after it)."""

    ops: "Ops"
    bp: Breakpoint
    token: Any = None
    held: list = field(default_factory=list)


class Thread:
    """A traced thread: its register buffer (reused on every hit), the emu State over it,
    and its step in progress, if any (`stepping`).

    Besides the step, a few facts outlive one step and stay here: `tf` (the program's own
    trap flag when the current hit began), `rehit`/`abandons` (steps abandoned for a signal,
    recognised when the thread comes back to them), `quiet_mask` (the program's signal mask
    while a quiet step runs, stepper.stepping), `boost_held` (signals held while a boost slot's
    first instruction is stepped) and the stop bookkeeping (`running`, `fresh`, `stop_sent`).
    """

    __slots__ = ("tid", "regs", "live", "stepping", "running", "fresh", "session", "tf",
                 "rehit", "stop_sent", "abandons", "quiet_mask", "boost_held")

    def __init__(self, tid: int, vm: kernel.VmAccess, session: Any) -> None:
        self.tid = tid
        self.regs = kernel.new_regs()
        self.live = LiveState(tid, self.regs, vm)
        self.stepping: Step | None = None
        self.running = False
        self.fresh = False  # created, its initial SIGSTOP not seen yet
        self.session = session  # the traced process this thread belongs to
        self.tf = 0  # the program's own trap flag when the current hit began
        self.rehit: list[tuple[int, int]] | None = None  # (address, rsp): abandoned steps
        self.stop_sent = False  # a SIGSTOP of ours is on its way to this thread
        self.abandons = 0  # steps abandoned for a signal since the last completed one
        self.quiet_mask: int | None = None  # the program's signal mask during a quiet step
        self.boost_held: list | None = None  # siginfos held for a boost slot's step
