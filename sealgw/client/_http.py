"""
One POST to the gateway and what its answer means for the payload: sent,
worth sending again (and when), or refused for good.

Senders retry 5xx and 429 and never other 4xx (PROTOCOLS.md, section 2):
a payload the gateway refused will be refused again.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any, Optional, Protocol, cast

import attr
import treq
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.iweb import IResponse

from sealgw._version import __version__
from sealgw.client._retry import parse_retry_after

USER_AGENT = f"sealgw-client/{__version__}"

#: How much of an answer's body is kept, for the log line of a failure.
#: The rest is read and thrown away, so the connection can be reused.
ANSWER_EXCERPT = 512

#: Idle pooled connections are dropped after this long, before the 60 s
#: that load balancers commonly allow: a POST sent on a connection the
#: server is closing fails without an answer and costs a retry.
IDLE_CONNECTION_TIMEOUT = 50


class TreqLike(Protocol):
    """
    What the library needs of C{treq.client.HTTPClient}; tests pass
    C{treq.testing.StubTreq}.
    """

    def request(self, method: str, url: Any, **kwargs: Any) -> Deferred[Any]: ...


class Verdict(enum.Enum):
    SENT = "sent"
    RETRY = "retry"
    REJECTED = "rejected"


@attr.frozen
class Answer:
    """
    What became of one attempt.

    @ivar status: the HTTP status, or L{None} when none arrived.
    @ivar retry_after: seconds the gateway asked to wait, if it did.
    @ivar reason: for the log: the status and an excerpt of the body, or
        the connection error.
    """

    verdict: Verdict
    status: Optional[int] = None
    retry_after: Optional[float] = None
    reason: str = ""


def connection_pool(reactor: Any) -> HTTPConnectionPool:
    """
    A pool of our own: one connection to the gateway is all a pusher
    needs, kept while pushes come often enough.
    """
    pool = HTTPConnectionPool(reactor, persistent=True)
    pool.maxPersistentPerHost = 2
    pool.cachedConnectionTimeout = IDLE_CONNECTION_TIMEOUT
    # A POST that failed on a stale connection is retried by our own loop,
    # with backoff, not silently by the pool.
    pool.retryAutomatically = False
    return pool


def http_client(reactor: Any, pool: HTTPConnectionPool) -> TreqLike:
    return cast(TreqLike, treq.client.HTTPClient(Agent(reactor, pool=pool)))


def classify(status: int, retry_after: Optional[float], excerpt: bytes) -> Answer:
    """
    2xx is sent; 5xx and 429 are worth retrying; anything else (other 4xx,
    and redirects, which a push must not follow) is refused for good.
    """
    text = excerpt.decode("utf-8", "replace").strip()
    reason = f"{status} {text}" if text else str(status)
    if 200 <= status < 300:
        verdict = Verdict.SENT
    elif status == 429 or status >= 500:
        verdict = Verdict.RETRY
    else:
        verdict = Verdict.REJECTED
    return Answer(verdict, status, retry_after, reason)


async def post(
    http: TreqLike,
    clock: IReactorTime,
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    timeout: float,
) -> Answer:
    """
    POST C{body} and read the answer, within C{timeout} seconds in all.

    Never fails but for cancellation: a connection error or a timeout is
    an L{Answer} to retry.
    """
    exchange = Deferred.fromCoroutine(_exchange(http, clock, url, body, headers))
    exchange.addTimeout(timeout, clock, onTimeoutCancel=_timed_out)
    try:
        return await exchange
    except CancelledError:
        raise
    except Exception as e:
        if _cancelled(e):
            # treq reports a cancelled request as a failed response;
            # whoever cancelled it must see the cancellation.
            raise CancelledError() from e
        return Answer(Verdict.RETRY, reason=_describe(e))


async def _exchange(
    http: TreqLike, clock: IReactorTime, url: str, body: bytes, headers: Mapping[str, str]
) -> Answer:
    response: IResponse = await http.request(
        "POST",
        url,
        data=body,
        headers={name: [value] for name, value in headers.items()},
        allow_redirects=False,
    )
    excerpt = await _read_excerpt(response)
    values = response.headers.getRawHeaders(b"retry-after")
    retry_after = (
        parse_retry_after(values[-1].decode("latin-1"), clock.seconds()) if values else None
    )
    return classify(response.code, retry_after, excerpt)


async def _read_excerpt(response: IResponse) -> bytes:
    kept = bytearray()

    def keep(data: bytes) -> None:
        if len(kept) < ANSWER_EXCERPT:
            kept.extend(data[: ANSWER_EXCERPT - len(kept)])

    await treq.collect(response, keep)
    return bytes(kept)


class NoAnswer(Exception):
    """
    The gateway did not answer in time.
    """


def _timed_out(result: object, timeout: float) -> Failure:
    # Whatever the cancelled request failed with (treq wraps the
    # cancellation), what happened is that time ran out.
    return Failure(NoAnswer(f"no answer within {timeout:g}s"))


def _cancelled(e: Exception) -> bool:
    reasons = getattr(e, "reasons", None) or []
    return any(reason.check(CancelledError) for reason in reasons)


def _describe(e: Exception) -> str:
    # Twisted wraps connection errors (ResponseFailed, ConnectError) around
    # the one that says what happened; name that one.
    reasons = getattr(e, "reasons", None)
    if reasons:
        inner = reasons[0].value
        return f"{type(inner).__name__}: {inner}"
    text = str(e)
    return f"{type(e).__name__}: {text}" if text else type(e).__name__
