"""
What a value in the file must look like beyond its Python type.

The model's fields say it with C{Annotated}: C{header_timeout: Seconds}
is a C{float} to every reader of the model, and to the structuring
converter a duration written C{30s} that must be longer than zero.  Each
rule turns the YAML value into the field's value or raises L{Invalid}
with the message an operator reads.
"""

from __future__ import annotations

import ipaddress
import os
import re
from typing import Annotated, Optional
from urllib.parse import urlsplit

import attr
from OpenSSL import SSL

from sealgw.config._problems import Invalid, kind
from sealgw.config._units import format_size, parse_duration, parse_size
from sealgw.tenancy import TenantError, parse_tenant


@attr.frozen
class SourceFile:
    """
    The file being read: relative paths in it are taken from its folder.
    """

    source: str
    directory: str = "."

    def path(self, value: str) -> str:
        return os.path.normpath(os.path.join(self.directory, os.path.expanduser(value)))


def text(value: object, empty: bool = False) -> str:
    """
    A string; YAML's numbers count (C{min_version: 1.3}), booleans do not.
    """
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise Invalid(f"expected a string, got {kind(value)}")
    result = str(value)
    if not result and not empty:
        raise Invalid("must not be empty")
    return result


def whole_number(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise Invalid(f"expected a whole number, got {kind(value)}")
    return value


def number(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise Invalid(f"expected a number, got {kind(value)}")
    return float(value)


def boolean(value: object) -> bool:
    if not isinstance(value, bool):
        raise Invalid(f"expected true or false, got {kind(value)}")
    return value


class Rule:
    """
    Base of the markers found in C{Annotated} metadata.
    """

    def structure(self, value: object, file: SourceFile) -> object:
        raise NotImplementedError


@attr.frozen
class Text(Rule):
    """
    Any string, the empty one too: label and header values.
    """

    def structure(self, value: object, file: SourceFile) -> str:
        return text(value, empty=True)


@attr.frozen
class Duration(Rule):
    """
    Seconds, written C{30s}, C{5m}, C{250ms} or as a number.

    @ivar zero: whether zero is allowed (it turns something off).
    """

    zero: bool = False

    def structure(self, value: object, file: SourceFile) -> float:
        try:
            seconds = parse_duration(value)
        except ValueError as e:
            raise Invalid(str(e)) from None
        if seconds <= 0 and not self.zero:
            raise Invalid("must be longer than zero")
        return seconds


@attr.frozen
class Size(Rule):
    """
    Bytes, written C{5MiB}, C{512KB} or as a number; never zero.
    """

    minimum: int = 1

    def structure(self, value: object, file: SourceFile) -> int:
        try:
            size = parse_size(value)
        except ValueError as e:
            raise Invalid(str(e)) from None
        if size <= 0:
            raise Invalid("must be larger than zero")
        if size < self.minimum:
            raise Invalid(f"must be at least {self.minimum} bytes ({format_size(self.minimum)})")
        return size


@attr.frozen
class AtLeast(Rule):
    """
    A whole number (or, unless C{whole}, any number) no smaller than
    C{minimum}.
    """

    minimum: float
    whole: bool = True

    def structure(self, value: object, file: SourceFile) -> float:
        result = whole_number(value) if self.whole else number(value)
        if result < self.minimum:
            raise Invalid(f"must be at least {self.minimum}")
        return result


@attr.frozen
class OneOf(Rule):
    """
    One of a few words; C{what} names them in the message when a list of
    them would be too long.
    """

    options: tuple[str, ...]
    what: Optional[str] = None

    def structure(self, value: object, file: SourceFile) -> str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            value = str(value)
        if value not in self.options:
            if self.what:
                raise Invalid(f"{value!r} is not {self.what}")
            raise Invalid(f"{value!r} is not one of " + ", ".join(map(repr, self.options)))
        return str(value)


@attr.frozen
class HTTPURL(Rule):
    def structure(self, value: object, file: SourceFile) -> str:
        if not isinstance(value, str):
            raise Invalid("not an http(s) URL")
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise Invalid("not an http(s) URL")
        try:
            _ = parts.port
        except ValueError:
            raise Invalid("not an http(s) URL (bad port)") from None
        return value


@attr.frozen
class URLPath(Rule):
    """
    A path appended to an upstream's URL.
    """

    def structure(self, value: object, file: SourceFile) -> str:
        path = text(value)
        if not path.startswith("/"):
            raise Invalid("must start with /")
        return path


@attr.frozen
class FilePath(Rule):
    """
    A file system path, relative ones taken from the configuration's
    folder; with C{exists}, it must name a file now.
    """

    exists: bool = False

    def structure(self, value: object, file: SourceFile) -> str:
        path = file.path(text(value))
        if self.exists and not os.path.isfile(path):
            raise Invalid(f"{path} does not exist or is not a file")
        return path


ENDPOINT_TYPES = ("tcp", "tcp6", "ssl", "unix", "systemd")


@attr.frozen
class Endpoint(Rule):
    """
    A Twisted endpoint string of a kind the gateway serves; whether the
    rest of it is usable is checked when the listener is built.
    """

    def structure(self, value: object, file: SourceFile) -> str:
        endpoint = text(value)
        if endpoint.split(":", 1)[0] not in ENDPOINT_TYPES:
            raise Invalid(
                f"{endpoint!r} is not an endpoint string this gateway serves "
                "(tcp:PORT, ssl:PORT, unix:PATH or systemd:domain=INET:index=N)"
            )
        return endpoint


_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


@attr.frozen
class HeaderName(Rule):
    def structure(self, value: object, file: SourceFile) -> str:
        name = text(value)
        if not _HEADER_NAME.match(name):
            raise Invalid("not a valid HTTP header name")
        return name


@attr.frozen
class TenantID(Rule):
    def structure(self, value: object, file: SourceFile) -> str:
        tenant = text(value)
        try:
            parse_tenant(tenant)
        except TenantError as e:
            raise Invalid(str(e)) from None
        return tenant


@attr.frozen
class Network(Rule):
    """
    An address or a CIDR, as C{trusted_proxies} lists them.
    """

    def structure(self, value: object, file: SourceFile) -> str:
        network = text(value)
        try:
            ipaddress.ip_network(network, strict=False)
        except ValueError:
            raise Invalid(f"{network!r} is not an address or CIDR") from None
        return network


@attr.frozen
class CipherString(Rule):
    """
    An OpenSSL cipher string choosing TLS 1.2 suites.  OpenSSL itself skips
    names it does not know as long as one matches; a typo would then go
    unnoticed, so each name is tried alone.
    """

    def structure(self, value: object, file: SourceFile) -> str:
        ciphers = text(value)
        try:
            whole = ciphers.encode("ascii")
        except UnicodeEncodeError:
            raise Invalid(f"{ciphers!r} is not an OpenSSL cipher string (not ASCII)") from None
        for name in re.split(r"[:, ;]+", ciphers):
            # !X, -X, +X and @X only remove, reorder or set a level: alone
            # they select nothing, so they cannot be tried alone.
            if name and name[0] not in "!-+@" and not _ciphers_match(name.encode("ascii")):
                raise Invalid(f"{name!r} names no TLS 1.2 cipher suite OpenSSL knows")
        if not _ciphers_match(whole):
            raise Invalid(f"{ciphers!r} leaves no TLS 1.2 cipher suite")
        return ciphers


def _ciphers_match(ciphers: bytes) -> bool:
    try:
        SSL.Context(SSL.TLS_METHOD).set_cipher_list(ciphers)
    except SSL.Error:
        return False
    return True


def rule_of(metadata: tuple[object, ...]) -> Optional[Rule]:
    """
    The rule among an C{Annotated} type's metadata, if there is one.
    """
    return next((m for m in metadata if isinstance(m, Rule)), None)


# The vocabulary the model is written in.
Seconds = Annotated[float, Duration()]
Interval = Annotated[float, Duration(zero=True)]
"""A duration where zero means "never" or "none"."""
Bytes = Annotated[int, Size()]
Count = Annotated[int, AtLeast(1)]
URL = Annotated[str, HTTPURL()]
Path = Annotated[str, FilePath()]
ExistingFile = Annotated[str, FilePath(exists=True)]
Tenant = Annotated[str, TenantID()]
AnyText = Annotated[str, Text()]

# Where a field's value comes from, for the few that are not a key of their
# own in the section: attrs field metadata under this key.
SOURCE = "sealgw.config"
FROM_KEY = {SOURCE: "key"}
"""The key the section is filed under (an upstream's name)."""
INLINE = {SOURCE: "inline"}
"""A section whose keys are written in the enclosing one (a push route)."""
NOT_IN_FILE = {SOURCE: "not in file"}
"""Set by the loader, never read from the file."""
