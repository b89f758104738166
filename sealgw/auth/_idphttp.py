"""
The HTTP client sealgw uses to talk to an identity provider: its own
connection pool, a deadline on the whole exchange and a cap on answers.
"""

from __future__ import annotations

import json
from typing import Any, Optional

import treq
from twisted.internet import defer
from twisted.internet.protocol import Protocol
from twisted.internet.ssl import Certificate
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import Agent, BrowserLikePolicyForHTTPS, HTTPConnectionPool, ResponseDone
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers
from twisted.web.iweb import IResponse

from sealgw.config import ConfigError

MAX_ANSWER = 1024 * 1024


class IdPUnreachable(Exception):
    """
    The identity provider could not give an answer: no connection, a
    timeout, a 5xx or 429, or something that is not JSON.  Callers fail
    closed on it.
    """


class _BodyReader(Protocol):
    """
    Reads a response body up to a limit; cancelling the read drops the
    connection instead of leaving it half-read in the pool.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.parts: list[bytes] = []
        self.size = 0
        self.done: defer.Deferred[bytes] = defer.Deferred(self._cancel)

    def _cancel(self, d: defer.Deferred[bytes]) -> None:
        if self.transport is not None:
            self.transport.stopProducing()  # type: ignore[attr-defined]

    def dataReceived(self, data: bytes) -> None:
        if self.done.called:
            return
        self.size += len(data)
        if self.size > self.limit:
            if self.transport is not None:
                self.transport.stopProducing()  # type: ignore[attr-defined]
            self.done.errback(IdPUnreachable(f"answer larger than {self.limit} bytes"))
            return
        self.parts.append(data)

    def connectionLost(self, reason: Failure = Failure(ResponseDone())) -> None:
        if self.done.called:
            return
        if reason.check(ResponseDone, PotentialDataLoss):
            self.done.callback(b"".join(self.parts))
        else:
            self.done.errback(IdPUnreachable(f"answer cut short: {reason.getErrorMessage()}"))


class IdPClient:
    """
    GETs JSON from one identity provider.

    @ivar timeout: the most one exchange (connect, headers and body) takes.
    """

    log = Logger()

    def __init__(self, reactor: Any, timeout: float, ca_file: Optional[str] = None) -> None:
        self._reactor = reactor
        self.timeout = timeout
        self.pool = HTTPConnectionPool(reactor, persistent=True)
        self.pool.maxPersistentPerHost = 4
        self.pool.cachedConnectionTimeout = 60
        policy = BrowserLikePolicyForHTTPS()
        if ca_file is not None:
            # Read once at start-up: never on the request path.
            try:
                with open(ca_file, "rb") as f:
                    trust_root = Certificate.loadPEM(f.read())
            except (OSError, ValueError) as e:
                raise ConfigError([f"auth.oidc.ca_file: cannot load {ca_file}: {e}"]) from None
            policy = BrowserLikePolicyForHTTPS(trustRoot=trust_root)
        agent = Agent(reactor, contextFactory=policy, connectTimeout=timeout, pool=self.pool)
        self._http = treq.client.HTTPClient(agent)

    def get_json(
        self, url: str, bearer: Optional[str] = None
    ) -> defer.Deferred[tuple[int, Any]]:
        """
        GET C{url}; fire with C{(status, parsed JSON or None)} for answers
        that say something about the request (2xx and 4xx but 429).

        @param bearer: a token to present; it is sent to the identity
            provider only, and never logged.
        @raise IdPUnreachable: as the failure, for everything else.
        """
        d = defer.Deferred.fromCoroutine(self._get_json(url, bearer))
        d.addTimeout(self.timeout, self._reactor)

        def timed_out(f: Failure) -> Failure:
            if f.check(defer.TimeoutError):
                return Failure(IdPUnreachable(f"no answer within {self.timeout:g}s"))
            return f

        d.addErrback(timed_out)
        return d

    async def _get_json(self, url: str, bearer: Optional[str]) -> tuple[int, Any]:
        headers = Headers({b"Accept": [b"application/json"]})
        if bearer is not None:
            headers.setRawHeaders(b"Authorization", [b"Bearer " + bearer.encode("ascii")])
        try:
            response: IResponse = await self._http.get(
                url,
                headers=headers,
                allow_redirects=False,
                unbuffered=True,
                reactor=self._reactor,
            )
        except defer.CancelledError:
            raise
        except Exception as e:
            raise IdPUnreachable(f"{type(e).__name__}: {e}") from None
        status = response.code
        reader = _BodyReader(MAX_ANSWER)
        response.deliverBody(reader)
        body = await reader.done
        if status >= 500 or status == 429 or status < 200 or 300 <= status < 400:
            raise IdPUnreachable(f"answered {status}")
        if status >= 400:
            return status, None
        try:
            return status, json.loads(body)
        except ValueError:
            raise IdPUnreachable("answered something that is not JSON") from None

    def close(self) -> defer.Deferred[None]:
        return self.pool.closeCachedConnections()
