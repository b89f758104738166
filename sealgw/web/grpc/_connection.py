"""
One gRPC client connection: HTTP/2 framing by C{h2}, on the reactor
thread, unary calls collected, handed to the OTLP services, and answered
with a message and trailers (which Twisted's own HTTP/2 server cannot
send).

Every cost a client can cause is bounded before it is paid: a call's body
by C{limits.max_body}, the bodies held at once on one connection by
L{MAX_BUFFERED_BODIES} of them, its metadata by the listener's
C{max_header_size}, its calls at once by L{MAX_CONCURRENT_STREAMS}, and a
silent connection by the listener's timeouts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    RequestReceived,
    StreamEnded,
    StreamReset,
    WindowUpdated,
)
from h2.exceptions import H2Error
from h2.settings import SettingCodes, Settings
from hyperframe.frame import GoAwayFrame
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.protocols.policies import TimeoutMixin
from twisted.python.failure import Failure
from twisted.web.http_headers import Headers

from sealgw.web.grpc._call import Call, CallPeer
from sealgw.web.grpc._services import METHODS, Answer
from sealgw.web.grpc._wire import CONTENT_TYPE, ENCODINGS, PREFIX, Code, trailers
from sealgw.web.push import PushCall

if TYPE_CHECKING:
    from sealgw.web.grpc._site import GrpcSite

#: Calls one connection may have open at once (gRPC's servers default to
#: 100 too); the client queues any more.
MAX_CONCURRENT_STREAMS = 100

#: How many bodies of C{max_body} one connection may hold at once, all its
#: calls together; a call that would go past is refused with
#: C{RESOURCE_EXHAUSTED} and a C{RetryInfo}, and retried.
MAX_BUFFERED_BODIES = 4

#: The flow-control windows offered: a body of a few MiB arrives in a few
#: round trips rather than one per 64 KiB.  What arrives is acknowledged
#: at once (it is counted against the bounds above instead).
WINDOW = 1024 * 1024

_ACCEPT_ENCODING = ",".join(ENCODINGS).encode("ascii")


class GrpcConnection(Protocol, TimeoutMixin):
    """
    HTTP/2 carrying gRPC calls, server side.

    @ivar site: the L{GrpcSite} of the listener.
    """

    log = Logger()
    transport: Any

    def __init__(self, site: GrpcSite) -> None:
        self.site = site
        self.calls: dict[int, Call] = {}
        self.buffered = 0
        self.closing = False
        self._seen_request = False
        self._lost = False
        # What is sent is built here, lowercase and valid: h2 need not
        # check it again; what arrives is checked.
        config = H2Configuration(
            client_side=False,
            header_encoding=None,
            validate_outbound_headers=False,
            normalize_outbound_headers=False,
        )
        self.h2 = H2Connection(config=config)
        self.h2.local_settings = Settings(
            client=False,
            initial_values={
                SettingCodes.MAX_CONCURRENT_STREAMS: MAX_CONCURRENT_STREAMS,
                SettingCodes.MAX_HEADER_LIST_SIZE: site.max_header_size,
                SettingCodes.INITIAL_WINDOW_SIZE: WINDOW,
            },
        )

    # -- the connection ---------------------------------------------------

    def connectionMade(self) -> None:
        # An answer is written as one piece, often right after a small
        # WINDOW_UPDATE: with Nagle's algorithm it would wait for the
        # client's delayed ACK of that (up to 40 ms a call), as grpcio's
        # own transports know.  TLS and the connection limit wrap the TCP
        # transport and pass the call on.
        no_delay = getattr(self.transport, "setTcpNoDelay", None)
        if callable(no_delay):
            try:
                no_delay(True)
            except OSError:
                pass  # not TCP (a unix socket)
        # TimeoutMixin's timers, on the site's reactor (a Clock in tests).
        self.callLater = self.site.reactor.callLater  # type: ignore[method-assign]
        # The first call's headers must come within the header timeout;
        # after that the connection may be idle for the idle timeout.
        self.setTimeout(self.site.header_timeout)
        self.site.connection_opened(self)
        self.h2.initiate_connection()
        self.h2.increment_flow_control_window(WINDOW)
        self._flush()

    def dataReceived(self, data: bytes) -> None:
        if self._lost:
            return
        if self._seen_request:
            self.resetTimeout()
        try:
            events = self.h2.receive_data(data)
        except H2Error as e:
            self.log.debug("HTTP/2 error from {peer}: {error}", peer=self._peer(), error=e)
            self._flush()
            self.transport.loseConnection()
            return
        for event in events:
            if isinstance(event, RequestReceived):
                self._request(event.stream_id, event.headers)
            elif isinstance(event, DataReceived):
                self._data(event.stream_id, event.data, event.flow_controlled_length)
            elif isinstance(event, StreamEnded):
                self._ended(event.stream_id)
            elif isinstance(event, StreamReset):
                self._reset(event.stream_id)
            elif isinstance(event, WindowUpdated):
                self._window_opened(event.stream_id)
            elif isinstance(event, ConnectionTerminated):
                self.closing = True
        self._flush()
        self._close_if_done()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._lost = True
        self.setTimeout(None)
        for call in list(self.calls.values()):
            self._forget(call, status=None)
        self.site.connection_closed(self)

    def timeoutConnection(self) -> None:
        if any(call.ended and not call.answered for call in self.calls.values()):
            # Waiting on an upstream is not idleness.
            self.setTimeout(self.site.idle_timeout)
            return
        # Silent, or holding calls open that it does not finish sending:
        # those are dropped with the connection.
        self.go_away()
        self.transport.loseConnection()

    def go_away(self) -> None:
        """
        Tell the client to open no more calls here (a drain, a timeout):
        those open are answered, and the connection then closed.
        """
        if self.closing or self._lost:
            return
        self.closing = True
        # Written by hand: h2's own close_connection would close the
        # connection's state at once, and the calls still open could not
        # be answered.  New calls are refused (see _request) until the
        # client, told, stops opening them.
        self._flush()
        goaway = GoAwayFrame(
            stream_id=0,
            last_stream_id=self.h2.highest_inbound_stream_id,
            error_code=ErrorCodes.NO_ERROR,
        )
        self.transport.write(goaway.serialize())
        self._close_if_done()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abortConnection()

    def _flush(self) -> None:
        data = self.h2.data_to_send()
        if data and not self._lost:
            self.transport.write(data)

    def _close_if_done(self) -> None:
        if self.closing and not self.calls and not self._lost:
            self.transport.loseConnection()

    def _peer(self) -> str:
        address = self.transport.getPeer() if self.transport is not None else None
        return str(getattr(address, "host", "-"))

    # -- calls ------------------------------------------------------------

    def _request(self, stream_id: int, raw: list[tuple[bytes, bytes]]) -> None:
        if not self._seen_request:
            self._seen_request = True
            self.setTimeout(self.site.idle_timeout)
        pseudo: dict[bytes, bytes] = {}
        headers = Headers()
        for name, value in raw:
            if name.startswith(b":"):
                pseudo[name] = value
            else:
                headers.addRawHeader(name, value)
        path = pseudo.get(b":path", b"")
        method = pseudo.get(b":method", b"")
        signal = METHODS.get(path.decode("latin-1"))
        call = Call(
            stream_id=stream_id,
            signal=signal,
            headers=headers,
            started=self.site.reactor.seconds(),
            method=method,
            path=path,
        )
        self.calls[stream_id] = call
        self.site.call_started()
        # A call's metadata counts against the connection's bound with
        # the bodies: a hundred calls opened and never finished would
        # otherwise hold a hundred heads.
        call.held = sum(len(name) + len(value) + 32 for name, value in raw)
        self.buffered += call.held
        content_type = headers.getRawHeaders(b"content-type", [b""])[0]
        if self.closing:
            self._refuse(call, Code.UNAVAILABLE, "the gateway is shutting down", 503, 1)
        elif self.buffered > self.site.max_body * MAX_BUFFERED_BODIES:
            self._refuse_busy(call)
        elif method != b"POST" or not content_type.startswith(CONTENT_TYPE):
            # Not gRPC: HTTP's own answer, as the gRPC spec asks.
            status = 405 if method != b"POST" else 415
            self._send(call, [(b":status", str(status).encode("ascii"))], None, [], status)
        elif signal is None:
            self._refuse(
                call, Code.UNIMPLEMENTED, f"unknown method {path.decode('latin-1')!r}", 404
            )

    def _data(self, stream_id: int, data: bytes, flow_controlled: int) -> None:
        # Whatever happens to it, what arrived is acknowledged: the
        # bounds below count it instead of the client's window.
        try:
            self.h2.acknowledge_received_data(flow_controlled, stream_id)
        except H2Error:
            pass
        call = self.calls.get(stream_id)
        if call is None or call.answered:
            return
        call.received += len(data)
        limit = self.site.max_body + PREFIX
        if call.received > limit:
            self._refuse(
                call,
                Code.RESOURCE_EXHAUSTED,
                f"message is larger than the limit of {self.site.max_body} bytes",
                413,
            )
            return
        if self.buffered + len(data) > self.site.max_body * MAX_BUFFERED_BODIES:
            self._refuse_busy(call)
            return
        call.body.append(data)
        call.held += len(data)
        self.buffered += len(data)

    def _refuse_busy(self, call: Call) -> None:
        self._refuse(
            call,
            Code.RESOURCE_EXHAUSTED,
            "too many large calls at once on this connection; retry shortly",
            429,
            1,
        )

    def _ended(self, stream_id: int) -> None:
        call = self.calls.get(stream_id)
        if call is None:
            return
        call.ended = True
        if call.answered or call.signal is None:
            return
        body = b"".join(call.body)
        call.body = []
        encoding = call.headers.getRawHeaders(b"grpc-encoding", [None])[0]
        peer = CallPeer(call.headers, self)
        push_call = PushCall(
            peer=peer,
            record=call.record,
            body=body,
            body_size=call.received,
            content_type="application/x-protobuf",
            client_ip=self.site.client_address.of(peer),
            listener_identity=self.site.listener_identity,
        )
        d = Deferred.fromCoroutine(
            self.site.services.export(
                call.signal,
                push_call,
                encoding.decode("latin-1") if encoding is not None else None,
            )
        )
        call.deferred = d
        d.addCallbacks(self._answer, self._failed, callbackArgs=(call,), errbackArgs=(call,))

    def _reset(self, stream_id: int) -> None:
        call = self.calls.get(stream_id)
        if call is not None:
            self._forget(call, status=None)

    def _answer(self, answer: Answer, call: Call) -> None:
        call.deferred = None
        if self._lost or self.calls.get(call.stream_id) is not call:
            return
        if answer.code == Code.OK:
            assert answer.response is not None
            self._send(
                call,
                self._response_headers(),
                answer.response,
                trailers(Code.OK, ""),
                answer.status,
            )
        else:
            self._refuse(call, answer.code, answer.message, answer.status, answer.retry_after)
        self._flush()
        self._close_if_done()

    def _failed(self, failure: Failure, call: Call) -> None:
        call.deferred = None
        if failure.check(CancelledError):
            return
        self.log.failure("unexpected error in a gRPC call to {path}", failure, path=call.path)
        if self._lost or self.calls.get(call.stream_id) is not call:
            return
        self._refuse(call, Code.INTERNAL, "internal error; the data was not accepted", 500)
        self._flush()
        self._close_if_done()

    def _refuse(
        self,
        call: Call,
        code: Code,
        message: str,
        status: int,
        retry_after: Optional[int] = None,
    ) -> None:
        """
        Answer trailers only: the status, no message.
        """
        self._send(call, [*self._response_headers(), *trailers(code, message, retry_after)],
                   None, [], status)

    def _response_headers(self) -> list[tuple[bytes, bytes]]:
        return [
            (b":status", b"200"),
            (b"content-type", CONTENT_TYPE),
            (b"grpc-accept-encoding", _ACCEPT_ENCODING),
        ]

    def _send(
        self,
        call: Call,
        headers: list[tuple[bytes, bytes]],
        message: Optional[bytes],
        trailing: list[tuple[bytes, bytes]],
        status: int,
    ) -> None:
        call.answered = True
        call.status = status
        self._release(call)
        try:
            self.h2.send_headers(call.stream_id, headers, end_stream=message is None)
        except H2Error:
            # The stream was closed under us (the client reset it).
            self._forget(call, status=None)
            return
        call.bytes_out = len(message) if message is not None else 0
        if message is None:
            if not call.ended:
                # Answered before the client finished sending (too large,
                # refused early): tell it to stop, as gRPC servers do.
                try:
                    self.h2.reset_stream(call.stream_id, ErrorCodes.NO_ERROR)
                except H2Error:
                    pass
            self._done(call, status)
            return
        call.pending = (message, trailing)
        self._window_opened(call.stream_id)

    def _window_opened(self, stream_id: int) -> None:
        calls = [self.calls[stream_id]] if stream_id in self.calls else list(self.calls.values())
        for call in calls:
            if call.pending is None:
                continue
            message, trailing = call.pending
            try:
                window = min(
                    self.h2.local_flow_control_window(call.stream_id),
                    self.h2.max_outbound_frame_size,
                )
                if window < len(message):
                    # Answers are a few bytes; a client that offers less
                    # room waits for it, in pieces.
                    if window > 0:
                        self.h2.send_data(call.stream_id, message[:window])
                        call.pending = (message[window:], trailing)
                    continue
                self.h2.send_data(call.stream_id, message)
                self.h2.send_headers(call.stream_id, trailing, end_stream=True)
            except H2Error:
                self._forget(call, status=None)
                continue
            call.pending = None
            self._done(call, call.status)

    def _done(self, call: Call, status: int) -> None:
        self.calls.pop(call.stream_id, None)
        self.site.call_finished(call, status, self._peer())

    def _forget(self, call: Call, status: Optional[int]) -> None:
        """
        A call that ends unanswered (reset by the client, or its
        connection lost): its work is cancelled, upstream included.
        """
        self._release(call)
        self.calls.pop(call.stream_id, None)
        d, call.deferred = call.deferred, None
        if d is not None:
            d.cancel()
        self.site.call_finished(call, status, self._peer())

    def _release(self, call: Call) -> None:
        self.buffered -= call.held
        call.held = 0
        call.body = []
