"""The environment a program started under stepper gets: its own, not what Python added.

CPython changes its own environment before any of stepper's code runs: when the LC_CTYPE
locale is "C" or "POSIX" (no locale variable at all, as under `env -i`, cron, systemd units
and many containers), PEP 538's locale coercion sets LC_CTYPE=C.UTF-8 (or C.utf8, UTF-8,
whichever the system has) in `os.environ`. A program inheriting it would switch from bytes
to UTF-8 characters (`wc -m` counts differently), which it would not do unprobed. The
environment the process was started with is still in /proc/self/environ (setenv does not
rewrite it), which tells that variable apart. Nothing else is added by CPython on Linux.
"""

from __future__ import annotations

import os

#: The values PEP 538 coercion may give LC_CTYPE (CPython's _TARGET_LOCALES).
COERCED = (b"C.UTF-8", b"C.utf8", b"UTF-8")


def at_start() -> dict[bytes, bytes]:
    """The environment this process was started with (first value of a repeated name, as
    getenv reads it; entries without `=` have no name and are left out)."""
    with open("/proc/self/environ", "rb") as f:
        entries = f.read().split(b"\0")
    env: dict[bytes, bytes] = {}
    for entry in entries:
        name, eq, value = entry.partition(b"=")
        if eq and name:
            env.setdefault(name, value)
    return env


def inherited() -> dict[bytes, bytes]:
    """`os.environ` (as bytes, in its order), less LC_CTYPE when Python's locale coercion
    added it: absent at start and set to one of the coercion's values. Changes the
    application itself made to os.environ are kept."""
    env = dict(os.environb)
    added = env.get(b"LC_CTYPE")
    if added in COERCED and b"LC_CTYPE" not in at_start():
        del env[b"LC_CTYPE"]
    return env
