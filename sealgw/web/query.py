"""
The read routes: Prometheus/Mimir, Loki and Tempo query APIs, behind the
same gate as pushes (identity, tenant, limits), relayed to their upstream
with the tenant set and the answer streamed back (L{sealgw.query}).
"""

from __future__ import annotations

import functools
from typing import Any, Optional

from klein import Klein
from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.interfaces import IProducer
from twisted.logger import Logger
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource, Resource
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound
from zope.interface import implementer

from sealgw.auth import Admission, AuthError, Gate, listener_identity
from sealgw.query import (
    IDownstream,
    NotCanonical,
    QuerySettings,
    ReadRefused,
    ReadRequest,
    ReadUpstream,
    TailOutcome,
    TailSession,
    form_body,
    forwarded_headers,
    klein_rules,
    label_read,
    match_read_path,
    proxy_read,
    query_string,
)
from sealgw.web._errors import answer_error, answer_routing_error
from sealgw.web._request import body_of, body_size, header_text, record_of
from sealgw.web._upgrade import Upgrade, websocket_problem

#: What C{/loki/api/v1/tail} answers when the Loki upstream has no tail
#: connector (read settings built by hand).
TAIL_NOT_PROXIED = (
    "/loki/api/v1/tail is not relayed by this gateway; poll /loki/api/v1/query_range instead"
)


@implementer(IDownstream)
class RequestDownstream:
    """
    A Twisted web request as the read proxy's client.

    The request's channel is gone once the client has disconnected, and
    the request's own producer methods would then fail; a producer that
    arrives after that is stopped at once.
    """

    def __init__(self, request: Any) -> None:
        self._request = request
        self._registered = False

    def begin(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        request = self._request
        request.setResponseCode(status)
        if not any(name == b"content-type" for name, _ in headers):
            # Not Twisted's text/html: the upstream said nothing.
            request.defaultContentType = None
        for name, value in headers:
            request.setHeader(name, value)

    def write(self, data: bytes) -> None:
        self._request.write(data)

    def registerProducer(self, producer: IProducer, streaming: bool) -> None:
        if self._request.channel is None:
            producer.stopProducing()
            return
        self._registered = True
        self._request.registerProducer(producer, streaming)

    def unregisterProducer(self) -> None:
        if not self._registered:
            return
        self._registered = False
        if self._request.channel is not None:
            self._request.unregisterProducer()
        else:
            self._request.producer = None

    def abort(self) -> Deferred[None]:
        request = self._request
        if request.channel is None or request.finished:
            return succeed(None)
        gone: Deferred[None] = request.notifyFinish()
        gone.addErrback(lambda _: None)
        request.channel.transport.abortConnection()
        return gone


class QueryRoutes:
    """
    Every read route of L{sealgw.query.READ_ROUTES}, under each of its
    API's prefixes; the router's rules come from that table.

    In order: the path must be canonical (else 400) and a read route (else
    404), its API enabled (else 404), then the gate (401, 403, 400, and
    429 by the identity's read limits), then the query string and form
    body (400, 413, 415), then, for a store that keeps tenants apart by
    label, every selector is held to the tenant (400, or 404 for a read
    no label can narrow); then the upstream answers.  The Loki tail (a
    WebSocket) goes its own way after the gate: see L{_tail}.
    """

    app = Klein()
    # A path with "//" must be refused, not redirected to a tidied one.
    app.url_map.merge_slashes = False
    log = Logger()

    def __init__(self, settings: QuerySettings, gate: Gate) -> None:
        self.settings = settings
        self.gate = gate

    def read(self, request: IRequest, **_params: str) -> Deferred[Optional[bytes]]:
        """
        Every read route.  The router's parameters are not used: the path
        is matched again as it came, which is what decides.
        """
        return Deferred.fromCoroutine(self._read(request))

    async def _read(self, request: IRequest) -> Optional[bytes]:
        req: Any = request
        try:
            match = match_read_path(req.path)
        except NotCanonical as e:
            return answer_error(request, 400, f"not a canonical read path: {e}")
        if match is None:
            return answer_routing_error(request, NotFound())
        route = match.route
        record = record_of(request)
        record.route = route.label
        upstream = self.settings.upstream(route.api)
        if upstream is None:
            return answer_error(request, 404, f"{route.api} reads are not enabled on this gateway")
        body = body_of(request)
        try:
            admission = await self.gate.admit(
                request,
                route=route.label,
                body_size=body_size(request),
                federation=True,
                kind="read",
                listener_identity=listener_identity(request),
            )
        except AuthError as e:
            return answer_error(request, e.status, e.message, e.headers)
        record.identity = admission.identity.name
        record.tenant = admission.tenant
        try:
            if route.websocket:
                return await self._tail(request, match.path, upstream, admission)
            method = req.method.decode("ascii")
            if body is None and method == "POST":
                raise ReadRefused(413, "the form body is larger than the gateway takes")
            form, content_type = form_body(
                method,
                body or b"",
                header_text(request, b"content-type"),
                header_text(request, b"content-encoding"),
                self.settings.max_form_bytes,
            )
            read = ReadRequest(
                route=route,
                method=method,
                path=match.path,
                tenant=admission.tenant,
                query=query_string(req.uri),
                headers=forwarded_headers(req.requestHeaders),
                body=form,
                content_type=content_type,
            )
            sent: ReadRequest[Optional[str]] = read
            if upstream.tenant_label is not None:
                sent = await label_read(read, upstream.tenant_label, upstream.enforcer)
            await proxy_read(
                upstream, sent, RequestDownstream(request), tenant=admission.tenant
            )
            return None
        except ReadRefused as e:
            return answer_error(request, e.status, e.message, e.headers)
        finally:
            admission.release()

    async def _tail(
        self, request: IRequest, path: str, upstream: ReadUpstream, admission: Admission
    ) -> Any:
        """
        A Loki live tail: after the gate, the upgrade is judged (400,
        426), the identity's open tails counted (429), and the upstream's
        WebSocket opened (its refusal answered as a read's); only then is
        the client's connection upgraded and joined to it.  The read's
        admission ends with the upgrade: an open tail is bounded by
        C{query.loki.tail}, not by the read limits.
        """
        tail = upstream.tail
        if tail is None or upstream.tenant_label is not None:
            # No store that keeps tenants apart by label can hold a tail to
            # one (the loader refuses such a Loki upstream).
            return answer_error(request, 501, TAIL_NOT_PROXIED)
        problem = websocket_problem(request)
        if problem is not None:
            status, message, headers = problem
            return answer_error(request, status, message, headers)
        req: Any = request
        identity = admission.identity.name
        release = tail.open_tails.open(identity)
        record = record_of(request)
        site: Any = getattr(req.channel, "site", None)
        held: list[_HeldTail] = []

        def ended(outcome: TailOutcome) -> None:
            release()
            self.log.info(
                "{route}: tail of {identity} as {tenant} ended by {ended_by} ({code}) after "
                "{seconds:.1f}s, {to_client}B to the client",
                route=record.route, identity=identity, tenant=admission.tenant,
                ended_by=outcome.ended_by, code=outcome.code, seconds=outcome.seconds,
                to_client=outcome.to_client,
            )
            for connection in held:
                if site is not None:
                    site.upgrade_done(connection)
            ending = getattr(request, "upgrade_ended", None)
            if ending is not None:
                ending(outcome.from_client, outcome.to_client)

        session = TailSession(tail.reactor, tail.limits, ended, record.route)
        try:
            await tail.connect(
                upstream.url_for(path, query_string(req.uri)),
                admission.tenant,
                forwarded_headers(req.requestHeaders),
                session,
            )
        except BaseException:
            release()
            raise
        # Loaded with the Loki upstream's tail settings (build_tail).
        from sealgw.query._tail_websocket import ClientTailFactory

        factory = ClientTailFactory(session, tail.limits, tail.reactor)
        protocol: Any = factory.buildProtocol(req.getClientAddress())

        def gone() -> None:
            # The client left while the upstream was being opened.
            session.client_closed(1006, "the client went away before the upgrade")

        def upgraded(transport: Any) -> None:
            connection = _HeldTail(session, transport)
            held.append(connection)
            if site is not None:
                site.upgraded(connection)

        return Upgrade(protocol, gone, upgraded)

    # Klein tries handlers in the order they are defined: this one must
    # come before the catch-all, or a wrong method would be a 500.
    @app.handle_errors(HTTPException)
    def routing_error(self, request: IRequest, failure: Any) -> bytes:
        return answer_routing_error(request, failure.value)

    @app.handle_errors(Exception)
    def unexpected(self, request: IRequest, failure: Any) -> Any:
        if failure.check(CancelledError):
            # The client went away; nobody is left to answer.
            return b""
        self.log.failure("unexpected error on {path}", failure, path=request.path)
        req: Any = request
        if req.startedWriting:
            # Part of an answer is out: only a cut connection says it is
            # not whole.
            return RequestDownstream(request).abort()
        return answer_error(request, 500, "internal error")


for _rule, _route in klein_rules():
    QueryRoutes.app.route(
        _rule, methods=list(_route.methods), endpoint=f"{_route.label} {_rule}"
    )(QueryRoutes.read)
del _rule, _route


class _HeldTail:
    """
    An open tail as its site holds it, for a drain.
    """

    def __init__(self, session: TailSession, transport: Any) -> None:
        self._session = session
        self._transport = transport

    def going_away(self) -> None:
        self._session.going_away()

    def abort(self) -> None:
        self._transport.abortConnection()


class ReadAndPushRoutes(Resource):
    """
    The routes of a listener that serves both: a path the read routes
    serve (with any method) goes to them, every other path to the push
    routes, which answer 404 for a path nobody serves.

    Both are Klein resources that route on the whole path; this asks the
    read router whether a path is one of its own, so the push routes'
    behaviour is unchanged.
    """

    isLeaf = True

    def __init__(self, reads: QueryRoutes, pushes: IResource) -> None:
        super().__init__()
        self._reads = reads.app.resource()
        self._pushes = pushes

    def render(self, request: Any) -> Any:
        target = self._reads if _is_read(request) else self._pushes
        return target.render(request)


def _is_read(request: Any) -> bool:
    # The path as Klein will route it (see klein._resource.extractURLparts).
    joined = b"/".join(request.postpath)
    if not joined.startswith(b"/"):
        joined = b"/" + joined
    return _routed_to_reads(joined)


@functools.lru_cache(maxsize=1024)
def _routed_to_reads(path: bytes) -> bool:
    """
    Whether the read router serves C{path}, with any method (a wrong one is
    the read routes' 405 to give).  Asked for every request a public
    listener gets, and pushes come again and again to the same few paths:
    the answer is remembered (read paths that name a trace or a label just
    take a slot of the bounded cache).
    """
    try:
        text = path.decode("utf-8")
    except UnicodeDecodeError:
        return False
    try:
        _read_router().match(text, method="GET")
    except MethodNotAllowed:
        return True
    except HTTPException:
        return False
    return True


@functools.lru_cache(maxsize=1)
def _read_router() -> Any:
    return QueryRoutes.app.url_map.bind("gateway")
