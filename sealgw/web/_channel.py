"""
HTTP/1.1 connections with bounds on the request head: how large it may be
and how long it may take to arrive, and what its framing and C{Host} must
look like.  A client over a bound, or with a head that cannot be trusted,
is told so with a status and an access line, never by a silently closed
connection or an internal error.
"""

from __future__ import annotations

from typing import Any, Optional

from twisted.internet.interfaces import IDelayedCall, ISSLTransport
from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure
from twisted.web.http import HTTPChannel

from sealgw.web._errors import early_answer
from sealgw.web._host import host_problem


class GatewayChannel(HTTPChannel):
    """
    One client connection.

    Twisted's channel already limits the head (its C{totalHeadersSize},
    C{maxHeaders} and, per line, C{MAX_LENGTH}) but answers a head over
    them with a bare 400, or, for one overlong line such as a 1 MB
    C{Authorization} header, closes the connection without a word.  Here
    both are one limit, the listener's C{max_header_size}, and going over
    it is answered 431.

    The head deadline starts when the connection does (so a client that
    connects and sends nothing is cut too) and, on a kept-alive
    connection, when the first byte of the next request arrives: the wait
    between requests is the idle timeout's business, not this one's.  A
    client sending its head a byte at a time resets the idle timeout with
    every byte, so without this deadline it could hold the connection for
    ever.

    The head is also held to RFC 9112 where Twisted is lenient, since a
    head two parsers could read differently is how requests are smuggled
    past a proxy: exactly one valid C{Host} (none only in HTTP/1.0; see
    L{sealgw.web._host}), no obsolete line folding, and no transfer coding
    but C{chunked} (none in HTTP/1.0).  Each is answered 400 and the
    connection closed.  A request target in absolute form
    (C{http://host/path}) is served as its path, once its host is found
    valid and the same as C{Host}'s.  This is decided here, line by line,
    before Twisted reads the head, because once it has, the request is
    routed at once: there is no later point to refuse it.

    @ivar site: the L{sealgw.web.GatewaySite} that built this channel; it
        holds the listener's limits and writes the access line.
    """

    site: Any
    _head_deadline: Optional[IDelayedCall] = None
    _head_started = 0.0
    # Between connectionMade and the end of the head, and again once an
    # answer is done on a connection kept alive.
    _awaiting_head = True
    # Whether any byte of the awaited head has arrived.
    _head_seen = False
    _refused = False
    _lost = False
    _secure: Optional[bool] = None
    # The head being read: whether its request line has come, and what the
    # end of the head is judged on.
    _in_fields = False
    _http11 = True
    _authority: Optional[bytes] = None
    _host: Optional[bytes] = None
    _hosts = 0
    # The last Host found valid on this connection: a kept-alive client
    # sends the same one with every request, and need not be judged again.
    _good_host: Optional[bytes] = None

    def connectionMade(self) -> None:
        limit = self.site.max_header_size
        self.MAX_LENGTH = limit
        self.totalHeadersSize = limit
        super().connectionMade()
        self._arm_head_deadline()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._lost = True
        self._cancel_head_deadline()
        super().connectionLost(reason)

    def isSecure(self) -> bool:
        # Asked several times for every request (the router asks twice);
        # Twisted answers with an interface lookup on the transport, which
        # is the same for the connection's whole life.
        if self._secure is None:
            self._secure = bool(super().isSecure())
        return self._secure

    # -- the head arriving -------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        if self._awaiting_head:
            self._head_arrived()
        super().dataReceived(data)

    def lineReceived(self, line: bytes) -> None:
        if self._awaiting_head:
            # Lines of a pipelined request come from the channel's buffer,
            # not through dataReceived.
            self._head_arrived()
        if self._receivedHeaderSize + len(line) > self.totalHeadersSize:
            self._refuse_head(431, self._too_large())
            return
        if self._in_fields:
            if line:
                if not self._field_line(line):
                    return
            else:
                self._in_fields = False
                problem = self._head_problem()
                if problem is not None:
                    self._refuse_head(400, problem)
                    return
        elif line and self.persistent:
            request_line = self._request_line(line)
            if request_line is None:
                return
            line = request_line
        super().lineReceived(line)

    def lineLengthExceeded(self, line: bytes) -> None:
        self._refuse_head(431, self._too_large())

    def headerReceived(self, line: bytes) -> bool:
        if self._receivedHeaderCount >= self.maxHeaders:
            self._refuse_head(431, f"the request has more than {self.maxHeaders} header fields")
            return False
        ok: bool = super().headerReceived(line)
        return ok

    def allHeadersReceived(self) -> None:
        self._awaiting_head = False
        self._head_seen = False
        self._cancel_head_deadline()
        super().allHeadersReceived()

    def requestDone(self, request: Any) -> None:
        if self.persistent:
            # Set before Twisted replays pipelined bytes, which may hold
            # the next head (or all of it).
            self._awaiting_head = True
            self._head_seen = False
        super().requestDone(request)
        if self._awaiting_head and self._buffer and not self._refused:
            self._head_arrived()

    def _respondToBadRequestAndDisconnect(self) -> None:
        # Twisted's answer to a malformed request line, header or chunk is
        # a bare "400 Bad Request" with no body and no access line.
        if self._awaiting_head or not self.requests:
            self._refuse_head(400, "malformed request line or header")
        else:
            self.requests[-1].answer_early(400, "malformed request body")

    # -- what the head says -----------------------------------------------

    def _request_line(self, line: bytes) -> Optional[bytes]:
        """
        Note what the end of the head is judged on, and turn an absolute
        target into the path it names.

        @return: the line for Twisted to parse, or L{None} when it was
            refused.
        """
        self._in_fields = True
        self._hosts = 0
        self._host = None
        self._authority = None
        method, _, rest = line.partition(b" ")
        target, _, version = rest.partition(b" ")
        self._http11 = version == b"HTTP/1.1"
        if target[:1] == b"/":
            return line
        scheme, is_url, after = target.partition(b"://")
        if not is_url:
            # "*", or no URL at all: Twisted parses it, the routers refuse it.
            return line
        if scheme.lower() not in (b"http", b"https"):
            self._refuse_head(400, "the request target is a URL but not an http(s) one")
            return None
        end = len(after)
        for stop in (b"/", b"?"):
            at = after.find(stop, 0, end)
            if at != -1:
                end = at
        authority, path = after[:end], after[end:]
        problem = host_problem(authority)
        if problem is not None:
            # Never echoed nor logged: it may hold a password (user:pw@host).
            self._refuse_head(400, f"bad host in the request target: {problem}")
            return None
        self._authority = authority
        if path[:1] != b"/":
            path = b"/" + path
        return b"%s %s %s" % (method, path, version)

    def _field_line(self, line: bytes) -> bool:
        """
        Look at one header line before Twisted does.

        @return: whether the head may go on being read.
        """
        first = line[0]
        if first in b" \t":
            self._refuse_head(
                400, "a header line starts with whitespace (obsolete line folding)"
            )
            return False
        if first in b"Hh" and line[:5].lower() == b"host:":
            self._hosts += 1
            self._host = line[5:].strip(b" \t")
        elif first in b"Tt" and line[:18].lower() == b"transfer-encoding:":
            if not self._http11:
                self._refuse_head(400, "an HTTP/1.0 request cannot have a Transfer-Encoding")
                return False
            if line[18:].strip(b" \t").lower() != b"chunked":
                self._refuse_head(400, "the only Transfer-Encoding accepted is chunked")
                return False
        return True

    def _head_problem(self) -> Optional[str]:
        """
        What is wrong with the head just read, judged on its C{Host}, or
        L{None}.
        """
        host = self._host
        if self._hosts > 1:
            return "the request has more than one Host header"
        if host is None:
            if self._http11:
                return "an HTTP/1.1 request must have a Host header"
            return None
        if host != self._good_host:
            problem = host_problem(host)
            if problem is not None:
                return f"bad Host header: {problem}"
            self._good_host = host
        if self._authority is not None and host.lower() != self._authority.lower():
            return "the Host header and the request target name different hosts"
        return None

    # -- the deadline ------------------------------------------------------

    def _head_arrived(self) -> None:
        self._head_seen = True
        if self._head_deadline is None and not self._refused:
            self._arm_head_deadline()

    def _arm_head_deadline(self) -> None:
        self._head_started = self.site.reactor.seconds()
        self._head_deadline = self.callLater(self.site.header_timeout, self._head_timed_out)

    def _cancel_head_deadline(self) -> None:
        if self._head_deadline is not None:
            if self._head_deadline.active():
                self._head_deadline.cancel()
            self._head_deadline = None

    def _head_timed_out(self) -> None:
        self._head_deadline = None
        self.site.header_timed_out()
        if self._head_seen:
            self._refuse_head(
                408, f"the request head did not arrive within {self.site.header_timeout:g}s"
            )
        else:
            # Nothing was asked, so nothing is answered or logged: a
            # load balancer's TCP check would otherwise fill the log.
            self._refused = True
            self._close()

    # -- saying no ---------------------------------------------------------

    def _too_large(self) -> str:
        return f"the request head is larger than the limit of {self.totalHeadersSize} bytes"

    def _refuse_head(self, status: int, message: str) -> None:
        """
        Answer C{status} before the request could be routed, log it, and
        close the connection; whatever else the client sends is dropped
        unread.
        """
        if self._refused:
            return
        self._refused = True
        self._awaiting_head = False
        self._cancel_head_deadline()
        answer = early_answer(status, message)
        transport: Any = self.transport
        transport.write(answer)
        self.site.head_refused(
            peer=transport.getPeer(),
            status=status,
            method=getattr(self, "_command", None),
            uri=getattr(self, "_path", None),
            bytes_out=len(answer.partition(b"\r\n\r\n")[2]),
            seconds=self.site.reactor.seconds() - self._head_started,
        )
        self._buffer = b""
        self.dataReceived = _drop  # type: ignore[method-assign]
        self._close(linger=True)

    def _close(self, linger: bool = False) -> None:
        """
        @param linger: the client may still be sending (the rest of a head
            too large): end our side but go on reading, and dropping, what
            it sends.  Closing with unread bytes makes the kernel reset the
            connection, and a client busy writing might then never read
            the answer.  TLS needs no help: it waits for the client's
            close_notify after sending its own.
        """
        half_close = getattr(self.transport, "loseWriteConnection", None)
        if linger and half_close is not None and not ISSLTransport.providedBy(self.transport):
            producer: Any = self._networkProducer
            producer.unregisterProducer()
            half_close()
        else:
            self.loseConnection()
        # A client that does not read what we wrote could keep the socket
        # open; cut it after Twisted's abortTimeout, as its own idle
        # timeout does.
        if self.abortTimeout is not None and self._abortingCall is None and not self._lost:
            self._abortingCall = self.callLater(self.abortTimeout, self.forceAbortClient)


def _drop(data: bytes) -> None:
    pass
