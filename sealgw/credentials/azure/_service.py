"""
Every upstream's Entra ID credentials, as one service: built from the
configuration (and the environment), started and stopped with the gateway,
reported in C{/health}, and the end of start-up when a first token cannot
be had.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any, Generic, Optional, Protocol, TypeVar, cast

from prometheus_client import CollectorRegistry
from twisted.application.service import MultiService
from twisted.internet.defer import Deferred, gatherResults
from twisted.logger import Logger

from sealgw.config import ConfigError, HTTPUpstreamConfig, TimeoutsConfig, UpstreamConfig
from sealgw.credentials._interfaces import ICredentials
from sealgw.credentials.azure._refresher import AzureADCredentials, TokenMetrics
from sealgw.credentials.azure._resolve import resolve
from sealgw.credentials.azure._token import TokenError
from sealgw.http import HTTPClient, load_trust_root

#: Token requests are small and an authority answers fast; a slow one is
#: tried again rather than waited for.
TOKEN_TIMEOUTS = TimeoutsConfig(connect=10.0, response=30.0, body=30.0)

_log = Logger(namespace="sealgw.credentials")


class IssuedCredential(Protocol):
    """
    What L{OutboundCredentials} asks of one upstream's issued credential:
    a refresher (L{AzureADCredentials}), or in a worker of a gateway with
    workers the token its main process hands over
    (L{sealgw.credentials.azure.RelayedCredentials}).
    """

    started: Deferred[Optional[TokenError]]
    start_degraded: bool

    def cannot_start(self, error: TokenError) -> str: ...

    def valid(self, now: Optional[float] = None) -> bool: ...

    def health(self) -> dict[str, Any]: ...

    def sidecar_fields(self, healthy: bool) -> dict[str, Any]: ...

    def setServiceParent(self, parent: Any) -> Any: ...


C = TypeVar("C", bound=IssuedCredential)


class OutboundCredentials(MultiService, Generic[C]):
    """
    The issued credentials of the upstreams that have them, by upstream
    name; each is a child service.

    @param on_fatal: called with the reason, after it is logged (one
        C{critical} line), when a first token cannot be had and the
        upstream does not allow C{start_degraded}: the daemon exits
        there.  Without it only the line is logged.
    """

    log = _log

    def __init__(
        self,
        credentials: Mapping[str, C],
        on_fatal: Optional[Callable[[str], None]] = None,
    ) -> None:
        super().__init__()
        self.credentials = dict(credentials)
        self._on_fatal = on_fatal
        for credential in self.credentials.values():
            credential.setServiceParent(self)

    def __len__(self) -> int:
        return len(self.credentials)

    @property
    def by_upstream(self) -> dict[str, ICredentials]:
        """
        What the upstreams' HTTP clients are given, by upstream name.
        """
        return {name: cast(ICredentials, c) for name, c in self.credentials.items()}

    def startService(self) -> None:
        super().startService()
        for credential in self.credentials.values():
            credential.started.addCallback(self._first_token, credential)

    def _first_token(
        self, error: Optional[TokenError], credential: IssuedCredential
    ) -> Optional[TokenError]:
        if error is not None and self.running:
            self._cannot_start(error, credential)
        return error

    def _cannot_start(self, error: TokenError, credential: IssuedCredential) -> None:
        reason = credential.cannot_start(error)
        if credential.start_degraded:
            self.log.warn(
                "{reason}; going on without it (start_degraded): its requests are "
                "answered 503 until a token is had",
                reason=reason,
            )
            return
        self.log.critical("{reason}", reason=reason)
        if self._on_fatal is not None:
            self._on_fatal(reason)

    def when_started(self) -> Deferred[None]:
        """
        Fires once every credential's start-up is decided in a way the
        gateway runs on: with a first token, or without one where the
        upstream allows it (C{start_degraded}).  Never when one ends
        start-up: the process is then on its way out.
        """
        waits: list[Deferred[None]] = []
        for credential in self.credentials.values():
            decided: Deferred[None] = Deferred()

            def settle(
                error: Optional[TokenError],
                credential: IssuedCredential = credential,
                decided: Deferred[None] = decided,
            ) -> Optional[TokenError]:
                if error is None or credential.start_degraded:
                    decided.callback(None)
                return error

            credential.started.addCallback(settle)
            waits.append(decided)
        return gatherResults(waits).addCallback(lambda _: None)

    def health(self) -> dict[str, Any]:
        """
        Each credential's state, by upstream name.
        """
        return {name: c.health() for name, c in self.credentials.items()}

    def ready(self) -> bool:
        """
        Whether every credential holds a valid token.
        """
        return all(c.valid() for c in self.credentials.values())

    def sidecar_fields(self, healthy: bool) -> dict[str, Any]:
        """
        The Azure sidecar's top-level C{/health} fields, when exactly one
        credential is configured (with several, which one would they be
        about?); none otherwise.
        """
        if len(self.credentials) != 1:
            return {}
        [credential] = self.credentials.values()
        return credential.sidecar_fields(healthy)


def build_credentials(
    upstreams: Mapping[str, UpstreamConfig],
    reactor: Any,
    *,
    registry: Optional[CollectorRegistry] = None,
    on_fatal: Optional[Callable[[str], None]] = None,
    environ: Optional[Mapping[str, str]] = None,
) -> OutboundCredentials[AzureADCredentials]:
    """
    The credentials of every HTTP upstream with an C{azure_ad} section,
    each with a token client of its own.  Reads the environment and any
    certificate file now.

    @raise ConfigError: naming every setting that cannot be used, by key
        (and by environment variable when it came from there).
    """
    environ = os.environ if environ is None else environ
    metrics = TokenMetrics(registry)
    built: dict[str, AzureADCredentials] = {}
    problems: list[str] = []
    for name, upstream in upstreams.items():
        if not isinstance(upstream, HTTPUpstreamConfig) or upstream.azure_ad is None:
            continue
        config = upstream.azure_ad
        at = f"upstreams.{name}.azure_ad"
        try:
            resolved = resolve(config, environ, at)
            trust_root = load_trust_root(config.ca_file) if config.ca_file is not None else None
        except ConfigError as e:
            problems.extend(e.problems)
            continue
        except OSError as e:
            problems.append(f"{at}.ca_file: cannot load {config.ca_file}: {e.strerror}")
            continue
        except ValueError as e:
            problems.append(f"{at}.ca_file: {e}")
            continue
        if resolved.plain_http:
            _log.warn(
                "{at}: the authority {endpoint} is plain http: credentials and tokens cross "
                "it unencrypted (allowed on loopback only, for emulators and tests)",
                at=at,
                endpoint=resolved.source.endpoint,
            )
        client = HTTPClient(
            reactor,
            name=f"upstream {name} token endpoint",
            timeouts=TOKEN_TIMEOUTS,
            max_connections=2,
            trust_root=trust_root,
        )
        built[name] = AzureADCredentials(
            name,
            resolved.source,
            client,
            reactor,
            refresh_interval=config.refresh_interval,
            start_degraded=config.start_degraded,
            metrics=metrics,
            owns_client=True,
        )
    if problems:
        raise ConfigError(problems)
    return OutboundCredentials(built, on_fatal)
