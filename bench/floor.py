"""
The floor a Python relay on Twisted can reach: twisted.web in, Agent out,
doing only what sealgw must do at the least (a bearer check, the tenant
header set, pooled keep-alive connections, the body relayed unread).

Started by bench/run.py beside sealgw, so that sealgw's own cost is
measured against it in the same run:

    python bench/floor.py PORT UPSTREAM_URL TOKEN TENANT
"""

from __future__ import annotations

import sys
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import succeed
from twisted.web.client import Agent, HTTPConnectionPool, readBody
from twisted.web.http_headers import Headers
from twisted.web.iweb import IBodyProducer
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site
from zope.interface import implementer

_PASSED = (b"content-type", b"content-encoding", b"x-prometheus-remote-write-version")


@implementer(IBodyProducer)
class _Bytes:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.length = len(data)

    def startProducing(self, consumer: Any) -> Any:
        consumer.write(self.data)
        return succeed(None)

    def stopProducing(self) -> None:
        pass

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass


class Relay(Resource):
    isLeaf = True

    def __init__(self, upstream: bytes, token: bytes, tenant: bytes) -> None:
        super().__init__()
        pool = HTTPConnectionPool(reactor, persistent=True)
        pool.maxPersistentPerHost = 16
        self.agent = Agent(reactor, pool=pool)
        self.upstream = upstream
        self.authorization = b"Bearer " + token
        self.tenant = tenant

    def render_POST(self, request: Any) -> Any:
        if request.getHeader(b"authorization") != self.authorization:
            request.setResponseCode(401)
            return b""
        headers = Headers({b"X-Scope-OrgID": [self.tenant]})
        for name in _PASSED:
            value = request.getHeader(name)
            if value is not None:
                headers.setRawHeaders(name, [value])
        d = self.agent.request(
            b"POST", self.upstream, headers, _Bytes(request.content.read())
        )

        def answered(response: Any) -> Any:
            return readBody(response).addCallback(lambda _: response.code)

        def done(code: int) -> None:
            request.setResponseCode(204 if 200 <= code < 300 else code)
            request.finish()

        def failed(_: Any) -> None:
            request.setResponseCode(502)
            request.finish()

        d.addCallback(answered).addCallbacks(done, failed)
        return NOT_DONE_YET


def main(argv: list[str]) -> None:
    port, upstream, token, tenant = argv
    site = Site(Relay(upstream.encode(), token.encode(), tenant.encode()))
    site.noisy = False
    site.log = lambda request: None  # type: ignore[method-assign]
    reactor.listenTCP(int(port), site, interface="127.0.0.1")  # type: ignore[attr-defined]
    reactor.run()  # type: ignore[attr-defined]


if __name__ == "__main__":
    main(sys.argv[1:])
