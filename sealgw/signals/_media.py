"""
Media types as the push endpoints compare them: the type in lower case,
parameters apart.
"""

from __future__ import annotations

import re

# One parameter after a ";": a token name, "=", and a token or a quoted
# string (RFC 9110 section 5.6.6), whose backslash escapes are undone
# below.  A ";" inside the quotes belongs to the value.
_PARAMETER = re.compile(
    r"""\s*;\s*(?P<name>[^\s;=]+)\s*=\s*(?:"(?P<quoted>(?:[^"\\]|\\.)*)"|(?P<token>[^;]*))""",
    re.DOTALL,
)
_ESCAPE = re.compile(r"\\(.)", re.DOTALL)


def parse_media_type(content_type: str | None) -> tuple[str, dict[str, str]]:
    """
    Split C{"application/json; charset=utf-8"} into C{("application/json",
    {"charset": "utf-8"})}.  Names are lower-cased, quotes around values
    removed (a C{;} inside them is part of the value); a missing header
    gives C{("", {})}.

    Hand-written rather than C{email.message}, which costs tens of
    microseconds a call on every push; a parameter that does not parse is
    skipped, as it would be by the C{email} package.
    """
    if not content_type:
        return "", {}
    essence, sep, rest = content_type.partition(";")
    params: dict[str, str] = {}
    if sep:
        position = len(essence)
        while position < len(content_type):
            match = _PARAMETER.match(content_type, position)
            if match is None:
                # Skip to the next ";" outside any quotes and go on.
                following = content_type.find(";", position + 1)
                if following < 0:
                    break
                position = following
                continue
            quoted = match.group("quoted")
            if quoted is not None:
                value = _ESCAPE.sub(r"\1", quoted)
            else:
                value = match.group("token").strip()
            params[match.group("name").lower()] = value
            position = match.end()
    return essence.strip().lower(), params
