"""
What a C{Host} header (or the authority of an absolute request target)
must look like to be served: the one decision about it, made at the edge
before anything parses the name.

Accepted, with an optional C{:port} (1-65535):

  - a DNS name: dot-separated labels of 1-63 letters, digits, C{-},
    C{_} (common in internal names) and percent-encoded characters, not
    starting or ending with C{-}, at most 253 characters, with an optional
    trailing dot; a label that
    starts with C{xn--} must be a valid IDNA 2008 A-label;
  - an IPv4 address in dotted-quad form (a name whose last label is all
    digits must be one);
  - an IPv6 address in brackets.

Refused: an empty value, user information (C{user@host}), spaces and
control characters, anything not ASCII (an international name travels in
its C{xn--} form), RFC 3986's sub-delimiters (C{a,b} is what two Host
values joined by a proxy look like), IPvFuture and zone identifiers.
RFC 3986's reg-name would allow more (empty labels, C{a..b}), but no
client reaches this gateway by such a name, and routing code downstream
(Werkzeug encodes the name as IDNA to bind its URL map) fails on some of
them: deciding here is what keeps those failures from ever being reached.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Optional

import idna

#: The longest value worth looking at: a 253-character name, a trailing
#: dot and a port.  Anything longer is refused before any parsing.
MAX_HOST = 253 + 1 + 6

_LABEL = rb"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
_NAME = rb"(?:%s\.)*%s\.?" % (_LABEL, _LABEL)
# The usual case (a name or an IPv4 address, perhaps a port) in one match.
_NAME_AND_PORT = re.compile(rb"(%s)(?::([0-9]{1,5}))?" % _NAME)
# The same with percent-encoded characters in labels: RFC 3986 allows
# them, and clients over a Unix socket (requests-unixsocket) send the
# socket's path that way, %2Frun%2Fsealgw.sock.  A separate expression,
# tried only when the value has a %, because the alternation costs the
# usual case about three times as much.
_END = rb"(?:[A-Za-z0-9_]|%[0-9A-Fa-f]{2})"
_INNER = rb"(?:[A-Za-z0-9_-]|%[0-9A-Fa-f]{2})"
_ENCODED_LABEL = rb"%s(?:%s{0,61}%s)?" % (_END, _INNER, _END)
_ENCODED_NAME_AND_PORT = re.compile(
    rb"((?:%s\.)*%s\.?)(?::([0-9]{1,5}))?" % (_ENCODED_LABEL, _ENCODED_LABEL)
)
_IPV4 = re.compile(rb"(?:(?:0|[1-9][0-9]{0,2})\.){3}(?:0|[1-9][0-9]{0,2})\.?")


def host_problem(value: bytes) -> Optional[str]:
    """
    Why C{value} (a C{Host} header's value, or a request target's
    authority) is not a host this gateway serves, or L{None} when it is.

    The reason is short and says what was wrong, for the one-line answer
    the client gets; it never repeats the value.  A usual value costs one
    regular expression match.
    """
    if len(value) > MAX_HOST:
        return f"it is longer than {MAX_HOST} characters"
    match = _NAME_AND_PORT.fullmatch(value)
    if match is None and b"%" in value:
        match = _ENCODED_NAME_AND_PORT.fullmatch(value)
    if match is None:
        if value[:1] == b"[":
            return _ipv6_problem(value)
        return _why_not(value)
    name, port = match.groups()
    if port is not None and not 0 < int(port) < 65536:
        return _PORT_RANGE
    bare = name.rstrip(b".")
    if bare.rpartition(b".")[2].isdigit():
        # No top-level domain is all digits: this can only be an address.
        if _IPV4.fullmatch(name) is None or any(int(o) > 255 for o in bare.split(b".")):
            return "it is not a valid IPv4 address"
        return None
    if len(bare) > 253:
        return "its name is longer than 253 characters"
    if b"%" in bare and any(len(label) > 63 for label in bare.split(b".")):
        return "a label is longer than 63 characters"
    if b"-" in name:
        for label in name.lower().split(b"."):
            if label[:4] == b"xn--":
                try:
                    idna.decode(label)
                except UnicodeError:
                    return "a label starting with xn-- is not a valid international name"
    return None


_PORT_RANGE = "its port is not a number from 1 to 65535"
_PORT = re.compile(rb"[0-9]{1,5}")


def _port_problem(port: bytes) -> Optional[str]:
    if _PORT.fullmatch(port) is None or not 0 < int(port) < 65536:
        return _PORT_RANGE
    return None


def _why_not(value: bytes) -> str:
    """
    What is wrong with a value the usual match refused.
    """
    if not value:
        return "it is empty"
    if b"@" in value:
        return "it must not carry user information (user@host)"
    if not value.isascii():
        return "it is not ASCII (send an international name in its xn-- form)"
    if any(c <= 0x20 or c == 0x7F for c in value):
        return "it contains spaces or control characters"
    name, _, port = value.partition(b":")
    if b":" in port:
        return "it has more than one colon (an IPv6 address must be in brackets)"
    if not name:
        return "it has no host name"
    if _NAME_AND_PORT.fullmatch(name) is None and _ENCODED_NAME_AND_PORT.fullmatch(name) is None:
        return "it is not a valid host name"
    return _PORT_RANGE


def _ipv6_problem(value: bytes) -> Optional[str]:
    """
    Why a value starting with C{[} is not a bracketed IPv6 address with an
    optional port, or L{None} when it is one.
    """
    address, bracket, rest = value[1:].partition(b"]")
    if not bracket:
        return "its IPv6 address has no closing bracket"
    if rest:
        if rest[:1] != b":":
            return "only a port may follow the IPv6 address"
        problem = _port_problem(rest[1:])
        if problem is not None:
            return problem
    try:
        # Only hex digits, colons and dots get this far: no zone
        # identifier (%), no IPvFuture (v1.x).
        if address.strip(b"0123456789abcdefABCDEF:.") != b"":
            raise ValueError(address)
        ipaddress.IPv6Address(address.decode("ascii"))
    except ValueError:
        return "it is not a valid IPv6 address in brackets"
    return None
