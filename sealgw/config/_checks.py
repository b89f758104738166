"""
The rules that tie one field of a section to another, run on each section
once it is structured.  Each check names the fields it reads, so that it
still runs when another field of the section is broken, and yields an
L{Invalid} naming the key it is about.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

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


@check(ListenerConfig, "endpoint", "tls")
def _listener(listener: ListenerConfig) -> Iterator[Invalid]:
    if listener.endpoint.startswith("ssl:") and listener.tls is None:
        yield Invalid("an ssl: endpoint needs a tls section with certificate and key", at=["tls"])


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


@check(HTTPUpstreamConfig, "basic_auth", "bearer_token")
def _http_upstream(upstream: HTTPUpstreamConfig) -> Iterator[Invalid]:
    if upstream.basic_auth is not None and upstream.bearer_token is not None:
        yield Invalid("give either basic_auth or bearer_token, not both", at=["bearer_token"])


@check(OIDCConfig, "mode", "audience")
def _oidc(oidc: OIDCConfig) -> Iterator[Invalid]:
    if oidc.mode in ("auto", "jwt") and not oidc.audience:
        yield Invalid("required when JWTs are verified locally", at=["audience"])


@check(SecretSource, "file", "env")
def _secret_source(source: SecretSource) -> Iterator[Invalid]:
    if (source.file is None) == (source.env is None):
        yield Invalid("give exactly one of an inline string, file or env")
