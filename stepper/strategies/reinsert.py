"""ReinsertOps: restore the original byte, single-step in place, write the INT3 back. Only a
baseline: another thread running past the address meanwhile misses the breakpoint."""

from __future__ import annotations

from .. import kernel
from ..records import Step
from .base import DONE, Ops


class ReinsertOps(Ops):
    """Restore the original byte, step in place, write the INT3 back."""

    name = "reinsert"

    def hit(self, p, t, bp) -> Step:
        p.mem.write(bp.address, bp.original)
        kernel.setregs(t.tid, t.regs)
        bp.stats.reinsert += 1
        return Step(self, bp)

    def complete(self, p, t, bp, token) -> bool:
        if bp.inserted:
            p.mem.write(bp.address, b"\xcc")
        return DONE

    def abort(self, p, t, bp, token) -> None:
        self.complete(p, t, bp, token)
