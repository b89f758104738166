"""
Durations and sizes written the way operators write them (C{30s}, C{5MiB}).
"""

from __future__ import annotations

import re

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}

_SIZE = re.compile(r"^(\d+(?:\.\d+)?)\s*([KMGT]i?B|B)?$", re.IGNORECASE)
_SIZE_UNITS = {
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}


def parse_duration(value: object) -> float:
    """
    Seconds from C{"1m30s"}, C{"250ms"}, C{"5m"}, or a bare number of seconds.

    @raise ValueError: with a message fit to show an operator.
    """
    if isinstance(value, bool):
        raise ValueError("not a duration (write it like 30s, 5m or 250ms)")
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return float(value)
    if not isinstance(value, str):
        raise ValueError("not a duration (write it like 30s, 5m or 250ms)")
    text = value.strip()
    pos = 0
    total = 0.0
    for match in _DURATION.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        pos = match.end()
    if pos != len(text) or not text:
        raise ValueError(f"{value!r} is not a duration (write it like 30s, 5m or 250ms)")
    return total


def parse_size(value: object) -> int:
    """
    Bytes from C{"5MiB"}, C{"512KB"}, C{"100B"} or a bare number of bytes.

    @raise ValueError: with a message fit to show an operator.
    """
    if isinstance(value, bool):
        raise ValueError("not a size (write it like 5MiB or 512KiB)")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("a size cannot be negative")
        return value
    if not isinstance(value, str):
        raise ValueError("not a size (write it like 5MiB or 512KiB)")
    match = _SIZE.match(value.strip())
    if match is None:
        raise ValueError(f"{value!r} is not a size (write it like 5MiB or 512KiB)")
    unit = (match.group(2) or "B").lower()
    return int(float(match.group(1)) * _SIZE_UNITS[unit])


def format_size(size: int) -> str:
    """
    The inverse of L{parse_size}, for messages and documentation.
    """
    for unit, factor in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if size >= factor and size % factor == 0:
            return f"{size // factor}{unit}"
    return f"{size}B"
