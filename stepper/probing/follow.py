"""`stepper probe` over a process tree: probes follow fork and exec, hits are kept per process.

- fork (and vfork, clone without CLONE_THREAD): the child starts with copies of its parent's
  breakpoints (the engine copies them; the INT3 bytes came with the copied memory), each
  with its own hit count; its own inserter takes over the loader watch, so the libraries the
  child loads later get their probes in the child.
- exec: the engine drops the old image's breakpoints (their counts stay, as rows of the old
  image); every named spec is resolved again against the new image at the exec stop, before
  any of its code runs, and its libraries get theirs as the loader maps them, exactly as at
  the start. A spec that matches nothing there is no error. A bare address (`-p 0xADDR`)
  means the first image only: it is an address of that file.

One `Traced` per process, in the order they appeared; `images` holds one inserter per image
the process ran (more than one after an exec).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Callable

from .. import api


@dataclass
class Traced:
    """One process of the tree and the probes of each image it ran."""

    proc: api.Process
    ppid: int
    argv0: str
    images: list = field(default_factory=list)   # Inserter per image, oldest first


class Tracker:
    """Keeps a Traced per process, through the engine's on_fork/on_exec hooks.

    `new_image(proc)` builds the inserter of an image after an exec (with its probes put in);
    an exception there becomes a warning: the program runs on, it only lacks those probes."""

    def __init__(self, root: Traced, new_image: Callable[[api.Process], object],
                 specs: list[str]) -> None:
        self.specs = specs   # every -p, in command-line order
        self.processes: dict[api.Process, Traced] = {root.proc: root}
        self.root = root
        self._new_image = new_image
        self.notes: list[str] = []
        root.proc.on_fork(self._forked)
        root.proc.on_exec(self._execed)

    def _forked(self, parent: api.Process, child: api.Process) -> None:
        mine = self.processes.get(parent)
        images = []
        try:
            if mine is not None and mine.images:
                images.append(mine.images[-1].fork(child))
        except Exception as e:  # noqa: BLE001 - the run must go on; say what was lost
            self.notes.append(f"process {child.pid} (forked from {parent.pid}): its probes "
                              f"are not counted ({e})")
        self.processes[child] = Traced(child, parent.pid, mine.argv0 if mine else "?", images)

    def _execed(self, proc: api.Process) -> None:
        traced = self.processes.get(proc)
        if traced is None:
            return
        traced.argv0 = argv0_of(proc.pid) or os.path.basename(proc.exe)
        try:
            traced.images.append(self._new_image(proc))
        except Exception as e:  # noqa: BLE001 - the run must go on; say what was lost
            self.notes.append(f"process {proc.pid} exec'd {proc.exe}: its probes could not be "
                              f"put in ({e})")

    def warnings(self) -> list[str]:
        lines = [w for t in self.processes.values() for image in t.images
                 for w in image.warnings()]
        lines += [w for proc in self.processes for w in proc.warnings]
        return list(dict.fromkeys(lines + self.notes))   # forked copies repeat their parent's


def argv0_of(pid: int) -> str | None:
    """argv[0] of process `pid` as it is now (None if unreadable)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return os.fsdecode(f.read().split(b"\0", 1)[0]) or None
    except OSError:
        return None


def ppid_of(pid: int) -> int:
    """The parent of process `pid` (0 if unreadable)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return 0
