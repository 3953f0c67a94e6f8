"""stepper.maps: the maps parser on the kernel's own formats (paths with spaces, deleted files,
pseudo-paths, anonymous mappings) and lookups against this process's real maps."""

from __future__ import annotations

import ctypes
import os

from hypothesis import given
from hypothesis import strategies as st

from stepper import maps

TEXT = """\
55d0c0a00000-55d0c0a01000 r--p 00000000 08:01 1234   /usr/bin/my prog
55d0c0a01000-55d0c0a02000 r-xp 00001000 08:01 1234   /usr/bin/my prog
55d0c0a02000-55d0c0a03000 rw-p 00000000 00:00 0 
55d0c1000000-55d0c1021000 rw-p 00000000 00:00 0      [heap]
7f0000000000-7f0000001000 r-xp 00002000 08:01 99     /tmp/lib.so (deleted)
7f0000002000-7f0000003000 r--p 00000000 08:01 98     /tmp/trailing space 
7ffd00000000-7ffd00002000 r-xp 00000000 00:00 0      [vdso]
"""


def test_parse_keeps_paths_as_the_kernel_prints_them():
    m = maps.parse(TEXT)
    assert [x.path for x in m] == ["/usr/bin/my prog", "/usr/bin/my prog", "", "[heap]",
                                   "/tmp/lib.so (deleted)", "/tmp/trailing space ", "[vdso]"]
    assert m[1] == maps.Mapping(0x55d0c0a01000, 0x55d0c0a02000, "r-xp", 0x1000, "/usr/bin/my prog")
    assert m[1].executable and m[1].readable and m[1].is_file
    assert not m[2].executable and not m[2].is_file and not m[3].is_file
    assert maps.parse("garbage\n\n") == []


def test_find_and_of_file():
    m = maps.parse(TEXT)
    assert maps.find(m, 0x55d0c0a01000) is m[1]          # first byte
    assert maps.find(m, 0x55d0c0a00fff) is m[0]          # last byte of the one before
    assert maps.find(m, 0x7f0000001000) is None          # the hole between two mappings
    assert maps.find(m, 0x1000) is None
    assert maps.find(m, 0x7ffd00002000) is None          # one past the last
    assert maps.of_file(m, "/usr/bin/my prog") == m[:2]


def test_this_process_maps_hold_its_code():
    mine = maps.read(os.getpid())
    getpid = ctypes.cast(ctypes.CDLL(None).getpid, ctypes.c_void_p).value
    at = maps.find(mine, getpid)
    assert at is not None and at.executable and at.is_file and "libc" in at.path
    assert mine == sorted(mine, key=lambda x: x.start)


@given(st.data())
def test_find_agrees_with_a_linear_search(data):
    mine = maps.read(os.getpid())
    m = data.draw(st.sampled_from(mine))
    address = data.draw(st.sampled_from([m.start, m.end - 1, m.end, m.start - 1,
                                         (m.start + m.end) // 2]))
    linear = next((x for x in mine if x.start <= address < x.end), None)
    assert maps.find(mine, address) == linear
