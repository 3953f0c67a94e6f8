"""stepper: breakpoints in traced Linux x86-64 processes, stepped over by emulation.

The library API lives in `stepper.api` and is re-exported here lazily (importing a submodule
such as stepper.cli must not pay for ptrace and the emulator):

    import stepper
    proc = stepper.spawn(["./prog"])
    proc.break_at(proc.load_bias + 0x1139, callback=print)
    print(proc.run(), proc.stats())
"""

_API = ("spawn", "attach", "Process", "Breakpoint", "Stats", "ExitStatus", "Hit", "MODES")
__all__ = list(_API)


def __getattr__(name: str):
    if name in _API:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'stepper' has no attribute {name!r}")
