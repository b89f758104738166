"""
The outbound credentials hook: what the HTTP client asks before each
request for the C{Authorization} header to present.
"""

from __future__ import annotations

from typing import Optional

from twisted.internet.defer import Deferred
from zope.interface import Interface


class ICredentials(Interface):
    """
    Outbound credentials for one upstream; static ones today, issued tokens
    (Azure AD) later.  Asked once per request, so a provider that refreshes
    tokens is picked up between a delivery's retries.
    """

    def authorization() -> Deferred[Optional[bytes]]:
        """
        The value of the C{Authorization} header, or C{None} to send none.
        A failure means no request can be made now: the HTTP client fails
        the request with L{sealgw.http.CredentialsUnavailable} without
        sending it.
        """
