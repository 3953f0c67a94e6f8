"""Breakpoints: validated, decoded and given their step ops once, at insertion.

Insertion refuses, with a one-line StepperError and nothing written, an address that is not
in an executable mapping, one that is not an instruction boundary where that can be known (the
containing function symbol is decoded forward from its start), and an instruction no strategy
can step (see policy.choose). INT3 bytes go through /proc/PID/mem, which writes read-only
text without changing its protection.

Many breakpoints at once (`add_many`, a glob over libc: thousands) give the answers one-by-one
insertion would, for a fraction of its cost: /proc/PID/maps is read once for the batch and
each mapped file's symbols looked up once, a site whose bytes were decided before (the
preflight decoded them from the file) is decoded at its first use instead of now
(records.PendingBreakpoint), and the INT3 bytes go out in one write per run of adjacent
addresses. The batch's writes are all or nothing: a page that refuses a write (a
shared mapping /proc/PID/mem cannot write) leaves nothing of the batch written, and the sites
are then inserted one by one, each with its own answer.
"""

from __future__ import annotations

from typing import Callable, Iterable, Sequence

import emu

from . import located, maps, policy
from .boundary import Boundaries
from .errors import StepperError
from .kernel import ProcMem
from .records import Breakpoint, PendingBreakpoint
from .strategies.boost import BoostOps

INT3 = b"\xcc"


class Breakpoints:
    """The breakpoints of one process, keyed by address."""

    def __init__(self, pid: int, mem: ProcMem) -> None:
        self.pid = pid
        self.mem = mem
        self.by_address: dict[int, Breakpoint] = {}
        self.boundaries = Boundaries()   # instruction starts of the functions probed so far

    def __iter__(self):
        return iter(self.by_address.values())

    def __len__(self) -> int:
        return len(self.by_address)

    def read_original(self, address: int, size: int) -> bytes:
        """Memory as the program wrote it: our INT3 bytes replaced by what they cover."""
        data = bytearray(self.mem.read(address, size))
        # Small reads (instructions) look up their few addresses: scanning every breakpoint
        # made inserting thousands of probes (one glob over libc) quadratic.
        candidates = ((self.by_address.get(a) for a in range(address, address + len(data)))
                      if len(data) < len(self.by_address) else self.by_address.values())
        for bp in candidates:
            if bp is not None and bp.inserted and address <= bp.address < address + len(data):
                data[bp.address - address] = bp.original[0]
        return bytes(data)

    def prepare(self, address: int, mode: str, callback: Callable | None = None,
                mappings: list[maps.Mapping] | None = None,
                elves: dict | None = None, pending: bool = False) -> Breakpoint:
        """Validate `address`, decode its instruction and choose its ops; writes nothing.
        `mappings` and `elves` (a batch's: read once, see `prepare_many`) default to now's.
        `pending`: when these bytes were decided before (stepper.policy.known), and their ops
        need nothing done at insertion (a boost slot does), the Breakpoint is decoded at its
        first use (records.PendingBreakpoint), as it would be now."""
        if address in self.by_address:
            raise StepperError(f"a breakpoint is already set at {address:#x}")
        if mappings is None:
            mappings = maps.read(self.pid)
        mapping = maps.find(mappings, address)
        if mapping is None or not mapping.executable:
            where = f"in {mapping.path or 'an anonymous mapping'} ({mapping.perms})" \
                if mapping else "in no mapping"
            raise StepperError(f"{address:#x} is not in an executable mapping of process "
                               f"{self.pid}: it is {where}")
        code = self.read_original(address, min(15, mapping.end - address))
        known = policy.known(mode, code) if pending else None
        if known is not None and issubclass(known[0], BoostOps):
            known = None
        if known is None:
            try:
                insn = emu.decode(code, address)
            except emu.DecodeError as e:
                raise StepperError(f"{address:#x}: {e}") from None
        symbol = located.containing_symbol(mappings, address, elves)
        if symbol is not None:
            self._check_boundary(symbol, address, mapping.end)
        if known is not None:
            return PendingBreakpoint(address, mode, callback, symbol, code, known, _decide)
        ops = policy.choose(mode, insn)
        policy.remember(mode, code, insn, ops)
        return Breakpoint(address, insn, mode, ops, callback, symbol)

    def _check_boundary(self, symbol: located.Symbol, address: int, limit: int) -> None:
        """`address` must be where an instruction of `symbol` starts (stepper.boundary decodes
        each function once, from its start, however many probes it gets)."""
        def read(at: int, size: int) -> bytes:
            return self.read_original(at, max(0, min(size, limit - at)))
        try:
            insn = self.boundaries.straddling(symbol.address, address, read,
                                              key=(symbol.object, symbol.address))
        except emu.DecodeError:
            return  # data inside the function: the boundary cannot be known
        if insn is not None:
            raise StepperError(
                f"{address:#x} is not an instruction boundary: it is inside `{insn.text}` at "
                f"{insn.address:#x} ({symbol.name}+{insn.address - symbol.address:#x})")

    def prepare_many(self, requests: Iterable[tuple[int, str, Callable | None]]
                     ) -> list[Breakpoint | StepperError]:
        """`prepare` for each (address, mode, callback), with the answer one-by-one insertion
        would give each (a Breakpoint, or the StepperError that refuses it); writes nothing.
        The maps are read once, each mapped file's symbols found once."""
        mappings = maps.read(self.pid)
        elves: dict = {}
        taken: set[int] = set()
        results: list[Breakpoint | StepperError] = []
        for address, mode, callback in requests:
            try:
                if address in taken:
                    raise StepperError(f"a breakpoint is already set at {address:#x}")
                bp = self.prepare(address, mode, callback, mappings, elves, pending=True)
            except StepperError as e:
                results.append(e)
                continue
            taken.add(address)
            results.append(bp)
        return results

    def add_many(self, requests: Iterable[tuple[int, str, Callable | None]],
                 before_insert: Callable[[Breakpoint], None] | None = None
                 ) -> list[Breakpoint | StepperError]:
        """Prepare and insert a batch; one answer per request, as one-by-one insertion
        (`prepare`, `before_insert`, `insert` for each) would give. `before_insert` (the boost
        slot's writer) runs for every accepted breakpoint with its ops built (not a pending one,
        whose ops are never boosted) before any INT3 of the batch is written."""
        results = self.prepare_many(requests)
        ready = [r for r in results if isinstance(r, Breakpoint)]
        if before_insert is not None:
            for bp in ready:
                if not isinstance(bp, PendingBreakpoint):   # no boost slot to write: later
                    before_insert(bp)
        try:
            self.insert_many(ready)
        except StepperError:
            # Nothing of the batch was written: one by one, so each site gets its own answer.
            results = [self._insert_or_refusal(r) if isinstance(r, Breakpoint) else r
                       for r in results]
        return results

    def _insert_or_refusal(self, bp: Breakpoint) -> Breakpoint | StepperError:
        try:
            self.insert(bp)
        except StepperError as e:
            return e
        return bp

    def insert(self, bp: Breakpoint) -> None:
        try:
            self.mem.write(bp.address, INT3)
        except OSError as e:
            raise _unwritable(bp.address, e) from None
        bp.inserted = True
        self.by_address[bp.address] = bp

    def insert_many(self, bps: Sequence[Breakpoint]) -> None:
        """Write the INT3 of every breakpoint of `bps` (prepared, at distinct addresses): one
        write per run of adjacent addresses. All or nothing: when a write fails, what the
        batch wrote is put back and StepperError names the first address refused."""
        runs: list[list[Breakpoint]] = []
        for bp in sorted(bps, key=lambda b: b.address):
            if runs and runs[-1][-1].address + 1 == bp.address:
                runs[-1].append(bp)
            else:
                runs.append([bp])
        done = 0
        try:
            for run in runs:
                self.mem.write(run[0].address, INT3 * len(run))
                done += 1
        except (OSError, StepperError) as e:
            for bp in (bp for run in runs[:done + 1] for bp in run):
                try:
                    self.mem.write(bp.address, bp.original)
                except (OSError, StepperError):
                    pass  # the byte the failed write could not change is still the original
            raise _unwritable(runs[done][0].address, e) from None
        for bp in bps:
            bp.inserted = True
            self.by_address[bp.address] = bp

    def hold_semaphore(self, bp: Breakpoint, address: int) -> None:
        """Count `bp` as one user of the USDT semaphore at `address` (a 16-bit counter the
        program reads, docs/usdt.md): +1 now, -1 when the breakpoint goes."""
        self._add_to_semaphore(address, 1)
        bp.semaphore = address

    def _add_to_semaphore(self, address: int, delta: int) -> None:
        value = int.from_bytes(self.mem.read(address, 2), "little")
        self.mem.write(address, max(0, min(0xFFFF, value + delta)).to_bytes(2, "little"))

    def remove(self, bp: Breakpoint) -> None:
        if bp.inserted:
            bp.inserted = False
            self.mem.write(bp.address, bp.original)
            if bp.semaphore is not None:
                self._add_to_semaphore(bp.semaphore, -1)
        self.by_address.pop(bp.address, None)

    def restore_all(self) -> None:
        """Put every original byte back (errors ignored: the process may be gone)."""
        for bp in list(self.by_address.values()):
            if bp.inserted:
                bp.inserted = False
                try:
                    self.mem.write(bp.address, bp.original)
                    if bp.semaphore is not None:
                        self._add_to_semaphore(bp.semaphore, -1)
                except (OSError, StepperError):  # short write: the memory is gone (exit, dlclose)
                    pass



def _decide(code: bytes, address: int, mode: str) -> tuple:
    return policy.decide(mode, code, address)


def _unwritable(address: int, error: Exception) -> StepperError:
    reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
    return StepperError(f"cannot write a breakpoint at {address:#x}: {reason} (the page refuses "
                        f"writes through /proc/PID/mem, as a shared mapping does)")
