"""
The outbound HTTP seam: what relay, auth and (later) the query proxy and
the Azure token endpoint see of an HTTP client.  L{sealgw.http.HTTPClient}
is the real one; L{sealgw.testing.MemoryHTTPClient} answers in memory.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Optional, Union

from hyperlink import EncodedURL
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IConsumer
from twisted.web.iweb import IBodyProducer
from zope.interface import Attribute, Interface

from sealgw.http._body import Body

#: A URL as text or already parsed (parse once, send many times).
URL = Union[str, EncodedURL]

#: A request body: bytes held in memory, or a producer that streams one.
RequestBody = Union[bytes, IBodyProducer]


class IHTTPResponse(Interface):
    """
    A response whose status and headers have arrived.  Its body is read
    exactly once, by L{read} or L{stream}; a body nobody wants is read with
    a limit of 0, which drops the connection unless the body was empty.
    """

    status = Attribute("The status code, an int.")
    headers = Attribute("The response headers, a twisted.web Headers.")
    length = Attribute("The body's declared length, or None when unknown.")

    def read(limit: int) -> Deferred[Body]:
        """
        The body, up to C{limit} bytes: past the limit the rest is not read
        and the connection is dropped (C{Body.truncated}).

        Fails with L{sealgw.http.BodyReadFailed} (carrying what arrived)
        when the body does not arrive within the client's body timeout or
        the connection breaks.  Cancelling drops the connection.
        """

    def stream(consumer: IConsumer) -> Deferred[int]:
        """
        Write the body to C{consumer} as it arrives, registered as its
        streaming producer: pausing it pauses the upstream connection.
        Fires with the number of bytes written once the body has ended.

        Fails with L{sealgw.http.BodyReadFailed} when nothing arrives for
        the client's body timeout while the consumer is not paused, when the
        connection breaks, or when the consumer stops the producer.
        Cancelling drops the connection.
        """


class IHTTPClient(Interface):
    """
    Requests to one upstream (or identity provider, or token endpoint),
    over its own connection pool, with its own timeouts, trust roots,
    static headers and outbound credentials.
    """

    name = Attribute("What the client talks to, for logs.")

    def request(
        method: str,
        url: URL,
        *,
        query: Sequence[tuple[str, str]] = (),
        headers: Optional[Mapping[str, str]] = None,
        body: Optional[RequestBody] = None,
        content_type: Optional[str] = None,
        content_encoding: Optional[str] = None,
        tenant: Optional[str] = None,
    ) -> Deferred[IHTTPResponse]:
        """
        Send a request, asking the outbound credentials first.  Redirects
        are never followed: a request must not go somewhere the
        configuration does not name.

        @param query: added to C{url}'s own query string, percent-encoded.
        @param headers: the caller's headers; see
            L{sealgw.http.HeaderPolicy} for what they cannot set.
        @param tenant: sent as the client's tenant header, replacing any
            other value.

        Fires with the response once its status and headers have arrived.
        Fails with L{sealgw.http.CredentialsUnavailable} (nothing was
        sent), L{sealgw.http.OperationTimedOut} (no response within the
        response timeout; the request is cancelled), or Twisted's
        connection and protocol errors.  Cancelling cancels the request on
        its connection and fails with C{CancelledError}.
        """

    def close() -> Deferred[None]:
        """
        Drop the pooled connections (at shutdown).
        """
