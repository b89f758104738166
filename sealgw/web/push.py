"""
The push routes: authenticate, decode and check the body in its wire
format, and relay it with the tenant set.  What the client hears back
follows the upstream: 2xx only for data that arrived, the upstream's own
4xx for data it refused, and a status the client retries on otherwise.

What a route checks and how it builds its pushes is in
L{sealgw.signals.intake}, as pure functions; this module reads the
request (on the reactor thread), admits it, hands the body and the
request's facts to the intake function, and relays what comes back.
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
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.web.iweb import IRequest
from werkzeug.exceptions import HTTPException

from sealgw.auth import Admission, AuthError, Gate, Identity, listener_identity
from sealgw.config import Config, LabelActions, PushConfig, RouteConfig, SampleLimitsConfig
from sealgw.relay import Delivery, DeliveryFailed, IUpstream, PushRoute, UpstreamRejected
from sealgw.signals import PayloadError, intake, otlp, pushgateway, remote_write2
from sealgw.signals import _relabel as relabelling
from sealgw.signals import _samplecheck as samplecheck
from sealgw.signals._media import parse_media_type
from sealgw.signals.intake import PROTOBUF, Intake, RequestFacts
from sealgw.signals.limits import LimitExceeded, SampleLimits
from sealgw.signals.push import Push
from sealgw.web._client_ip import ClientAddress
from sealgw.web._dispatch import ExactPathResource
from sealgw.web._errors import answer_error, answer_routing_error
from sealgw.web._metrics import GatewayMetrics
from sealgw.web._refusals import SampleRefusals
from sealgw.web._request import RequestRecord, body_of, body_size, header_text, record_of

#: Bodies this large (as sent) are decoded and checked in a worker thread,
#: so that one huge push does not hold up every other request on the
#: reactor thread for the whole of its parsing.  Ordinary batches (a
#: 2,000-sample remote write is about 40 KiB) stay on the reactor thread:
#: with the GIL the hand-off buys no parallelism and cost about a third of
#: the throughput when measured (docs/benchmarks.rst).
DECODE_IN_THREAD = 256 * 1024

#: Turns a body and its request's facts into pushes (an intake function
#: with the route's settings bound).
Build = Callable[[bytes, RequestFacts], Intake]

#: Runs a blocking callable off the reactor thread.
ThreadRunner = Callable[..., "Deferred[Any]"]


class PushRoutes:
    """
    @ivar upstreams: the configured upstreams by name.
    """

    app = Klein()
    log = Logger()

    def __init__(
        self,
        config: Config,
        gate: Gate,
        upstreams: Mapping[str, IUpstream],
        reactor: Any,
        run_in_thread: Optional[ThreadRunner] = None,
        metrics: Optional[GatewayMetrics] = None,
    ) -> None:
        """
        @param run_in_thread: where large bodies are decoded (the
            gateway's worker threads); the reactor's pool when not given.
        @param metrics: where series refused for a sample limit are
            counted.
        """
        self.config = config
        self.gate = gate
        self.upstreams = upstreams
        self.reactor = reactor
        self.limit = config.limits.max_decompressed
        self.client_address = ClientAddress(config.trusted_proxies)
        if run_in_thread is None:
            def run_in_thread(f: Callable[..., Any], *args: Any) -> Deferred[Any]:
                return deferToThreadPool(reactor, reactor.getThreadPool(), f, *args)
        self._run_in_thread: ThreadRunner = run_in_thread
        self.refusals = SampleRefusals(reactor, metrics)
        # Upstreams already warned about for 2.0 pushes answered without
        # written counts (see _written_by).
        self._unconfirmed: set[str] = set()
        self.routes = _push_routes(config, upstreams)
        rw = config.push.remote_write
        if rw is not None and (rw.labels.add or rw.labels.remove) and (
            relabelling.IMPLEMENTATION != "c"
        ):
            self.log.warn(
                "remote_write label actions run in Python, about 90 times slower: the "
                "C extension sealgw.signals._relabel_c was not built (no C compiler "
                "when sealgw was installed; see docs/push.rst)"
            )
        if samplecheck.IMPLEMENTATION != "c" and _judges_samples(config):
            self.log.warn(
                "the sample limits are judged on protobuf objects, about 15 ms more for "
                "2,000 series: the C extension sealgw.signals._relabel_c was not built "
                "(no C compiler when sealgw was installed; see docs/limits.rst)"
            )

    def resource(self) -> ExactPathResource:
        """
        The routes as a resource, the push paths dispatched without
        Klein's per-request URL matching (L{sealgw.web._dispatch}).
        """
        return ExactPathResource(self.app, self.unexpected)

    # -- the shared path ---------------------------------------------------

    def _tenant_label(self, upstream: str) -> Optional[str]:
        config = self.config.upstreams.get(upstream)
        tenancy = getattr(config, "tenancy", None)
        return getattr(tenancy, "label", None)

    def _remote_write_version(self, upstream: str) -> int:
        """
        The remote-write version C{upstream} reads: its
        C{remote_write_version}, 1 for the file upstream (which reads
        1.0 bodies back).
        """
        version = getattr(self.config.upstreams.get(upstream), "remote_write_version", 1)
        return int(version)

    def _sample_limits(self, identity: Identity) -> SampleLimits:
        """
        The sample limits of C{identity}: its own C{limits.samples}, else
        those of C{auth.default_limits}, else the defaults.
        """
        config = identity.limits.samples
        if config is None:
            config = self.config.auth.default_limits.samples or _DEFAULT_SAMPLE_LIMITS
        return SampleLimits(
            max_future=config.max_future,
            max_past=config.max_past,
            max_labels_per_series=config.max_labels_per_series,
            max_label_name_length=config.max_label_name_length,
            max_label_value_length=config.max_label_value_length,
            max_series_per_push=config.max_series_per_push,
        )

    def call_of(self, request: IRequest) -> PushCall:
        """
        What the shared push path needs of an HTTP request, read here on
        the reactor thread: codecs may run in a worker and never see the
        request itself.
        """
        return PushCall(
            peer=request,
            record=record_of(request),
            body=body_of(request),
            body_size=body_size(request),
            content_type=header_text(request, b"content-type"),
            content_encoding=header_text(request, b"content-encoding"),
            content_length_sent=request.getHeader(b"content-length") is not None,
            remote_write_version=header_text(request, b"x-prometheus-remote-write-version"),
            client_ip=self.client_address.of(request),
            listener_identity=listener_identity(request),
        )

    def _facts(
        self,
        call: PushCall,
        admission: Admission,
        received_at: float,
        tenant_label: Optional[str] = None,
        upstream_remote_write: int = 1,
    ) -> RequestFacts:
        """
        Everything a codec may know of the push.
        """
        return RequestFacts(
            content_type=call.content_type,
            content_encoding=call.content_encoding,
            content_length_sent=call.content_length_sent,
            remote_write_version=call.remote_write_version,
            tenant=admission.tenant,
            identity=admission.identity.name,
            client_ip=call.client_ip,
            received_at=received_at,
            tenant_label=tenant_label,
            samples=self._sample_limits(admission.identity),
            upstream_remote_write=upstream_remote_write,
            tenants=admission.identity.tenants,
        )

    async def _push(
        self,
        request: IRequest,
        route: str,
        config: Optional[RouteConfig],
        build: Build,
        answer: Callable[[IRequest], bytes],
        refuse: Callable[[IRequest, int, str, Mapping[str, str]], bytes] = answer_error,
    ) -> bytes:
        """
        Every HTTP push route: the shared path (L{relay}), answered.

        @param answer: the success answer.
        @param refuse: how this route says no (OTLP's differs).
        """
        outcome = await self.relay(self.call_of(request), route, config, build)
        if isinstance(outcome, Refused):
            return refuse(request, outcome.status, outcome.message, outcome.headers)
        for name, value in outcome.headers.items():
            request.setHeader(name.encode("ascii"), value.encode("ascii"))
        return answer(request)

    async def relay(
        self,
        call: PushCall,
        route: str,
        config: Optional[RouteConfig],
        build: Build,
    ) -> Accepted | Refused:
        """
        Every push, whatever carried it (HTTP, gRPC): admit, check the
        body, build the pushes, relay them in order.

        @param build: turns the body into pushes; raises L{PayloadError}
            for a body that cannot be accepted.  It runs before anything
            is relayed, so a bad body is never half-sent, and, for large
            bodies, in a worker thread.  Series it left out for a sample
            limit are refused with 400 once the rest is accepted (an
            upstream's failure wins: the client retries).
        @return: the upstream's answers, or what to refuse with.
        """
        record = call.record
        record.route = route
        received_at = self.reactor.seconds()
        if config is None:
            return Refused(404, f"{route} is not enabled on this gateway")
        try:
            admission = await self.gate.admit(
                call.peer,
                route=route,
                body_size=call.body_size,
                listener_identity=call.listener_identity,
            )
        except AuthError as e:
            return Refused(e.status, e.message, e.headers)
        record.identity = admission.identity.name
        record.tenant = admission.tenant
        try:
            body = call.body
            if body is None:
                return Refused(
                    413, f"body is larger than the limit of {self.config.limits.max_body} bytes"
                )
            facts = self._facts(
                call,
                admission,
                received_at,
                self._tenant_label(config.upstream),
                self._remote_write_version(config.upstream),
            )
            try:
                if len(body) >= DECODE_IN_THREAD:
                    accepted = _raise_refusal(
                        await self._run_in_thread(_refusal_as_value, build, body, facts)
                    )
                else:
                    accepted = build(body, facts)
            except LimitExceeded as e:
                self.refusals.push_refused(route, facts.identity or "", admission.tenant, e)
                return Refused(e.status, e.message)
            except PayloadError as e:
                return Refused(e.status, e.message)
            if accepted.refused is not None:
                self.refusals.series_refused(
                    route, facts.identity or "", admission.tenant, accepted.refused
                )
            targets = self.routes[route]
            deliveries: list[Delivery] = []
            written = accepted.written
            relayed_v2 = any(p.content_type == remote_write2.CONTENT_TYPE for p in accepted.pushes)
            for delivering in _deliveries(targets, accepted):
                try:
                    delivery = await delivering()
                except DeliveryFailed as e:
                    headers = {}
                    if e.retry_after is not None:
                        headers["Retry-After"] = str(max(1, math.ceil(e.retry_after)))
                    what = (
                        "upstream rejected the data"
                        if isinstance(e, UpstreamRejected)
                        else "upstream unavailable"
                    )
                    return Refused(e.status, f"{what}: {e.reason}", headers)
                deliveries.append(delivery)
                if relayed_v2:
                    written = self._written_by(config.upstream, delivery, written)
            counts = written.headers() if written is not None else {}
            if accepted.refused is not None:
                return Refused(400, accepted.refused.message, counts)
            return Accepted(deliveries, counts)
        finally:
            admission.release()

    def _written_by(
        self, upstream: str, delivery: Delivery, relayed: Optional[remote_write2.Written]
    ) -> Optional[remote_write2.Written]:
        """
        What a remote write 2.0 push relayed as 2.0 wrote, for the
        client's response headers: the upstream's word; for a push a
        spool took (it has not reached the upstream), what sealgw relayed,
        if it decoded the push.

        An upstream that answers 2xx without the counts the 2.0
        specification requires may not read 2.0 at all (a Prometheus 2.x
        reads the body as 1.0, finds no series and answers 204): the
        client is told nothing was confirmed, and the operator warned once.
        """
        said = remote_write2.parse_written(delivery.headers)
        if said is not None:
            return said
        if delivery.attempts == 0:
            return relayed
        if upstream not in self._unconfirmed:
            self._unconfirmed.add(upstream)
            self.log.warn(
                "upstream {upstream} answered a remote write 2.0 push {status} without the "
                "X-Prometheus-Remote-Write-*-Written headers the 2.0 specification requires: "
                "it may not read 2.0 and have dropped the data (a Prometheus 2.x does); "
                "unless it is known to read 2.0, set its remote_write_version to 1 "
                "(see docs/push.rst)",
                upstream=upstream,
                status=delivery.status,
            )
        return None

    # -- Prometheus remote write -------------------------------------------

    @app.route("/api/v1/push", methods=["POST"])
    @app.route("/api/v1/write", methods=["POST"])
    @app.route("/prometheus/api/v1/push", methods=["POST"])
    def remote_write_route(self, request: IRequest) -> Any:
        rw = self.config.push.remote_write
        labels = rw.labels if rw is not None else LabelActions()
        build = functools.partial(
            intake.remote_write_pushes,
            add=labels.add,
            remove=labels.remove,
            limit=self.limit,
            check=rw.check if rw is not None else "headers",
            tenant_from=rw.tenant_from_label.label if rw and rw.tenant_from_label else None,
            keep_label=rw.tenant_from_label.keep if rw and rw.tenant_from_label else True,
        )
        return self._push(
            request, "remote_write", rw.route if rw is not None else None, build, _no_content
        )

    # -- seal-proxy --------------------------------------------------------

    @app.route("/publish/metrics", methods=["POST"])
    def seal_route(self, request: IRequest) -> Any:
        cfg = self.config.push.seal
        if cfg is None:
            return self._push(request, "seal", None, _disabled, _created)
        build = functools.partial(
            intake.seal_pushes,
            add=cfg.labels.add,
            remove=cfg.labels.remove,
            batch_size=cfg.batch_size,
            limit=self.limit,
        )
        return self._push(request, "seal", cfg.route, build, _created)

    # -- Loki --------------------------------------------------------------

    # -- Pushgateway clients ----------------------------------------------

    # A path without a job (/metrics/job/, or without the slash) is routed
    # here too, for the grouping key to refuse it with a 400 that says so
    # rather than a bare 404.
    @app.route("/metrics/job/<path:key>", methods=["PUT", "POST"])
    @app.route("/metrics/job@base64/<path:key>", methods=["PUT", "POST"])
    @app.route("/metrics/job/", methods=["PUT", "POST"], strict_slashes=False)
    @app.route("/metrics/job@base64/", methods=["PUT", "POST"], strict_slashes=False)
    def pushgateway_route(self, request: IRequest, key: str = "") -> Any:
        cfg = self.config.push.pushgateway
        if cfg is None:
            return self._push(request, "pushgateway", None, _disabled, _ok)
        path = _grouping_path(request)
        labels = cfg.labels

        def build(body: bytes, facts: RequestFacts) -> Intake:
            return intake.pushgateway_pushes(
                body,
                facts,
                grouping=pushgateway.grouping_key(path),
                add=labels.add,
                remove=labels.remove,
                batch_size=cfg.batch_size,
                limit=self.limit,
            )

        return self._push(request, "pushgateway", cfg.route, build, _ok)

    @app.route("/metrics/job/<path:key>", methods=["DELETE"])
    @app.route("/metrics/job@base64/<path:key>", methods=["DELETE"])
    @app.route("/metrics/job/", methods=["DELETE"], strict_slashes=False)
    @app.route("/metrics/job@base64/", methods=["DELETE"], strict_slashes=False)
    def pushgateway_delete(self, request: IRequest, key: str = "") -> Any:
        return Deferred.fromCoroutine(self._pushgateway_delete(request))

    async def _pushgateway_delete(self, request: IRequest) -> bytes:
        """
        A Pushgateway deletes a group it keeps; sealgw keeps none, so there
        is nothing to delete.  Said plainly, with a 2xx so that clients'
        C{delete_from_gateway} does not fail, once the client is who it
        says and the group one a push could name (a bad grouping key is
        a 400, as a Pushgateway answers it).
        """
        record_of(request).route = "pushgateway"
        if self.config.push.pushgateway is None:
            return answer_error(request, 404, "pushgateway is not enabled on this gateway")
        try:
            admission = await self.gate.admit(
                request,
                route="pushgateway",
                body_size=0,
                listener_identity=listener_identity(request),
            )
        except AuthError as e:
            return answer_error(request, e.status, e.message, e.headers)
        admission.release()
        try:
            pushgateway.grouping_key(_grouping_path(request))
        except PayloadError as e:
            return answer_error(request, e.status, e.message)
        return answer_error(
            request,
            202,
            "sealgw keeps no groups: pushes are forwarded at once, so there is nothing to delete",
        )

    @app.route("/loki/api/v1/push", methods=["POST"])
    def loki_route(self, request: IRequest) -> Any:
        build = _whole(functools.partial(intake.loki_pushes, limit=self.limit))
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
        return Deferred.fromCoroutine(self._otlp_push(request, signal, config))

    async def _otlp_push(
        self, request: IRequest, signal: str, config: Optional[RouteConfig]
    ) -> bytes:
        """
        OTLP/HTTP: the shared path, answered with an C{Export*ServiceResponse}
        (the upstream's C{partial_success} passed on) or a
        C{google.rpc.Status}, in the request's encoding.
        """
        content_type = header_text(request, b"content-type")
        outcome = await self.relay(
            self.call_of(request), f"otlp_{signal}", config, self.otlp_build(signal)
        )
        if isinstance(outcome, Refused):
            return _otlp_status(request, content_type, outcome.status, outcome.message, outcome.headers)
        rejected, message = otlp_partial_success(signal, outcome)
        body, ctype = otlp.encode_response(signal, content_type, rejected, message)
        request.setResponseCode(200)
        request.setHeader(b"content-type", ctype.encode("ascii"))
        return body

    def otlp_build(self, signal: str) -> Build:
        """
        How an OTLP export of C{signal} becomes pushes, whatever carried it.
        """
        return _whole(functools.partial(intake.otlp_pushes, signal, limit=self.limit))

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


def _deliveries(
    targets: PushRoute, accepted: Intake
) -> list[Callable[[], Deferred[Any]]]:
    """
    How an intake's pushes are delivered, in order: batches of one
    tenant's push one after the other (the client hears the first
    failure), parts of different tenants at once, each whatever becomes
    of the others (one tenant's store refusing its part does not keep the
    other tenants' parts from theirs), the answer the worst of theirs.
    """
    if accepted.independent and len(accepted.pushes) > 1:
        return [functools.partial(targets.deliver_each, accepted.pushes)]
    return [functools.partial(targets.deliver, push) for push in accepted.pushes]


def _push_routes(config: Config, upstreams: Mapping[str, IUpstream]) -> dict[str, PushRoute]:
    """
    Each enabled push route's targets, by the route's name (the
    C{PushConfig} key, as L{PushRoutes._push} is given it).
    """
    routes: dict[str, PushRoute] = {}
    for field in attr.fields(PushConfig):
        signal = getattr(config.push, field.name)
        route = getattr(signal, "route", signal)
        if isinstance(route, RouteConfig):
            routes[field.name] = PushRoute(route, upstreams)
    return routes


def _grouping_path(request: IRequest) -> str:
    """
    The path of a Pushgateway push as the client encoded it (so that a
    percent-encoded C{/} is seen), as text: UTF-8, as a Pushgateway reads
    it; bytes that are not are kept as surrogates, for the grouping key to
    refuse.
    """
    path: bytes = request.path
    return path.decode("utf-8", "surrogateescape")


@attr.frozen
class PushCall:
    """
    One push as its transport (an HTTP request, a gRPC call) hands it to
    the shared path: read off the transport on the reactor thread, so that
    nothing past this point knows how it came.

    @ivar peer: what the gate reads the credentials and the tenant from:
        C{requestHeaders} (Twisted's L{Headers}), and, for client
        certificates, C{channel.transport}.
    @ivar record: what the access line and the metrics will say of it.
    @ivar body: the body as sent, L{None} when it was over C{max_body} and
        not kept.
    @ivar body_size: the body bytes received, kept or not.
    @ivar listener_identity: set when the listener has C{auth: none}.
    """

    peer: Any
    record: RequestRecord
    body: Optional[bytes]
    body_size: int
    content_type: Optional[str] = None
    content_encoding: Optional[str] = None
    content_length_sent: bool = True
    remote_write_version: Optional[str] = None
    client_ip: Optional[str] = None
    listener_identity: Optional[str] = None


@attr.frozen
class Accepted:
    """
    Every push of a call arrived; C{deliveries} are the upstream's
    answers, in order, and C{headers} what the client's answer carries
    besides (remote write 2.0's written counts).
    """

    deliveries: list[Delivery]
    headers: Mapping[str, str] = attr.field(factory=dict)


@attr.frozen
class Refused:
    """
    A call refused, by the gateway or by the upstream: the HTTP status
    that says so, a message for the client, and headers to send with it
    (C{Retry-After}, C{WWW-Authenticate}).
    """

    status: int
    message: str
    headers: Mapping[str, str] = attr.field(factory=dict)

    @property
    def retry_after(self) -> Optional[int]:
        value = self.headers.get("Retry-After")
        return int(value) if value is not None and value.isdigit() else None


def otlp_partial_success(signal: str, outcome: Accepted) -> tuple[int, str]:
    """
    What the upstream's C{Export*ServiceResponse} said was rejected, summed
    over the deliveries: the count and the messages.  An answer that is
    not such a response (a spool's, a file's, a truncated one) says
    nothing was.
    """
    rejected = 0
    messages = []
    for delivery in outcome.deliveries:
        if not delivery.body or delivery.body_truncated:
            continue
        count, message = otlp.partial_success(signal, delivery.body)
        rejected += count
        if message:
            messages.append(message)
    return rejected, "; ".join(messages)


def _refusal_as_value(build: Build, body: bytes, facts: RequestFacts) -> Intake | PayloadError:
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
        return build(body, facts)
    except PayloadError as e:
        e.__cause__ = e.__context__ = None
        return e.with_traceback(None)


def _raise_refusal(outcome: Intake | PayloadError) -> Intake:
    """
    The pushes L{_refusal_as_value} returned, or its refusal raised again,
    here on the reactor thread (where nothing keeps the traceback).
    """
    if isinstance(outcome, PayloadError):
        raise outcome
    return outcome


def _judges_samples(config: Config) -> bool:
    """
    Whether a route of C{config} judges the sample limits: seal and
    Pushgateway pushes always, remote write at C{check: labels} or to an
    upstream that keeps tenants apart by label.
    """
    push = config.push
    if push.seal is not None or push.pushgateway is not None:
        return True
    rw = push.remote_write
    if rw is None:
        return False
    tenancy = getattr(config.upstreams.get(rw.route.upstream), "tenancy", None)
    return rw.check == "labels" or getattr(tenancy, "label", None) is not None


def _whole(build: Callable[[bytes, RequestFacts], list[Push]]) -> Build:
    """
    A route whose series are not judged here (Loki, OTLP): its pushes are
    the body whole.
    """

    def whole(body: bytes, facts: RequestFacts) -> Intake:
        return Intake(build(body, facts))

    return whole


_DEFAULT_SAMPLE_LIMITS = SampleLimitsConfig()


def _disabled(body: bytes, facts: RequestFacts) -> Intake:
    raise AssertionError("a disabled route builds no pushes")


def _ok(request: IRequest) -> bytes:
    request.setResponseCode(200)
    return b""


def _no_content(request: IRequest) -> bytes:
    request.setResponseCode(204)
    return b""


def _created(request: IRequest) -> bytes:
    request.setResponseCode(201)
    request.setHeader(b"content-type", b"text/plain; charset=utf-8")
    return b"created"


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
