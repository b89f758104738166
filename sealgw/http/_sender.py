"""
Sending a composed request on Twisted's Agent, with the answer's body
left exactly as the server encoded it.

treq's client wraps every request in Twisted's C{ContentDecoderAgent}: it
adds C{Accept-Encoding: gzip} to whatever the caller sent (a read that
passed its client's own went out with the header twice), inflates gzip
answers on the reactor thread with no bound on what a few compressed
bytes become, and leaves an empty C{Content-Encoding} on an answer that
had none.  A gateway relays bytes: the caller says which encodings it
accepts, if any, and gets the body as the upstream encoded it.  What
sealgw reads itself (a push's refusal, an identity provider's JSON) is
asked for without C{Accept-Encoding}, so it comes plain.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Optional
from urllib.parse import quote_plus

from hyperlink import EncodedURL
from twisted.internet.defer import Deferred
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgent, IBodyProducer, IResponse

from sealgw.http._interfaces import URL, RequestBody


def with_query(url: URL, params: Sequence[tuple[str, str]]) -> EncodedURL:
    """
    C{url} with C{params} appended to its query string, each name and
    value UTF-8 and percent-encoded as a form (space as C{+}), as treq
    and C{urllib.parse.urlencode} write them.
    """
    parsed = url if isinstance(url, EncodedURL) else EncodedURL.from_text(url)
    added = tuple(
        (quote_plus(name.encode("utf-8")), quote_plus(value.encode("utf-8")))
        for name, value in params
    )
    return parsed.replace(query=parsed.query + added)


class AgentSender:
    """
    Sends requests on C{agent} as they are given: the headers as composed
    (nothing added but what the Agent writes for the connection and the
    body's framing), never following a redirect, the response unbuffered
    and undecoded.

    It takes the arguments C{HTTPClient} gives treq's client, so that the
    two (and treq's C{StubTreq} in tests) stay interchangeable.

    @param body_producer: turns a request body into the producer that
        writes it.
    """

    def __init__(
        self, agent: IAgent, body_producer: Callable[[RequestBody], IBodyProducer]
    ) -> None:
        self._agent = agent
        self._body_producer = body_producer

    def request(
        self,
        method: str,
        url: URL,
        *,
        headers: Headers,
        params: Optional[Sequence[tuple[str, str]]] = None,
        data: Optional[RequestBody] = None,
        allow_redirects: bool = False,
        unbuffered: bool = True,
    ) -> Deferred[IResponse]:
        if allow_redirects or not unbuffered:
            raise ValueError("requests are sent unbuffered and never follow redirects")
        target = with_query(url, params) if params else url
        parsed = target if isinstance(target, EncodedURL) else EncodedURL.from_text(target)
        uri = parsed.to_uri().to_text().encode("ascii")
        # As treq: an empty body is no body.
        producer = self._body_producer(data) if data else None
        return self._agent.request(method.encode("ascii").upper(), uri, headers, producer)
