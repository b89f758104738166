"""
The push routes: authenticate, decode and check the body in its wire
format, and relay it with the tenant set.  What the client hears back
follows the upstream: 2xx only for data that arrived, the upstream's own
4xx for data it refused, and a status the client retries on otherwise.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable, Mapping
from typing import Any, Optional

import attr
from google.protobuf import json_format
from google.rpc import status_pb2
from klein import Klein
from twisted.internet.defer import CancelledError
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.web.iweb import IRequest
from werkzeug.exceptions import HTTPException

from sealgw.auth import Admission, AuthError, Gate
from sealgw.config import Config, LabelActions, RouteConfig
from sealgw.relay import DeliveryFailed, IUpstream, Push, UpstreamRejected
from sealgw.signals import (
    BadEncoding,
    PayloadError,
    UnsupportedMediaType,
    decode_body,
    loki,
    otlp,
    remote_write,
    seal,
)
from sealgw.signals._media import parse_media_type
from sealgw.web._client_ip import ClientAddress
from sealgw.web._errors import answer_error, answer_routing_error

REMOTE_WRITE_VERSION = "0.1.0"

#: Bodies this large (as sent) are decoded and checked in a worker thread,
#: so that one huge push does not hold up every other request on the
#: reactor thread for the whole of its parsing.  Ordinary batches (a
#: 2,000-sample remote write is about 40 KiB) stay on the reactor thread:
#: with the GIL the hand-off buys no parallelism and cost about a third of
#: the throughput when measured (docs/benchmarks.rst).
DECODE_IN_THREAD = 256 * 1024
PROTOBUF = "application/x-protobuf"


class LengthRequired(PayloadError):
    status = 411


def _header(request: IRequest, name: bytes) -> Optional[str]:
    value = request.getHeader(name)
    return value.decode("latin-1") if value is not None else None


class PushRoutes:
    """
    @ivar upstreams: the configured upstreams by name.
    """

    app = Klein()
    log = Logger()

    def __init__(
        self, config: Config, gate: Gate, upstreams: Mapping[str, IUpstream], reactor: Any
    ) -> None:
        self.config = config
        self.gate = gate
        self.upstreams = upstreams
        self.reactor = reactor
        self.limit = config.limits.max_decompressed
        self.client_address = ClientAddress(config.trusted_proxies)

    # -- the shared path ---------------------------------------------------

    async def _push(
        self,
        request: IRequest,
        route: str,
        config: Optional[RouteConfig],
        build: Callable[[bytes, Admission], list[Push]],
        answer: Callable[[IRequest], bytes],
        refuse: Callable[[IRequest, int, str, Mapping[str, str]], bytes] = answer_error,
    ) -> bytes:
        """
        Every push route: admit, check the body, build the pushes, relay
        them in order, answer.

        @param build: turns the request body into pushes; raises
            L{PayloadError} for a body that cannot be accepted.  It runs
            before anything is relayed, so a bad body is never half-sent,
            and, for large bodies, in a worker thread: it may read the
            request but must not touch the reactor.
        @param answer: the success answer.
        @param refuse: how this route says no (OTLP's differs).
        """
        req: Any = request
        req.route = route
        received_at = self.reactor.seconds()
        if config is None:
            return refuse(request, 404, f"{route} is not enabled on this gateway", {})
        try:
            admission = await self.gate.admit(
                request, route=route, body_size=req.body_received
            )
        except AuthError as e:
            return refuse(request, e.status, e.message, e.headers)
        req.identity_name = admission.identity.name
        req.tenant = admission.tenant
        try:
            if req.body_too_large:
                return refuse(
                    request,
                    413,
                    f"body is larger than the limit of {self.config.limits.max_body} bytes",
                    {},
                )
            body = req.body()
            try:
                if len(body) >= DECODE_IN_THREAD:
                    pushes = _raise_refusal(
                        await deferToThreadPool(
                            self.reactor,
                            self.reactor.getThreadPool(),
                            _refusal_as_value,
                            build,
                            body,
                            admission,
                        )
                    )
                else:
                    pushes = build(body, admission)
            except PayloadError as e:
                return refuse(request, e.status, e.message, {})
            upstream = self.upstreams[config.upstream]
            for push in pushes:
                try:
                    await upstream.deliver(
                        _with(push, path=config.path, received_at=received_at)
                    )
                except DeliveryFailed as e:
                    headers = {}
                    if e.retry_after is not None:
                        headers["Retry-After"] = str(max(1, math.ceil(e.retry_after)))
                    what = (
                        "upstream rejected the data"
                        if isinstance(e, UpstreamRejected)
                        else "upstream unavailable"
                    )
                    return refuse(request, e.status, f"{what}: {e.reason}", headers)
            return answer(request)
        finally:
            admission.release()

    # -- Prometheus remote write -------------------------------------------

    @app.route("/api/v1/push", methods=["POST"])
    @app.route("/api/v1/write", methods=["POST"])
    @app.route("/prometheus/api/v1/push", methods=["POST"])
    def remote_write_route(self, request: IRequest) -> Any:
        rw = self.config.push.remote_write
        labels = rw.labels if rw is not None else LabelActions()

        def build(body: bytes, admission: Admission) -> list[Push]:
            essence, params = parse_media_type(_header(request, b"content-type"))
            if essence not in ("", PROTOBUF):
                raise UnsupportedMediaType(f"remote write: Content-Type {essence!r} is not {PROTOBUF}")
            proto = params.get("proto")
            if proto is not None and proto != "prometheus.WriteRequest":
                raise UnsupportedMediaType(
                    f"remote write: {proto!r} is not supported; send remote write 1.0 "
                    "(prometheus.WriteRequest)"
                )
            encoding = _header(request, b"content-encoding")
            if (encoding or "").strip().lower() != "snappy":
                raise _snappy_required("remote write")
            raw = decode_body(body, encoding, self.limit, allowed=("snappy",))
            write = remote_write.decode(raw)
            remote_write.validate(write)
            if labels.add or labels.remove:
                changed = remote_write.apply_labels(write, labels.add, labels.remove)
            else:
                changed = False
            return [
                Push(
                    signal="remote_write",
                    tenant=admission.tenant,
                    body=remote_write.encode(write) if changed else body,
                    content_type=PROTOBUF,
                    content_encoding="snappy",
                    extra_headers={
                        "X-Prometheus-Remote-Write-Version": _header(
                            request, b"x-prometheus-remote-write-version"
                        )
                        or REMOTE_WRITE_VERSION
                    },
                    records=lambda: remote_write.to_records(write),
                )
            ]

        return self._push(
            request,
            "remote_write",
            rw.route if rw is not None else None,
            build,
            _no_content,
        )

    # -- seal-proxy --------------------------------------------------------

    @app.route("/publish/metrics", methods=["POST"])
    def seal_route(self, request: IRequest) -> Any:
        cfg = self.config.push.seal
        # Read the clock here: build may run in a worker thread.
        now_ms = int(self.reactor.seconds() * 1000)

        def build(body: bytes, admission: Admission) -> list[Push]:
            assert cfg is not None
            content_type = _header(request, b"content-type")
            encoding = _header(request, b"content-encoding")
            if seal.is_sui_content_type(content_type):
                families = seal.decode_sui_body(body, encoding, self.limit)
                client_labels: dict[str, str] = {}
            else:
                if request.getHeader(b"content-length") is None:
                    raise LengthRequired("seal push: Content-Length is required")
                if (encoding or "").strip().lower() != "snappy":
                    raise _snappy_required("seal push")
                raw = decode_body(body, encoding, self.limit, allowed=("snappy",))
                client_labels, buf = seal.decode_seal_json(raw)
                families = seal.decode_delimited(buf)
            series = seal.to_series(
                families,
                client_labels=client_labels,
                add=cfg.labels.add,
                remove=cfg.labels.remove,
                node_name=admission.identity.name,
                client_ip=self.client_address.of(request),
                now_ms=now_ms,
            )
            pushes = []
            for batch in remote_write.batches(series, cfg.batch_size):
                pushes.append(
                    Push(
                        signal="seal",
                        tenant=admission.tenant,
                        body=remote_write.encode(batch),
                        content_type=PROTOBUF,
                        content_encoding="snappy",
                        extra_headers={"X-Prometheus-Remote-Write-Version": REMOTE_WRITE_VERSION},
                        records=functools.partial(remote_write.to_records, batch),
                    )
                )
            return pushes

        return self._push(
            request, "seal", cfg.route if cfg is not None else None, build, _created
        )

    # -- Loki --------------------------------------------------------------

    @app.route("/loki/api/v1/push", methods=["POST"])
    def loki_route(self, request: IRequest) -> Any:
        def build(body: bytes, admission: Admission) -> list[Push]:
            content_type = _header(request, b"content-type")
            encoding = _header(request, b"content-encoding")
            essence, _ = parse_media_type(content_type)
            if (encoding or "").strip().lower() == "snappy" and essence != "application/json":
                # A protobuf push is a snappy block whatever the header
                # says; some clients say so, and Loki takes it
                # (grafana/loki#3407), so this gateway does too.
                encoding = None
            raw = decode_body(body, encoding, self.limit, allowed=("identity", "gzip"))
            decoded = loki.decode(raw, content_type, limit=self.limit)
            return [
                Push(
                    signal="loki",
                    tenant=admission.tenant,
                    # Relayed as it came: it was valid, and Loki reads both.
                    body=body,
                    content_type=essence or PROTOBUF,
                    content_encoding=_relayed_encoding(encoding),
                    records=decoded.to_records,
                )
            ]

        return self._push(request, "loki", self.config.push.loki, build, _no_content)

    # -- OTLP --------------------------------------------------------------

    @app.route("/v1/traces", methods=["POST"])
    @app.route("/otlp/v1/traces", methods=["POST"])
    def otlp_traces_route(self, request: IRequest) -> Any:
        return self._otlp(request, "traces", self.config.push.otlp_traces)

    @app.route("/v1/metrics", methods=["POST"])
    @app.route("/otlp/v1/metrics", methods=["POST"])
    def otlp_metrics_route(self, request: IRequest) -> Any:
        return self._otlp(request, "metrics", self.config.push.otlp_metrics)

    @app.route("/v1/logs", methods=["POST"])
    @app.route("/otlp/v1/logs", methods=["POST"])
    def otlp_logs_route(self, request: IRequest) -> Any:
        return self._otlp(request, "logs", self.config.push.otlp_logs)

    def _otlp(self, request: IRequest, signal: str, config: Optional[RouteConfig]) -> Any:
        content_type = _header(request, b"content-type")

        def build(body: bytes, admission: Admission) -> list[Push]:
            encoding = _header(request, b"content-encoding")
            raw = decode_body(body, encoding, self.limit, allowed=("identity", "gzip"))
            message = otlp.decode(signal, raw, content_type)
            essence, _ = parse_media_type(content_type)
            if essence == PROTOBUF:
                upstream_body, upstream_encoding = body, _relayed_encoding(encoding)
            else:
                # JSON comes in; the upstream always gets protobuf.
                upstream_body, upstream_encoding = otlp.encode_protobuf(message), None
            return [
                Push(
                    signal=f"otlp_{signal}",
                    tenant=admission.tenant,
                    body=upstream_body,
                    content_type=PROTOBUF,
                    content_encoding=upstream_encoding,
                    records=lambda: otlp.to_records(signal, message),
                )
            ]

        def answer(request: IRequest) -> bytes:
            body, ctype = otlp.encode_response(signal, content_type)
            request.setResponseCode(200)
            request.setHeader(b"content-type", ctype.encode("ascii"))
            return body

        def refuse(
            request: IRequest, status: int, message: str, headers: Mapping[str, str]
        ) -> bytes:
            return _otlp_status(request, content_type, status, message, headers)

        return self._push(request, f"otlp_{signal}", config, build, answer, refuse)

    # Klein tries handlers in the order they are defined: this one must
    # come before the catch-all, or an unknown path would be a 500.
    @app.handle_errors(HTTPException)
    def routing_error(self, request: IRequest, failure: Any) -> bytes:
        return answer_routing_error(request, failure.value)

    @app.handle_errors(Exception)
    def unexpected(self, request: IRequest, failure: Any) -> bytes:
        if failure.check(CancelledError):
            # The client went away; nobody is left to answer.
            return b""
        self.log.failure("unexpected error on {path}", failure, path=request.path)
        return answer_error(request, 500, "internal error; the data was not accepted")


def _refusal_as_value(
    build: Callable[[bytes, Admission], list[Push]], body: bytes, admission: Admission
) -> list[Push] | PayloadError:
    """
    Run C{build} in a worker thread, and hand a refusal back as a value
    stripped of its traceback and chained exceptions.

    Raised across the thread pool, it would become a L{Failure} caught in
    a frame that refers to that Failure: a reference cycle whose frames
    hold the body and whatever the decoder had inflated (up to
    C{max_decompressed} each), kept until the cyclic collector happened to
    run.  Only the status and message are needed.
    """
    try:
        return build(body, admission)
    except PayloadError as e:
        e.__cause__ = e.__context__ = None
        return e.with_traceback(None)


def _raise_refusal(outcome: list[Push] | PayloadError) -> list[Push]:
    """
    The pushes L{_refusal_as_value} returned, or its refusal raised again,
    here on the reactor thread (where nothing keeps the traceback).
    """
    if isinstance(outcome, PayloadError):
        raise outcome
    return outcome


def _with(push: Push, *, path: str, received_at: float) -> Push:
    return attr.evolve(push, path=path, received_at=received_at)


def _relayed_encoding(encoding: Optional[str]) -> Optional[str]:
    """
    The C{Content-Encoding} to send with a body relayed as it came: the
    canonical name of what L{decode_body} accepted, or L{None} for none.
    Upstreams compare the name exactly (Loki refuses C{x-gzip}, C{GZIP}
    and C{identity}), so the client's spelling is not passed on.
    """
    value = (encoding or "").strip().lower()
    if value in ("", "identity"):
        return None
    if value == "x-gzip":
        return "gzip"
    return value


def _no_content(request: IRequest) -> bytes:
    request.setResponseCode(204)
    return b""


def _created(request: IRequest) -> bytes:
    request.setResponseCode(201)
    request.setHeader(b"content-type", b"text/plain; charset=utf-8")
    return b"created"


def _snappy_required(what: str) -> PayloadError:
    return BadEncoding(f"{what}: Content-Encoding must be snappy (block format)")


def _otlp_status(
    request: IRequest,
    content_type: Optional[str],
    status: int,
    message: str,
    headers: Mapping[str, str],
) -> bytes:
    """
    OTLP/HTTP answers failures with a C{google.rpc.Status} in the request's
    encoding.
    """
    request.setResponseCode(status)
    for name, value in headers.items():
        request.setHeader(name.encode("ascii"), value.encode("latin-1"))
    rpc = status_pb2.Status(code=_GRPC_CODES.get(status, 2), message=message)
    essence, _ = parse_media_type(content_type)
    if essence == "application/json":
        request.setHeader(b"content-type", b"application/json")
        return json.dumps(json_format.MessageToDict(rpc)).encode("utf-8")
    request.setHeader(b"content-type", PROTOBUF.encode("ascii"))
    return bytes(rpc.SerializeToString())


# HTTP statuses as the gRPC codes OTLP's Status carries.
_GRPC_CODES = {
    400: 3,  # INVALID_ARGUMENT
    401: 16,  # UNAUTHENTICATED
    403: 7,  # PERMISSION_DENIED
    404: 5,  # NOT_FOUND
    411: 3,
    413: 8,  # RESOURCE_EXHAUSTED
    415: 3,
    429: 8,
    502: 14,  # UNAVAILABLE
    503: 14,
    504: 4,  # DEADLINE_EXCEEDED
}
