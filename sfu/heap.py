"""Giving the C heap's free pages back to the system (glibc `malloc_trim`).

Packets, SRTP buffers and Python objects over 512 bytes live on glibc's heap. Under
join/leave churn the long-lived ones (retransmission rings, a room's buffers) end up
scattered among chunks that were freed, so the heap's top can rarely be trimmed and what
departed participants and closed rooms freed stays in the worker's RSS. `malloc_trim(0)`
hands every free page inside the heap back (madvise), wherever it is (issue 8's soak: one
trim after the rooms closed took the worker from 94 to 78 MB in 4 ms). It does not help
memory still in use: the soak's growth while rooms live is not this (bench/RESULTS.md, Soak).

Without glibc (musl, macOS) there is nothing to call: `available` is False and `trim()`
returns False.
"""

from __future__ import annotations

import ctypes
from typing import Any

__all__ = ["available", "trim"]


def _find_malloc_trim() -> Any:
    try:
        fn = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_size_t]
    fn.restype = ctypes.c_int
    return fn


_malloc_trim = _find_malloc_trim()
available: bool = _malloc_trim is not None


def trim() -> bool:
    """Return the heap's free pages to the system; True when glibc released any."""
    if _malloc_trim is None:
        return False
    return bool(_malloc_trim(0))
