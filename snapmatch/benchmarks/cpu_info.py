"""Which CPU a benchmark ran on: its model name and the instruction sets that decide ONNX Runtime's speed.

AVX2 is the floor of ORT's fast fp32 kernels; AVX-512 VNNI (or AVX-VNNI) and
AMX are what make its int8 (U8S8) kernels faster than fp32 at all. A latency
figure without them cannot be compared with another machine's.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

from snapmatch.sdk.cores import usable_cores

__all__ = ["describe", "usable_cores"]

CPUINFO = Path("/proc/cpuinfo")
# Reported flag -> the /proc/cpuinfo flags that mean it (AMX counts when any of its parts is there).
FLAGS = {
    "avx2": ("avx2",),
    "avx512f": ("avx512f",),
    "avx512_vnni": ("avx512_vnni",),
    "avx_vnni": ("avx_vnni",),
    "amx": ("amx_tile", "amx_int8", "amx_bf16"),
}


def describe(cpuinfo: str | None = None) -> dict:
    """CPU model name, machine, cores (all, and usable by this process) and the ISA flags in FLAGS.

    `cpuinfo` is the text of /proc/cpuinfo (read when None); where there is none
    (macOS, Windows), flags are None: unknown, not absent.
    """
    if cpuinfo is None:
        try:
            cpuinfo = CPUINFO.read_text()
        except OSError:
            cpuinfo = ""
    model, flags = _parse(cpuinfo)
    return {
        "model": model or platform.processor() or platform.machine() or "unknown",
        "machine": platform.machine(),
        "cores": os.cpu_count() or 1,
        "usable_cores": usable_cores(),
        "flags": {name: (None if flags is None else any(f in flags for f in parts)) for name, parts in FLAGS.items()},
        "source": "/proc/cpuinfo" if flags is not None else "platform",
    }


def _parse(text: str) -> tuple[str | None, set[str] | None]:
    model, flags = None, None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and model is None:
            model = value.strip()
        elif key in ("flags", "Features") and flags is None:  # "Features" on ARM
            flags = set(value.split())
        if model is not None and flags is not None:
            break
    return model, flags


def flags_line(info: dict) -> str:
    """'AVX2 yes, AVX-512 yes, AVX-512 VNNI yes, AVX-VNNI no, AMX no' (or 'unknown' per flag)."""
    names = {"avx2": "AVX2", "avx512f": "AVX-512", "avx512_vnni": "AVX-512 VNNI", "avx_vnni": "AVX-VNNI", "amx": "AMX"}
    shown = {True: "yes", False: "no", None: "unknown"}
    return ", ".join(f"{label} {shown[info['flags'].get(key)]}" for key, label in names.items())
