"""
How the process manages its memory: glibc's malloc made to give large
blocks back to the system when they are freed, so that the memory a
refused body cost leaves the process with it; and the objects of
start-up kept out of the garbage collector's work.

glibc maps blocks of 128 KiB and more on their own and unmaps them when
freed, but only until the first such block is freed: it then raises that
threshold to the freed block's size (up to 32 MiB) and the trim threshold
to twice that.  After one large decoded body, every later one comes from
an arena, and a worker thread's arena keeps what is freed at its top until
it exceeds the trim threshold: measured, eight refused 8 MiB bodies left
the gateway 130 MiB larger for good.  A fixed threshold turns that
adjustment off.
"""

from __future__ import annotations

import ctypes
import gc
import os
from collections.abc import Callable, Mapping
from typing import Optional

#: Blocks of this size and larger are mapped on their own, and unmapped
#: when freed.  Bodies and what they decode to are this large; ordinary
#: pushes (tens of KiB) stay in the arenas, where reuse is cheaper.
LARGE_BLOCK = 1024 * 1024

# From <malloc.h>.
_M_MMAP_THRESHOLD = -3

#: glibc reads this from the environment itself; when it is set, the
#: operator has chosen, and sealgw leaves malloc alone.
OPERATOR_SETTING = "MALLOC_MMAP_THRESHOLD_"


def _glibc_mallopt() -> Optional[Callable[[int, int], int]]:
    """
    glibc's C{mallopt}, or L{None} under another C library.
    """
    try:
        libc = os.confstr("CS_GNU_LIBC_VERSION")
    except (ValueError, OSError):
        return None
    if not libc or not libc.startswith("glibc"):
        return None
    mallopt: Callable[[int, int], int] = ctypes.CDLL(None).mallopt
    return mallopt


def map_large_blocks(
    threshold: int = LARGE_BLOCK,
    environ: Mapping[str, str] = os.environ,
    mallopt: Callable[[], Optional[Callable[[int, int], int]]] = _glibc_mallopt,
) -> bool:
    """
    Fix glibc's mmap threshold at C{threshold} bytes for this process.

    @return: whether the threshold was set: not under another C library,
        nor when C{MALLOC_MMAP_THRESHOLD_} is in the environment.
    """
    if OPERATOR_SETTING in environ:
        return False
    call = mallopt()
    if call is None:
        return False
    return bool(call(_M_MMAP_THRESHOLD, threshold))


def freeze_startup_objects() -> None:
    """
    Leave out of the cyclic garbage collector's work every object that
    exists once the gateway is built: modules, classes, protobuf
    descriptors, the configuration, the routes.

    They live as long as the process, yet every full collection walked
    all of them again: about 23 ms each time with sealgw's modules loaded,
    a pause felt by every request in flight then (it was the p99 under
    load).  Frozen, a full collection only walks what requests made.
    """
    gc.freeze()
