"""
Answers left as the upstream encoded them, though they are asked for
through treq.

treq's client puts Twisted's C{ContentDecoderAgent} in front of the
agent it is given, on every request: it adds C{Accept-Encoding: gzip} to
whatever the caller sent (a read that passed its client's own header went
out with it twice), inflates gzip answers on the reactor thread with no
bound on what a few compressed bytes become, and leaves an empty
C{Content-Encoding} on an answer that had none.  A gateway relays bytes:
the caller says which encodings it accepts, if any, and gets the body as
the upstream encoded it.

So the agent treq is given (L{UndecodedAgent}) sits I{below} the decoder
and hides the encodings from it both ways: the caller's own
C{Accept-Encoding} travels through the decoder under L{ASKED} and is the
only one sent; the answer's C{Content-Encoding} travels back under
L{ANSWERED}, so the decoder finds nothing to decode, and L{restore} puts
it back.  Only public interfaces of Twisted and treq are used: an
C{IAgent}, an C{IResponse} and headers.
"""

from __future__ import annotations

from typing import Any, Optional

from twisted.internet.defer import Deferred
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgent, IBodyProducer, IResponse
from zope.interface import implementer

#: The caller's own C{Accept-Encoding}, on its way through treq.
ASKED = b"x-sealgw-accept-encoding"
#: The answer's C{Content-Encoding}, on its way back through treq.
ANSWERED = b"x-sealgw-content-encoding"

_ACCEPT = b"accept-encoding"
_CONTENT = b"content-encoding"


def hide_accepted(headers: Headers) -> Headers:
    """
    C{headers} (composed for one request, and so the caller's to change)
    with their C{Accept-Encoding} moved where treq's decoder does not add
    to it.
    """
    asked = headers.getRawHeaders(_ACCEPT)
    if asked:
        headers.removeHeader(_ACCEPT)
        headers.setRawHeaders(ASKED, asked)
    return headers


@implementer(IResponse)
class _Hidden:
    """
    An answer whose C{Content-Encoding} is out of the decoder's sight.
    """

    def __init__(self, response: IResponse) -> None:
        self._response = response
        headers = response.headers.copy()
        answered = headers.getRawHeaders(_CONTENT)
        headers.removeHeader(_CONTENT)
        if answered:
            headers.setRawHeaders(ANSWERED, answered)
        self.headers = headers

    def __getattr__(self, name: str) -> Any:
        # version, code, phrase, length, request, previousResponse.
        return getattr(self._response, name)

    def deliverBody(self, protocol: Any) -> None:
        self._response.deliverBody(protocol)

    def setPreviousResponse(self, response: IResponse) -> None:
        self._response.setPreviousResponse(response)


@implementer(IAgent)
class UndecodedAgent:
    """
    The agent below treq's decoder: sends the caller's C{Accept-Encoding}
    alone (or none), and hands answers up with their encoding hidden.
    """

    def __init__(self, agent: IAgent) -> None:
        self._agent = agent

    def request(
        self,
        method: bytes,
        uri: bytes,
        headers: Optional[Headers] = None,
        bodyProducer: Optional[IBodyProducer] = None,
    ) -> Deferred[IResponse]:
        sent = headers.copy() if headers is not None else Headers()
        asked = sent.getRawHeaders(ASKED)
        sent.removeHeader(_ACCEPT)
        sent.removeHeader(ASKED)
        if asked:
            sent.setRawHeaders(_ACCEPT, asked)
        return self._agent.request(method, uri, sent, bodyProducer).addCallback(_Hidden)


def restore(headers: Headers) -> Headers:
    """
    An answer's headers as the upstream sent them: C{Content-Encoding}
    back from under L{ANSWERED}, and none where it sent none (treq's
    decoder leaves an empty one).
    """
    answered = headers.getRawHeaders(ANSWERED)
    if answered is None and not any(headers.getRawHeaders(_CONTENT) or ()):
        if headers.hasHeader(_CONTENT):
            headers = headers.copy()
            headers.removeHeader(_CONTENT)
        return headers
    if answered is None:
        # Not through L{UndecodedAgent} (a test's stand-in for treq).
        return headers
    headers = headers.copy()
    headers.removeHeader(ANSWERED)
    headers.setRawHeaders(_CONTENT, answered)
    return headers
