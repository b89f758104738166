"""
One gRPC call's state on its connection, from its headers to its answer,
and the call as the gate sees a request.
"""

from __future__ import annotations

from typing import Any, Optional

import attr
from twisted.internet.defer import Deferred
from twisted.web.http_headers import Headers

from sealgw.web._request import RequestRecord
from sealgw.web.grpc._services import Answer


@attr.define(eq=False)
class Call:
    """
    One call on the connection, from its headers to its answer.
    """

    stream_id: int
    signal: Optional[str]
    headers: Headers
    started: float
    method: bytes
    path: bytes
    body: list[bytes] = attr.Factory(list)
    received: int = 0
    # Body bytes counted against the connection's bound until the call
    # is over (while it is decoded and relayed too).
    held: int = 0
    status: int = 200
    # Whether the client has sent all of the call (its END_STREAM).
    ended: bool = False
    # Set once the call is answered (or refused early): data still
    # arriving for it is dropped.
    answered: bool = False
    deferred: Optional[Deferred[Answer]] = None
    # An answer waiting for the client's flow-control window.
    pending: Optional[tuple[bytes, list[tuple[bytes, bytes]]]] = None
    record: RequestRecord = attr.Factory(RequestRecord)
    bytes_out: int = 0


@attr.frozen
class CallPeer:
    """
    The call as the gate sees a request: its metadata as headers, and the
    connection for its client certificate.
    """

    requestHeaders: Headers
    channel: Any

    def getClientAddress(self) -> Any:
        transport = getattr(self.channel, "transport", None)
        return transport.getPeer() if transport is not None else None
