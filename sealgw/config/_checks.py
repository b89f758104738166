"""
The rules that tie one field of a section to another, run on each section
once it is structured.  Each check names the fields it reads, so that it
still runs when another field of the section is broken, and yields an
L{Invalid} naming the key it is about.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import attr

from sealgw.config._auth import OIDCConfig
from sealgw.config._model import (
    HTTPUpstreamConfig,
    LimitsConfig,
    ListenerConfig,
    RetryConfig,
    TLSConfig,
)
from sealgw.config._problems import Invalid
from sealgw.config._secret import SecretSource


@attr.frozen
class Check:
    reads: frozenset[str]
    check: Callable[[Any], Iterator[Invalid]]

    def __call__(self, section: Any) -> Iterator[Invalid]:
        return self.check(section)


CHECKS: dict[type, Check] = {}


def check(cls: type, *reads: str) -> Callable[[Callable[[Any], Iterator[Invalid]]], Any]:
    """
    Register the decorated function as the check of C{cls}'s sections; it
    reads the fields named C{reads}.
    """

    def register(function: Callable[[Any], Iterator[Invalid]]) -> Any:
        CHECKS[cls] = Check(frozenset(reads), function)
        return function

    return register


@check(ListenerConfig, "endpoint", "tls", "auth", "identity", "ops", "protocol")
def _listener(listener: ListenerConfig) -> Iterator[Invalid]:
    if listener.protocol == "otlp-grpc" and listener.ops:
        yield Invalid(
            "an otlp-grpc listener serves only the OTLP gRPC services: put /health, /ready "
            "and /metrics on an http listener or the admin listener",
            at=["ops"],
        )
    if listener.endpoint.startswith("ssl:") and listener.tls is None:
        yield Invalid("an ssl: endpoint needs a tls section with certificate and key", at=["tls"])
    if listener.auth == "none":
        if not _local_only(listener.endpoint):
            yield Invalid(
                f"auth: none is only allowed on a loopback address or a unix socket, "
                f"not {listener.endpoint!r}",
                at=["auth"],
            )
        if listener.identity is None:
            yield Invalid("required with auth: none", at=["identity"])
    elif listener.identity is not None:
        yield Invalid("only used with auth: none", at=["identity"])


def _endpoint_parts(endpoint: str) -> list[str]:
    """
    An endpoint string split on its colons, backslash escapes undone, as
    Twisted reads it (C{tcp6:8080:interface=\\:\\:1}).
    """
    parts, current, escaped = [], "", False
    for c in endpoint:
        if escaped:
            current, escaped = current + c, False
        elif c == "\\":
            escaped = True
        elif c == ":":
            parts.append(current)
            current = ""
        else:
            current += c
    return [*parts, current]


def _backend_urls(upstream: HTTPUpstreamConfig) -> Iterator[Invalid]:
    """
    C{url} or C{urls}, not both, nor neither; C{urls}' backends differ in
    host and port only, since one request's path and query are sent to
    whichever of them is picked; none is listed twice.
    """
    if upstream.both_urls:
        yield Invalid("give either url (one backend) or urls (several), not both", at=["urls"])
        return
    if not upstream.urls:
        yield Invalid("required: url (one backend) or urls (several)", at=["url"])
        return
    first = urlsplit(upstream.urls[0])
    seen: set[tuple[str, int]] = set()
    for index, url in enumerate(upstream.urls):
        parts = urlsplit(url)
        if (parts.scheme, parts.path.rstrip("/"), parts.query) != (
            first.scheme, first.path.rstrip("/"), first.query
        ):
            yield Invalid(
                f"{url!r} differs from {upstream.urls[0]!r} in more than host and port: "
                "an upstream's backends serve the same paths",
                at=["urls", index],
            )
        where = (parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80))
        if where in seen:
            yield Invalid(f"{url!r} is listed twice", at=["urls", index])
        seen.add(where)


def _local_only(endpoint: str) -> bool:
    """
    Whether only this host can connect to C{endpoint}: a unix socket, or
    TCP bound to a loopback address (a systemd socket cannot be told).
    """
    kind, *rest = _endpoint_parts(endpoint)
    if kind == "unix":
        return True
    if kind not in ("tcp", "tcp6", "ssl"):
        return False
    options = dict(part.split("=", 1) for part in rest if "=" in part)
    try:
        return ipaddress.ip_address(options.get("interface", "")).is_loopback
    except ValueError:
        return False


@check(TLSConfig, "client_certificates", "client_ca")
def _tls(tls: TLSConfig) -> Iterator[Invalid]:
    if tls.client_certificates != "none" and tls.client_ca is None:
        yield Invalid(
            f"required when client_certificates is {tls.client_certificates!r}",
            at=["client_ca"],
        )


@check(LimitsConfig, "max_body", "max_decompressed")
def _limits(limits: LimitsConfig) -> Iterator[Invalid]:
    if limits.max_decompressed < limits.max_body:
        yield Invalid("must not be smaller than max_body", at=["max_decompressed"])


@check(RetryConfig, "initial_backoff", "max_backoff")
def _retry(retry: RetryConfig) -> Iterator[Invalid]:
    if retry.max_backoff < retry.initial_backoff:
        yield Invalid("must not be shorter than initial_backoff", at=["max_backoff"])


@check(HTTPUpstreamConfig, "url", "urls", "basic_auth", "bearer_token", "azure_ad")
def _http_upstream(upstream: HTTPUpstreamConfig) -> Iterator[Invalid]:
    yield from _backend_urls(upstream)
    if upstream.basic_auth is not None and upstream.bearer_token is not None:
        yield Invalid("give either basic_auth or bearer_token, not both", at=["bearer_token"])
    if upstream.azure_ad is not None and (
        upstream.basic_auth is not None or upstream.bearer_token is not None
    ):
        yield Invalid(
            "azure_ad presents its own token: give no basic_auth or bearer_token with it",
            at=["azure_ad"],
        )


@check(OIDCConfig, "mode", "audience")
def _oidc(oidc: OIDCConfig) -> Iterator[Invalid]:
    if oidc.mode in ("auto", "jwt") and not oidc.audience:
        yield Invalid("required when JWTs are verified locally", at=["audience"])


@check(SecretSource, "file", "env")
def _secret_source(source: SecretSource) -> Iterator[Invalid]:
    if (source.file is None) == (source.env is None):
        yield Invalid("give exactly one of an inline string, file or env")
