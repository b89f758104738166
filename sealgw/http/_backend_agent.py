"""
Requests to one backend of an upstream: connected to its address, yet
sent with its name in the C{Host} header and verified against its name
over TLS, so that balancing between the addresses a name resolves to
changes nothing an upstream or its certificate sees.
"""

from __future__ import annotations

from typing import Any, Optional

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.web.client import Agent, BrowserLikePolicyForHTTPS, HTTPConnectionPool
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgent, IAgentEndpointFactory, IBodyProducer, IResponse
from zope.interface import implementer

from sealgw.http._backends import Backend


@implementer(IAgentEndpointFactory)
class _Endpoints:
    """
    Every request's endpoint is the backend's, whatever host its URL
    names (the upstream's first URL, for every backend).
    """

    def __init__(
        self, reactor: Any, backend: Backend, policy: BrowserLikePolicyForHTTPS, timeout: float
    ) -> None:
        self._reactor = reactor
        self._backend = backend
        self._policy = policy
        self._timeout = timeout

    def endpointForURI(self, uri: Any) -> IStreamClientEndpoint:
        backend = self._backend
        where = backend.address if backend.address is not None else backend.host
        endpoint: IStreamClientEndpoint = HostnameEndpoint(
            self._reactor, where, backend.port, timeout=self._timeout
        )
        if backend.scheme == "https":
            # The name, never the address: a certificate names the host.
            name = backend.host
            creator = self._policy.creatorForNetloc(
                name.encode("ascii" if name.isascii() else "idna"), backend.port
            )
            endpoint = wrapClientTLS(creator, endpoint)
        return endpoint


class _BackendPool:
    """
    A view of the client's one connection pool in which this backend's
    connections are kept apart from the others': every backend's requests
    carry the same URL, and so the same key, to the Agent.
    """

    def __init__(self, pool: HTTPConnectionPool, backend: Backend) -> None:
        self._pool = pool
        self._backend = backend
        self.persistent = pool.persistent

    def getConnection(self, key: Any, endpoint: IStreamClientEndpoint) -> Deferred[Any]:
        return self._pool.getConnection((self._backend, key), endpoint)


@implementer(IAgent)
class BackendAgent:
    """
    An agent that sends every request to C{backend}, with its C{Host}.
    """

    def __init__(
        self,
        reactor: Any,
        backend: Backend,
        pool: HTTPConnectionPool,
        policy: BrowserLikePolicyForHTTPS,
        connect_timeout: float,
    ) -> None:
        self._host = backend.host_header
        self._agent = Agent.usingEndpointFactory(
            reactor,
            _Endpoints(reactor, backend, policy, connect_timeout),
            pool=_BackendPool(pool, backend),  # type: ignore[arg-type]
        )

    def request(
        self,
        method: bytes,
        uri: bytes,
        headers: Optional[Headers] = None,
        bodyProducer: Optional[IBodyProducer] = None,
    ) -> Deferred[IResponse]:
        if headers is None:
            headers = Headers()
        # The Agent would name the URL's host, which is the first
        # backend's.
        headers.setRawHeaders(b"host", [self._host])
        return self._agent.request(method, uri, headers, bodyProducer)
