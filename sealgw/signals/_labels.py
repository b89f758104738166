"""
Label-name rules shared by the Prometheus and Loki formats.
"""

from __future__ import annotations

import re

LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
METRIC_NAME = "__name__"

# Names seen valid before.  Pushes repeat the same few names endlessly, so a
# set lookup spares most regex matches; the bound keeps a stream of made-up
# names from growing it without end.
_KNOWN_GOOD: set[str] = set()
_KNOWN_GOOD_MAX = 10_000


def valid_label_name(name: str) -> bool:
    """
    Whether C{name} is a legacy Prometheus label name (which Loki shares).
    """
    if name in _KNOWN_GOOD:
        return True
    if LABEL_NAME.fullmatch(name) is None:
        return False
    if len(_KNOWN_GOOD) < _KNOWN_GOOD_MAX:
        _KNOWN_GOOD.add(name)
    return True


def all_valid_label_names(names: list[str]) -> bool:
    """
    Whether every name in C{names} is valid, in one set operation when all
    of them were seen before.
    """
    if _KNOWN_GOOD.issuperset(names):
        return True
    return all(valid_label_name(name) for name in names)


def is_utf8_text(text: str) -> bool:
    """
    Whether C{text} can be written as UTF-8.  JSON lets a client send lone
    surrogates (C{"\\ud800"}), which no protobuf string or Loki line can
    hold; they are refused where JSON is read.
    """
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
