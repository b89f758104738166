"""
In-memory fakes for sealgw's seams, shipped so that tests (sealgw's and
its users') run on a C{twisted.internet.task.Clock} without sockets:

  - L{MemoryHTTPClient}, an L{sealgw.http.IHTTPClient} that records what it
    is asked to send and answers from a handler (or a L{script});
  - L{MemoryIdentityProvider}, an OpenID Connect issuer answering through
    one;
  - L{MemoryUpstream}, an L{sealgw.relay.IUpstream} that keeps the pushes it
    is given and answers from a script of outcomes;
  - L{MemoryLimitStore}, a L{sealgw.limits.ILimitStore} shared by the
    limiters of a test as a Redis would be, that can be taken down or slowed.
"""

from sealgw.testing._http import (
    Answer,
    Handler,
    MemoryHTTPClient,
    MemoryHTTPResponse,
    MemoryResponse,
    SentRequest,
    script,
)
from sealgw.testing._idp import AUDIENCE, MemoryIdentityProvider, b64url, generate_keys
from sealgw.testing._limits import MemoryLimitStore, StoreDown
from sealgw.testing._upstream import ACCEPTED, MemoryUpstream, Outcome

__all__ = [
    "MemoryLimitStore",
    "StoreDown",
    "ACCEPTED",
    "AUDIENCE",
    "Answer",
    "Handler",
    "MemoryHTTPClient",
    "MemoryHTTPResponse",
    "MemoryIdentityProvider",
    "MemoryResponse",
    "MemoryUpstream",
    "Outcome",
    "SentRequest",
    "b64url",
    "generate_keys",
    "script",
]
