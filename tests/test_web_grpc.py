"""
OTLP over gRPC in memory: the wire layer's pure functions, and one
L{GrpcConnection} driven by an C{h2} client over a string transport on a
L{Clock}, with a L{MemoryUpstream} behind the real gate and push routes:
answers and trailers, cancellation, the bounds, the timeouts and a drain.
"""

from __future__ import annotations

import base64
import os
from typing import Any, Optional

import zstandard
from google.rpc import error_details_pb2, status_pb2
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    ResponseReceived,
    StreamEnded,
    StreamReset,
    TrailersReceived,
)
from h2.settings import SettingCodes
from hyperframe.frame import Frame, GoAwayFrame
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from prometheus_client import CollectorRegistry
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from sealgw.auth import build_gate
from sealgw.config import (
    AuthConfig,
    Config,
    HTTPUpstreamConfig,
    ListenerConfig,
    PushConfig,
    RouteConfig,
    TokenFileConfig,
)
from sealgw.relay import Delivery, UpstreamUnavailable
from sealgw.signals.errors import DecodeError
from sealgw.testing import MemoryUpstream
from sealgw.web._metrics import GatewayMetrics
from sealgw.web.grpc import Code, GrpcSite
from sealgw.web.grpc._connection import MAX_BUFFERED_BODIES
from sealgw.web.grpc._wire import code_for, frame, retry_delay, trailers, unframe
from sealgw.web.push import PushRoutes

TRACES = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
TOKENS = "- {name: svc-a, token: tok-a-0123456789, tenants: [team-a]}\n"
MAX_BODY = 4096


class WireTests(SynchronousTestCase):
    def test_unframe(self) -> None:
        self.assertEqual(unframe(frame(b"abc"), None), (b"abc", None))
        self.assertEqual(unframe(b"\x01\x00\x00\x00\x02xy", "gzip"), (b"xy", "gzip"))
        self.assertEqual(unframe(frame(b""), None), (b"", None))

    def test_zstd_message(self) -> None:
        """
        The Collector's C{compression: zstd} names its encoding so.
        """
        self.assertEqual(unframe(b"\x01\x00\x00\x00\x01z", " ZSTD"), (b"z", "zstd"))

    def test_unframe_refusals(self) -> None:
        cases = [
            (b"", None, "grpc: the request holds no message"),
            (b"\x00\x00\x00\x00\x05abc", None, "grpc: the request ends inside its message"),
            (frame(b"a") + frame(b"b"), None, "grpc: a unary call carries one message, this one more"),
            (b"\x02\x00\x00\x00\x00", None, "grpc: unknown message flag 2"),
            (b"\x01\x00\x00\x00\x00", None, "grpc: a compressed message without a grpc-encoding"),
            (
                b"\x01\x00\x00\x00\x00",
                "snappy",
                "grpc: grpc-encoding 'snappy' is not supported "
                "(use one of identity, gzip, deflate, zstd)",
            ),
        ]
        for body, encoding, message in cases:
            error = self.assertRaises(DecodeError, unframe, body, encoding)
            self.assertEqual(error.message, message)

    def test_codes(self) -> None:
        """
        HTTP statuses as the OTLP specification's gRPC codes: only
        UNAVAILABLE, DEADLINE_EXCEEDED and RESOURCE_EXHAUSTED with a
        RetryInfo are retried by exporters.
        """
        self.assertEqual(
            {status: code_for(status) for status in (400, 401, 403, 404, 413, 415, 422, 429, 500, 502, 503, 504)},
            {
                400: Code.INVALID_ARGUMENT,
                401: Code.UNAUTHENTICATED,
                403: Code.PERMISSION_DENIED,
                404: Code.UNIMPLEMENTED,
                413: Code.RESOURCE_EXHAUSTED,
                415: Code.INVALID_ARGUMENT,
                422: Code.INVALID_ARGUMENT,
                429: Code.RESOURCE_EXHAUSTED,
                500: Code.INTERNAL,
                502: Code.UNAVAILABLE,
                503: Code.UNAVAILABLE,
                504: Code.DEADLINE_EXCEEDED,
            },
        )

    def test_retry_delay(self) -> None:
        self.assertEqual(retry_delay(429, None), 1)
        self.assertEqual(retry_delay(429, 30), 30)
        self.assertEqual(retry_delay(503, 7), 7)
        self.assertIsNone(retry_delay(503, None))
        # Too large is never worth retrying; a 4xx never is.
        self.assertIsNone(retry_delay(413, 5))
        self.assertIsNone(retry_delay(400, 5))

    def test_trailers(self) -> None:
        fields = dict(trailers(Code.RESOURCE_EXHAUSTED, "100% über", 3))
        self.assertEqual(fields[b"grpc-status"], b"8")
        self.assertEqual(fields[b"grpc-message"], b"100%25 %C3%BCber")
        padded = fields[b"grpc-status-details-bin"] + b"=="
        status = status_pb2.Status.FromString(base64.b64decode(padded))
        self.assertEqual((status.code, status.message), (8, "100% über"))
        info = error_details_pb2.RetryInfo()
        self.assertTrue(status.details[0].Unpack(info))
        self.assertEqual(info.retry_delay.seconds, 3)
        alone = base64.b64decode(fields[b"google.rpc.retryinfo-bin"] + b"==")
        self.assertEqual(error_details_pb2.RetryInfo.FromString(alone), info)

    def test_trailers_without_retry(self) -> None:
        self.assertEqual(trailers(Code.OK, ""), [(b"grpc-status", b"0")])


class Client:
    """
    An HTTP/2 client on the other end of a L{StringTransport}.
    """

    def __init__(self, site: GrpcSite, window: Optional[int] = None) -> None:
        self.h2 = H2Connection(H2Configuration(client_side=True, header_encoding=None))
        self.h2.initiate_connection()
        if window is not None:
            self.h2.update_settings({SettingCodes.INITIAL_WINDOW_SIZE: window})
        self.transport = StringTransport(peerAddress=IPv4Address("TCP", "10.0.0.7", 5000))
        self.server = site.buildProtocol(None)
        self.server.makeConnection(self.transport)
        self.events: list[Any] = []
        self.pump()

    def pump(self) -> None:
        for _ in range(10):
            outbound = self.h2.data_to_send()
            if outbound:
                self.server.dataReceived(outbound)
            inbound = self.transport.value()
            self.transport.clear()
            if inbound:
                self.events += self.h2.receive_data(inbound)
            if not outbound and not inbound:
                return

    def open(self, path: str = TRACES, metadata: tuple[tuple[str, str], ...] = (), method: str = "POST",
             content_type: str = "application/grpc") -> int:
        stream = self.h2.get_next_available_stream_id()
        headers = [
            (":method", method),
            (":scheme", "http"),
            (":path", path),
            (":authority", "sealgw.test"),
            ("content-type", content_type),
            ("te", "trailers"),
            *metadata,
        ]
        self.h2.send_headers(stream, headers)
        return stream

    def send(self, stream: int, data: bytes, end: bool = True) -> None:
        self.h2.send_data(stream, data, end_stream=end)
        self.pump()

    def call(self, message: bytes, token: str = "tok-a-0123456789", **more: Any) -> int:
        stream = self.open(metadata=(("authorization", f"Bearer {token}"),), **more)
        self.send(stream, frame(message))
        return stream

    def answer(self, stream: int) -> dict[str, Any]:
        """
        What stream C{stream} was answered: headers, message, trailers.
        """
        out: dict[str, Any] = {"headers": {}, "data": b"", "trailers": {}, "ended": False, "reset": False}
        for event in self.events:
            if getattr(event, "stream_id", None) != stream:
                continue
            if isinstance(event, ResponseReceived):
                out["headers"] = dict(event.headers)
            elif isinstance(event, DataReceived):
                out["data"] += event.data
                self.h2.acknowledge_received_data(event.flow_controlled_length, stream)
            elif isinstance(event, TrailersReceived):
                out["trailers"] = dict(event.headers)
            elif isinstance(event, StreamEnded):
                out["ended"] = True
            elif isinstance(event, StreamReset):
                out["reset"] = True
        # A trailers-only answer carries the status in its headers.
        out["status"] = out["trailers"].get(b"grpc-status") or out["headers"].get(b"grpc-status")
        out["message"] = out["trailers"].get(b"grpc-message") or out["headers"].get(b"grpc-message")
        return out


def raw_frames(transport: StringTransport) -> list[Any]:
    """
    The HTTP/2 frames written to C{transport} since it was last read.
    """
    data = transport.value()
    transport.clear()
    frames = []
    while data:
        frame_, length = Frame.parse_frame_header(memoryview(data[:9]))
        frame_.parse_body(memoryview(data[9 : 9 + length]))
        frames.append(frame_)
        data = data[9 + length :]
    return frames


def spans(name: str = "span") -> bytes:
    request = ExportTraceServiceRequest()
    request.resource_spans.add().scope_spans.add().spans.add(name=name)
    return request.SerializeToString()


class ConnectionTests(SynchronousTestCase):
    def setUp(self) -> None:
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        tokens = os.path.join(directory, "tokens.yaml")
        with open(tokens, "w") as f:
            f.write(TOKENS)
        self.clock = Clock()
        self.upstream = MemoryUpstream("tempo")
        config = Config(
            source="test.yaml",
            listeners=(),
            upstreams={"tempo": HTTPUpstreamConfig(name="tempo", url="http://tempo.test")},
            auth=AuthConfig(token_file=TokenFileConfig(path=tokens)),
            push=PushConfig(otlp_traces=RouteConfig(upstream="tempo", path="/v1/traces")),
        )
        self.metrics = GatewayMetrics(CollectorRegistry())
        gate = build_gate(config, self.clock, CollectorRegistry())
        routes = PushRoutes(config, gate, {"tempo": self.upstream}, self.clock, metrics=self.metrics)
        self.listener = ListenerConfig(
            endpoint="tcp:4317", protocol="otlp-grpc", header_timeout=5.0, idle_timeout=60.0
        )
        self.site = GrpcSite(
            routes, self.clock, self.metrics, MAX_BODY, access_log=False, listener=self.listener
        )

    def requests(self, status: str) -> float:
        value = self.metrics.registry.get_sample_value(
            "sealgw_http_requests_total",
            {"route": "otlp_traces", "method": "POST", "status": status, "tenant": "team-a"},
        )
        return value or 0.0

    def test_export(self) -> None:
        client = Client(self.site)
        stream = client.call(spans("checkout"))
        answer = client.answer(stream)
        self.assertEqual(answer["headers"][b":status"], b"200")
        self.assertEqual(answer["headers"][b"content-type"], b"application/grpc")
        self.assertEqual(answer["status"], b"0")
        self.assertTrue(answer["ended"])
        self.assertEqual(ExportTraceServiceResponse.FromString(answer["data"][5:]), ExportTraceServiceResponse())
        [push] = self.upstream.delivered
        self.assertEqual(push.tenant, "team-a")
        self.assertEqual(push.body, spans("checkout"))
        self.assertEqual(self.requests("200"), 1)
        self.assertEqual(self.site.in_flight, 0)

    def test_zstd(self) -> None:
        body = zstandard.ZstdCompressor().compress(spans("zstd"))
        client = Client(self.site)
        stream = client.open(
            metadata=(("authorization", "Bearer tok-a-0123456789"), ("grpc-encoding", "zstd"))
        )
        client.send(stream, b"\x01" + len(body).to_bytes(4, "big") + body)
        self.assertEqual(client.answer(stream)["status"], b"0")
        [push] = self.upstream.delivered
        self.assertEqual((push.body, push.content_encoding), (spans("zstd"), None))

    def test_refused(self) -> None:
        client = Client(self.site)
        stream = client.call(spans(), token="wrong-token-0123456789")
        answer = client.answer(stream)
        self.assertEqual(answer["status"], b"16")
        self.assertEqual(answer["message"], b"the token is not recognised")
        # Trailers only: no message.
        self.assertEqual(answer["data"], b"")
        self.assertEqual(self.upstream.pushes, [])

    def test_upstream_unavailable(self) -> None:
        self.upstream.play(UpstreamUnavailable(503, "tempo is down", retry_after=12.0))
        client = Client(self.site)
        answer = client.answer(client.call(spans()))
        self.assertEqual(answer["status"], b"14")
        self.assertEqual(answer["message"], b"upstream unavailable: tempo is down")
        info = base64.b64decode(answer["headers"][b"google.rpc.retryinfo-bin"] + b"==")
        self.assertEqual(error_details_pb2.RetryInfo.FromString(info).retry_delay.seconds, 12)

    def test_partial_success(self) -> None:
        response = ExportTraceServiceResponse()
        response.partial_success.rejected_spans = 1
        response.partial_success.error_message = "one span too old"
        self.upstream.play(Delivery(status=200, body=response.SerializeToString(), attempts=1))
        client = Client(self.site)
        answer = client.answer(client.call(spans()))
        self.assertEqual(answer["status"], b"0")
        self.assertEqual(ExportTraceServiceResponse.FromString(answer["data"][5:]), response)

    def test_reset_cancels_the_relay(self) -> None:
        """
        A client that gives up on a call (its deadline) cancels the
        upstream request with it.
        """
        cancelled: list[bool] = []
        hanging: Deferred[Delivery] = Deferred(lambda d: cancelled.append(True))
        self.upstream.play(hanging)
        client = Client(self.site)
        stream = client.call(spans())
        self.assertEqual(self.site.in_flight, 1)
        client.h2.reset_stream(stream)
        client.pump()
        self.assertEqual(cancelled, [True])
        self.assertEqual(self.site.in_flight, 0)
        self.assertEqual(self.requests("499"), 1)

    def test_connection_lost_cancels(self) -> None:
        cancelled: list[bool] = []
        self.upstream.play(Deferred(lambda d: cancelled.append(True)))
        client = Client(self.site)
        client.call(spans())
        client.server.connectionLost(None)
        self.assertEqual(cancelled, [True])
        self.assertEqual(self.site.in_flight, 0)

    def test_not_grpc(self) -> None:
        client = Client(self.site)
        stream = client.open(content_type="application/json")
        client.send(stream, b"{}")
        self.assertEqual(client.answer(stream)["headers"][b":status"], b"415")
        stream = client.open(method="GET")
        client.send(stream, b"")
        self.assertEqual(client.answer(stream)["headers"][b":status"], b"405")

    def test_unknown_method(self) -> None:
        client = Client(self.site)
        stream = client.call(spans(), path="/opentelemetry.proto.collector.profiles.v1development.ProfilesService/Export")
        answer = client.answer(stream)
        self.assertEqual(answer["status"], b"12")

    def test_route_not_enabled(self) -> None:
        client = Client(self.site)
        stream = client.call(b"", path="/opentelemetry.proto.collector.logs.v1.LogsService/Export")
        answer = client.answer(stream)
        self.assertEqual(answer["status"], b"12")
        self.assertEqual(answer["message"], b"otlp_logs is not enabled on this gateway")

    def test_too_large(self) -> None:
        """
        A body past C{max_body} is refused as it arrives, not kept, and
        the client told to stop sending.
        """
        client = Client(self.site)
        stream = client.open(metadata=(("authorization", "Bearer tok-a-0123456789"),))
        client.send(stream, b"\x00" * (MAX_BODY + 6), end=False)
        answer = client.answer(stream)
        self.assertEqual(answer["status"], b"8")
        self.assertNotIn(b"google.rpc.retryinfo-bin", answer["headers"])
        self.assertTrue(answer["reset"])
        self.assertEqual(client.server.buffered, 0)
        self.assertEqual(self.upstream.pushes, [])

    def test_connection_bound(self) -> None:
        """
        The bodies one connection holds at once are bounded: a call that
        would go past is refused with RESOURCE_EXHAUSTED and a RetryInfo,
        and the others go on.
        """
        client = Client(self.site)
        auth = (("authorization", "Bearer tok-a-0123456789"),)
        streams = []
        for _ in range(MAX_BUFFERED_BODIES + 1):
            streams.append(client.open(metadata=auth))
            client.send(streams[-1], b"\x00" * (MAX_BODY - 500), end=False)
        last = client.answer(streams[-1])
        self.assertEqual(last["status"], b"8")
        self.assertIn(b"google.rpc.retryinfo-bin", last["headers"])
        self.assertEqual([client.answer(s)["status"] for s in streams[:-1]], [None] * MAX_BUFFERED_BODIES)
        held = sum(client.server.calls[s].held for s in streams[:-1])
        self.assertEqual(client.server.buffered, held)
        self.assertGreater(held, MAX_BUFFERED_BODIES * (MAX_BODY - 500))

    def test_small_client_window(self) -> None:
        """
        A client that offers a window smaller than the answer gets it in
        pieces as it opens the window.
        """
        response = ExportTraceServiceResponse()
        response.partial_success.error_message = "w" * 100
        self.upstream.play(Delivery(status=200, body=response.SerializeToString(), attempts=1))
        client = Client(self.site, window=10)
        stream = client.call(spans())
        self.assertFalse(client.answer(stream)["ended"])
        for _ in range(20):
            client.answer(stream)  # acknowledges what arrived
            client.pump()
        answer = client.answer(stream)
        self.assertTrue(answer["ended"])
        self.assertEqual(ExportTraceServiceResponse.FromString(answer["data"][5:]), response)

    def test_header_timeout(self) -> None:
        client = Client(self.site)
        self.clock.advance(4.9)
        self.assertFalse(client.transport.disconnecting)
        self.clock.advance(0.2)
        self.assertTrue(client.transport.disconnecting)

    def test_unfinished_calls_do_not_hold_the_connection(self) -> None:
        """
        Calls opened and never finished are not work the gateway is
        doing: the idle timeout closes their connection all the same.
        """
        client = Client(self.site)
        stream = client.open(metadata=(("authorization", "Bearer tok-a-0123456789"),))
        client.send(stream, b"\x00\x00", end=False)
        self.assertEqual(self.site.in_flight, 1)
        self.clock.advance(61)
        self.assertTrue(client.transport.disconnecting)
        client.server.connectionLost(None)
        self.assertEqual(self.site.in_flight, 0)
        self.assertEqual(client.server.buffered, 0)

    def test_heads_count_against_the_bound(self) -> None:
        """
        Heads alone, calls opened and never finished, fill the
        connection's bound like bodies: past it a call is refused.
        """
        client = Client(self.site)
        padding = (("x-padding", "p" * 2000),)
        streams = []
        for _ in range(MAX_BUFFERED_BODIES * MAX_BODY // 2000 + 2):
            streams.append(client.open(metadata=padding))
            client.pump()
        statuses = [client.answer(s)["status"] for s in streams]
        self.assertEqual(statuses[0], None)
        self.assertEqual(statuses[-1], b"8")
        self.assertLessEqual(
            client.server.buffered, MAX_BUFFERED_BODIES * MAX_BODY + 2100
        )

    def test_idle_timeout_not_while_working(self) -> None:
        hanging: Deferred[Delivery] = Deferred()
        self.upstream.play(hanging)
        client = Client(self.site)
        stream = client.call(spans())
        self.clock.advance(61)
        self.assertFalse(client.transport.disconnecting)
        hanging.callback(Delivery(status=200, body=b"", attempts=1))
        client.pump()
        self.assertEqual(client.answer(stream)["status"], b"0")
        self.clock.advance(61)
        self.assertTrue(client.transport.disconnecting)
        client.pump()
        self.assertTrue(any(isinstance(e, ConnectionTerminated) for e in client.events))

    def test_drain(self) -> None:
        """
        A drain sends GOAWAY: the call in flight is answered, a new one is
        refused as UNAVAILABLE, and the connection closes once idle.
        """
        hanging: Deferred[Delivery] = Deferred()
        self.upstream.play(hanging)
        client = Client(self.site)
        first = client.call(spans())
        idle = self.site.wait_idle()
        self.site.begin_drain()
        # h2's client gives up on every stream at a GOAWAY (grpcio's does
        # not): the frames are read here as they come.
        [goaway] = raw_frames(client.transport)
        self.assertIsInstance(goaway, GoAwayFrame)
        self.assertEqual(goaway.last_stream_id, first)
        self.assertFalse(client.transport.disconnecting)
        self.assertNoResult(idle)
        hanging.callback(Delivery(status=200, body=b"", attempts=1))
        answer = raw_frames(client.transport)
        self.assertEqual(
            [(type(f).__name__, f.stream_id, "END_STREAM" in f.flags) for f in answer],
            [("HeadersFrame", 1, False), ("DataFrame", 1, False), ("HeadersFrame", 1, True)],
        )
        self.assertEqual(self.requests("200"), 1)
        self.successResultOf(idle)
        self.assertTrue(client.transport.disconnecting)

    def test_protocol_error_closes(self) -> None:
        client = Client(self.site)
        # DATA on stream 0, which HTTP/2 forbids.
        client.server.dataReceived(b"\x00\x00\x01\x00\x00\x00\x00\x00\x00x")
        self.assertTrue(client.transport.disconnecting)
