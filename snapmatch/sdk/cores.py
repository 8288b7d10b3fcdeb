"""How many cores this process may use: what "all cores" (threads=0) means for inference and graph builds."""

from __future__ import annotations

import os


def usable_cores() -> int:
    """The cores this process may run on (a container's CPU set, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count() or 1
