"""Best-effort page-cache control for one's own files, without root (Linux).

Dropping the whole page cache (`/proc/sys/vm/drop_caches`) needs root and
slows every other process on the machine. `evict` instead asks the kernel to
forget the clean cached pages of the given files (posix_fadvise DONTNEED),
and `resident_fraction` checks (mincore) how much of a file is still cached.
Neither reaches caches below the OS (a hypervisor's or a disk's), so an
"evicted" open is colder than a warm one, not necessarily as cold as a boot.
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path
from typing import Iterable

import numpy as np

_PROT_READ = 1
_MAP_SHARED = 1


def evict(paths: Iterable[str | os.PathLike]) -> None:
    """Write back, then drop, the cached pages of each existing file (no-op where unsupported)."""
    if not hasattr(os, "posix_fadvise"):
        return
    for path in paths:
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            continue
        try:
            os.fsync(fd)  # dirty pages cannot be dropped
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def resident_fraction(path: str | os.PathLike) -> float | None:
    """Share of `path`'s pages in the page cache (0..1), or None where mincore is unavailable."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size == 0:
            return 1.0
        libc = ctypes.CDLL(None, use_errno=True)
        libc.mmap.restype = ctypes.c_void_p
        libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
        libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
        libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
    except (OSError, AttributeError):
        return None
    fd = os.open(path, os.O_RDONLY)
    try:
        address = libc.mmap(None, size, _PROT_READ, _MAP_SHARED, fd, 0)
        if address is None or address == ctypes.c_void_p(-1).value:
            return None
        try:
            pages = -(-size // os.sysconf("SC_PAGE_SIZE"))
            vector = (ctypes.c_ubyte * pages)()
            if libc.mincore(address, size, vector) != 0:
                return None
            return float((np.frombuffer(vector, dtype=np.uint8) & 1).mean())
        finally:
            libc.munmap(address, size)
    finally:
        os.close(fd)
