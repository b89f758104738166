"""
Media types as the push endpoints compare them: the type in lower case,
parameters apart.
"""

from __future__ import annotations


def parse_media_type(content_type: str | None) -> tuple[str, dict[str, str]]:
    """
    Split C{"application/json; charset=utf-8"} into C{("application/json",
    {"charset": "utf-8"})}.  Names are lower-cased, quotes around values
    removed; a missing header gives C{("", {})}.
    """
    if not content_type:
        return "", {}
    essence, *rest = content_type.split(";")
    params = {}
    for item in rest:
        name, sep, value = item.partition("=")
        if sep:
            params[name.strip().lower()] = value.strip().strip('"')
    return essence.strip().lower(), params
