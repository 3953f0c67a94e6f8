"""Step strategies: one module per way of running a probed instruction, over one small
protocol (stepper.strategies.base), chosen once per breakpoint by stepper.policy.

    base      Ops (hit -> a verdict; complete -> done or again; abort), the narrow view of
              the traced process ops may use (Traced), register buffer <-> dict
    emulate   EmulateOps: the emu plan runs on the live thread; one trap
    xol       XolOps: a rewritten copy single-stepped in the thread's slot; two traps
    reinsert  ReinsertOps: the original byte back, stepped in place (a baseline)
    boost     BoostOps and the process's registry of boost slots; one trap

Ops only edit registers and memory and return: the engine's loop (stepper.tracer) is the
one place that resumes a thread, as in the kernel's uprobes, where the arch code fixes the
registers up and the generic code resumes the task.
"""
