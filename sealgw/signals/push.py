"""
A push as plain data: the bytes to relay and what the relay needs to know
about them, with a stable serialised form.

Nothing here refers to a request, a decoded message or a callable, so a
push can be written to a spool, read back after a restart, or handed to
another process, and still be relayed (and, by the file upstream,
re-decoded through its signal's codec) the same way.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from typing import Any, Optional

import attr

#: Leads every serialised push; the byte after it is the format's version.
MAGIC = b"SGWP"
VERSION = 1
_HEADER = struct.Struct(">4sBI")


class PushFormatError(ValueError):
    """
    Bytes that are not a serialised push of a version this code reads.
    """


def _headers(value: Mapping[str, str]) -> Mapping[str, str]:
    return dict(value)


@attr.frozen
class Push:
    """
    One request body on its way upstream, already authenticated, given a
    tenant and checked by the signal's codec.

    @ivar signal: one of L{sealgw.signals.records.SIGNALS}; names the codec
        that reads C{body} back.
    @ivar tenant: sent as the configured tenant header, replacing whatever
        else would have been sent; C{None} sends no tenant header unless the
        upstream's static C{headers} name one.
    @ivar body: the bytes to send, as they are.
    @ivar content_type: the body's media type, as sent upstream.
    @ivar content_encoding: the body's C{Content-Encoding} as sent upstream
        (C{"snappy"}, C{"gzip"}), or C{None}.
    @ivar path: appended to the upstream URL (before any query string).
    @ivar extra_headers: per-signal protocol headers such as
        C{X-Prometheus-Remote-Write-Version}.  They can never set the tenant
        header, C{Authorization}, C{Host} or the framing headers.
    @ivar received_at: C{reactor.seconds()} when the request arrived; the
        retry deadline counts from here.  C{0.0} means "when C{deliver} was
        called".
    @ivar owner: the tenant whose data this is, as the gate decided, even
        where no tenant header is sent (an upstream that keeps tenants
        apart by a label carries the tenant inside the body): the share of
        the upstream it counts against, so that one tenant's pushes cannot
        take every slot from the others there either.  L{None} for pushes
        spooled before it existed, which count as their C{tenant}.
    """

    signal: str
    tenant: Optional[str]
    body: bytes
    content_type: str
    content_encoding: Optional[str]
    path: str = ""
    extra_headers: Mapping[str, str] = attr.field(factory=dict, converter=_headers)
    received_at: float = 0.0
    owner: Optional[str] = None

    @property
    def share(self) -> Optional[str]:
        """
        Whose share of the upstream's slots this push takes.
        """
        return self.owner if self.owner is not None else self.tenant

    def at_path(self, path: str) -> Push:
        """
        This push sent to C{path}: every push of a route is, once per push,
        so this is a plain copy rather than C{attr.evolve}'s general one.
        """
        if path == self.path:
            return self
        return Push(
            self.signal,
            self.tenant,
            self.body,
            self.content_type,
            self.content_encoding,
            path,
            self.extra_headers,
            self.received_at,
            self.owner,
        )

    def to_bytes(self) -> bytes:
        """
        The push as bytes: C{MAGIC}, a version byte, the length of a JSON
        header (big-endian, 4 bytes), the header, then the body as it is.

        The body stays raw (no base64) so a spool of remote-write batches
        costs their size and no more.
        """
        header = json.dumps(
            {
                "signal": self.signal,
                "tenant": self.tenant,
                "content_type": self.content_type,
                "content_encoding": self.content_encoding,
                "path": self.path,
                "extra_headers": dict(self.extra_headers),
                "received_at": self.received_at,
                "owner": self.owner,
            },
            sort_keys=True,
            separators=(",", ":"),
        ).encode("utf-8")
        return _HEADER.pack(MAGIC, VERSION, len(header)) + header + self.body

    @classmethod
    def from_bytes(cls, data: bytes) -> Push:
        """
        Read back what L{to_bytes} wrote.

        @raise PushFormatError: naming what is wrong, for bytes that are
            not such a push (torn, of another version, or not one at all).
        """
        if len(data) < _HEADER.size:
            raise PushFormatError("serialised push: too short")
        magic, version, length = _HEADER.unpack_from(data)
        if magic != MAGIC:
            raise PushFormatError("serialised push: not a sealgw push")
        if version != VERSION:
            raise PushFormatError(f"serialised push: version {version} is not readable here")
        end = _HEADER.size + length
        if end > len(data):
            raise PushFormatError("serialised push: header runs past the end")
        try:
            header: Any = json.loads(data[_HEADER.size:end].decode("utf-8"))
            push = cls(
                signal=_text(header["signal"]),
                tenant=None if header["tenant"] is None else _text(header["tenant"]),
                body=bytes(data[end:]),
                content_type=_text(header["content_type"]),
                content_encoding=(
                    None
                    if header["content_encoding"] is None
                    else _text(header["content_encoding"])
                ),
                path=_text(header["path"]),
                extra_headers={
                    _text(k): _text(v) for k, v in dict(header["extra_headers"]).items()
                },
                received_at=float(header["received_at"]),
                # Absent from pushes serialised before it existed.
                owner=None if header.get("owner") is None else _text(header["owner"]),
            )
        except (ValueError, KeyError, TypeError) as e:
            raise PushFormatError(f"serialised push: bad header ({e})") from None
        return push


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{value!r} is not a string")
    return value
