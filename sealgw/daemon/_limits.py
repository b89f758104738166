"""
How many connections one listener holds open at once.
"""

from __future__ import annotations

from typing import Any, Optional

from prometheus_client import Counter, Gauge
from twisted.internet.interfaces import IAddress, IProtocolFactory
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory


class ConnectionLimit(WrappingFactory):
    """
    Wraps a listener's factory (outside TLS, so that a refused connection
    costs no handshake) and closes every connection accepted while
    C{max_connections} are open.

    A closed connection is cheaper for everyone than one that waits: the
    client sees the close at once and can retry elsewhere, and the
    gateway keeps its file descriptors and memory for the clients it is
    serving.  Slots come back as the head deadline and the idle timeout
    close the connections that hold them without using them.

    Refusals are counted; the log says when refusing starts and when it
    stops, not once per connection, so a flood does not become a flood of
    log lines too.
    """

    log = Logger()
    noisy = False

    def __init__(
        self,
        wrapped: IProtocolFactory,
        max_connections: int,
        listener: str,
        open_gauge: Optional[Gauge] = None,
        refused_counter: Optional[Counter] = None,
    ) -> None:
        super().__init__(wrapped)
        self.max_connections = max_connections
        self.listener = listener
        self._open = open_gauge.labels(listener) if open_gauge is not None else None
        self._refused = refused_counter.labels(listener) if refused_counter is not None else None
        self.refused = 0
        self._refused_since_full = 0

    # Twisted's ports take None from any factory (IProtocolFactory says
    # so); WrappingFactory's annotation does not.
    def buildProtocol(  # type: ignore[override]
        self, addr: Optional[IAddress]
    ) -> Optional[ProtocolWrapper]:
        if len(self.protocols) >= self.max_connections:
            self.refused += 1
            if self._refused is not None:
                self._refused.inc()
            if self._refused_since_full == 0:
                self.log.warn(
                    "{listener}: {max} connections open (max_connections); "
                    "closing new connections until some end",
                    listener=self.listener,
                    max=self.max_connections,
                )
            self._refused_since_full += 1
            # The port closes a connection its factory builds no protocol for.
            return None
        protocol: ProtocolWrapper = super().buildProtocol(addr)
        return protocol

    def registerProtocol(self, p: Any) -> None:
        super().registerProtocol(p)
        self._count()

    def unregisterProtocol(self, p: Any) -> None:
        super().unregisterProtocol(p)
        self._count()
        if self._refused_since_full and len(self.protocols) < self.max_connections:
            self.log.info(
                "{listener}: accepting connections again; {refused} were closed meanwhile",
                listener=self.listener,
                refused=self._refused_since_full,
            )
            self._refused_since_full = 0

    def _count(self) -> None:
        if self._open is not None:
            self._open.set(len(self.protocols))
