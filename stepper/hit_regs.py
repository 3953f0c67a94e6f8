"""A hit's registers (`Hit.regs`), cheap to make: most callbacks read two or three registers,
so building a 20-entry dict at every hit (about 1.2 µs) was most of the engine's Python work
before a callback ran.

`Regs.at(buf)` takes a copy of the thread's register buffer (one memmove of the 27-word
`user_regs_struct`; the buffer itself is reused by the thread's next hits, and a Hit kept
beyond its callback, such as `ret.entry`, must still show the values of its own hit) and
decodes a register from the copy when it is read; a write goes into the copy (and is noted),
so returns.write_back puts the whole copy back with one memmove. It is still a dict
(isinstance, json, `**regs`, `dict(regs)`): whatever needs every entry (iteration, len,
items, values, copy, equality, repr, pickling) fills the dict's own storage from the copy
first, in register order, and later writes go to both. Only what removes an entry (del, pop)
makes it a plain dict without the copy.

Until then the storage holds only `rip`, so C code that reads a dict's size without asking
(json's encoder takes size 0 as `{}`) still goes through `items()`, which fills it.
"""

from __future__ import annotations

from operator import itemgetter
from typing import Any, Iterator

from .kernel import REG_INDEX, RIP, RegsBuffer

MASK = (1 << 64) - 1
_NAMES = tuple(REG_INDEX)
_VALUES = itemgetter(*REG_INDEX.values())   # a buffer's registers in _NAMES order
_copy = RegsBuffer.from_buffer_copy


class Regs(dict):
    """A hit's registers by emu name, writable: a write is noted (`written`), so a hit whose
    callback changed nothing costs nothing more (the engine writes them back only then).
    `Regs(mapping)` is a plain filled one; `Regs.at(buf)` is lazy over a copy of `buf`."""

    __slots__ = ("_snap", "_filled", "written")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._snap = None       # no copy: the dict's storage is all there is
        self._filled = True
        self.written = False

    @classmethod
    def at(cls, buf) -> "Regs":
        """The registers in `buf` (a kernel.RegsBuffer) now, decoded when read."""
        self = dict.__new__(cls)
        self._snap = snap = _copy(buf)
        self._filled = self.written = False
        dict.__setitem__(self, "rip", snap[RIP])
        return self

    @property
    def buffer(self):
        """The copy of the thread's buffer these registers read (writes included), or None
        for registers made from a mapping: returns.write_back copies it back in one go."""
        return self._snap

    def __getitem__(self, name: str, _index=REG_INDEX) -> int:
        snap = self._snap
        if snap is None:
            return dict.__getitem__(self, name)
        return snap[_index[name]]

    def _fill(self) -> None:
        """Every register into the dict's storage, in register order (the copy stays the
        one that reads and is written, the storage follows it)."""
        if not self._filled:
            dict.clear(self)
            dict.update(self, zip(_NAMES, _VALUES(self._snap)))
            self._filled = True

    def _plain(self) -> None:
        """For what removes entries: a plain dict from now on, the copy dropped."""
        self._fill()
        self._snap = None

    def __setitem__(self, name: str, value: int) -> None:
        snap = self._snap
        if not (dict.__contains__(self, name) if snap is None else name in REG_INDEX):
            raise KeyError(f"{name!r} is not a register of a hit (one of {', '.join(self)})")
        value &= MASK
        if snap is not None:
            snap[REG_INDEX[name]] = value
        if self._filled:
            dict.__setitem__(self, name, value)
        self.written = True

    def update(self, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        for name, value in dict(*args, **kwargs).items():
            self[name] = value

    def __contains__(self, name: object) -> bool:
        if self._snap is not None:
            return name in REG_INDEX
        return dict.__contains__(self, name)

    def get(self, name: str, default: Any = None) -> Any:  # type: ignore[override]
        if self._snap is not None:
            i = REG_INDEX.get(name)
            return default if i is None else self._snap[i]
        return dict.get(self, name, default)

    # -- what needs every entry: fill first, then the dict's own ---------------------------

    def __iter__(self) -> Iterator[str]:
        self._fill()
        return dict.__iter__(self)

    def __len__(self) -> int:
        self._fill()
        return dict.__len__(self)

    def __reversed__(self) -> Iterator[str]:
        self._fill()
        return dict.__reversed__(self)

    def keys(self):  # type: ignore[override]
        self._fill()
        return dict.keys(self)

    def values(self):  # type: ignore[override]
        self._fill()
        return dict.values(self)

    def items(self):  # type: ignore[override]
        self._fill()
        return dict.items(self)

    def copy(self) -> dict:  # type: ignore[override]
        self._fill()
        return dict(dict.items(self))

    def __eq__(self, other: object) -> bool:
        self._fill()
        if isinstance(other, Regs):
            other._fill()
        return dict.__eq__(self, other)

    def __ne__(self, other: object) -> bool:
        eq = self.__eq__(other)
        return eq if eq is NotImplemented else not eq

    __hash__ = None  # type: ignore[assignment]

    def __or__(self, other):
        self._fill()
        return dict.__or__(self, other)

    def __ror__(self, other):
        self._fill()
        return dict.__ror__(self, other)

    def __ior__(self, other):
        self.update(other)
        return self

    def __repr__(self) -> str:
        self._fill()
        return dict.__repr__(self)

    def __reduce_ex__(self, protocol: int):
        self._fill()
        return (Regs, (dict(dict.items(self)),), {"written": self.written})

    def __setstate__(self, state: dict) -> None:
        self.written = state["written"]

    def pop(self, *args: Any) -> Any:
        self._plain()
        return dict.pop(self, *args)

    def popitem(self):
        self._plain()
        return dict.popitem(self)

    def setdefault(self, name: str, default: Any = None) -> Any:
        self._plain()
        return dict.setdefault(self, name, default)

    def __delitem__(self, name: str) -> None:
        self._plain()
        dict.__delitem__(self, name)

    def clear(self) -> None:
        self._plain()
        dict.clear(self)
