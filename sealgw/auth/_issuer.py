"""
Asking an OpenID Connect issuer for JSON over the one outbound HTTP client
(L{sealgw.http}): the issuer's client, the deadline on one exchange, and
which answers count as answers.
"""

from __future__ import annotations

import json
from typing import Any, Optional

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure

from sealgw.config import ConfigError, OIDCConfig, TimeoutsConfig
from sealgw.http import (
    HTTPClient,
    IHTTPClient,
    OperationTimedOut,
    bounded,
    describe,
    load_trust_root,
)

#: The largest answer taken from the identity provider.
MAX_ANSWER = 1024 * 1024


class IdPUnreachable(Exception):
    """
    The identity provider could not give an answer: no connection, a
    timeout, a 5xx or 429, or something that is not JSON.  Callers fail
    closed on it.
    """


def idp_client(config: OIDCConfig, reactor: Any) -> HTTPClient:
    """
    The HTTP client for C{config}'s issuer: a small pool, every step
    bounded by C{timeout}, the C{ca_file}'s certificates (all of them)
    trusted for https.

    @raise ConfigError: when C{ca_file} cannot be used.
    """
    trust_root = None
    if config.ca_file is not None:
        # Read once at start-up: never on the request path.
        try:
            trust_root = load_trust_root(config.ca_file)
        except OSError as e:
            raise ConfigError(
                [f"auth.oidc.ca_file: cannot load {config.ca_file}: {e.strerror}"]
            ) from None
        except ValueError as e:
            raise ConfigError([f"auth.oidc.ca_file: {e}"]) from None
    timeout = config.timeout
    return HTTPClient(
        reactor,
        name=f"identity provider {config.issuer}",
        timeouts=TimeoutsConfig(connect=timeout, response=timeout, body=timeout),
        max_connections=4,
        trust_root=trust_root,
    )


def get_json(
    client: IHTTPClient,
    clock: IReactorTime,
    timeout: float,
    url: str,
    bearer: Optional[str] = None,
) -> Deferred[tuple[int, Any]]:
    """
    GET C{url}; fire with C{(status, parsed JSON or None)} for answers that
    say something about the request (2xx, and 4xx but 429).  The whole
    exchange (connecting, headers and body) takes at most C{timeout}.

    @param bearer: a token to present; it is sent to the identity provider
        only, and never logged.
    @raise IdPUnreachable: as the failure, for everything else.
    """

    def unreachable(failure: Failure) -> Failure:
        if failure.check(CancelledError, IdPUnreachable):
            return failure
        if failure.check(OperationTimedOut):
            return Failure(IdPUnreachable(f"no answer within {timeout:g}s"))
        value = failure.value
        assert value is not None
        return Failure(IdPUnreachable(f"{type(value).__name__}: {describe(value)}"))

    exchange = Deferred.fromCoroutine(_get_json(client, url, bearer))
    return bounded(exchange, timeout, clock, "asking the identity provider").addErrback(
        unreachable
    )


async def _get_json(client: IHTTPClient, url: str, bearer: Optional[str]) -> tuple[int, Any]:
    headers = {"Accept": "application/json"}
    if bearer is not None:
        headers["Authorization"] = "Bearer " + bearer
    response = await client.request("GET", url, headers=headers)
    status = response.status
    body = await response.read(MAX_ANSWER)
    if body.truncated:
        raise IdPUnreachable(f"answer larger than {MAX_ANSWER} bytes")
    if status >= 500 or status == 429 or status < 200 or 300 <= status < 400:
        raise IdPUnreachable(f"answered {status}")
    if status >= 400:
        return status, None
    try:
        return status, json.loads(body.data)
    except ValueError:
        raise IdPUnreachable("answered something that is not JSON") from None
