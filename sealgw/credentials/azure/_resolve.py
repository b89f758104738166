"""
Which credential an upstream's C{azure_ad} section means: each setting
from the file or, when the file leaves it out, from the environment
variable C{DefaultAzureCredential} reads; then the first kind whose
settings are all there, in C{DefaultAzureCredential}'s order.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Optional

import attr

from sealgw.config import ConfigError, Secret
from sealgw.config._azure import DEFAULT_AUTHORITY, AzureADConfig, authority_url
from sealgw.config._problems import Invalid
from sealgw.credentials.azure._assertion import load_certificate
from sealgw.credentials.azure._sources import (
    IMDS_ENDPOINT,
    AppServiceIdentitySource,
    ClientCertificateSource,
    ClientSecretSource,
    ManagedIdentitySource,
    TokenSource,
    WorkloadIdentitySource,
)

#: The environment variable behind each key of C{azure_ad}.
ENVIRONMENT = {
    "tenant_id": "AZURE_TENANT_ID",
    "client_id": "AZURE_CLIENT_ID",
    "client_secret": "AZURE_CLIENT_SECRET",
    "client_certificate": "AZURE_CLIENT_CERTIFICATE_PATH",
    "client_certificate_password": "AZURE_CLIENT_CERTIFICATE_PASSWORD",
    "federated_token_file": "AZURE_FEDERATED_TOKEN_FILE",
    "authority_host": "AZURE_AUTHORITY_HOST",
    "imds_endpoint": "AZURE_POD_IDENTITY_AUTHORITY_HOST",
    "identity_endpoint": "IDENTITY_ENDPOINT",
    "identity_header": "IDENTITY_HEADER",
}

#: What each kind needs besides what every kind has.
NEEDS = {
    "client_secret": ("tenant_id", "client_id", "client_secret"),
    "client_certificate": ("tenant_id", "client_id", "client_certificate"),
    "workload_identity": ("tenant_id", "client_id", "federated_token_file"),
    "managed_identity": (),
}

_TENANT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.-]*$")
_CLIENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@attr.frozen
class Resolved:
    """
    The credential an C{azure_ad} section means.

    @ivar plain_http: the authority is plain http (on loopback): worth a
        warning at start-up.
    """

    source: TokenSource
    plain_http: bool = False


class _Settings:
    """
    The section's settings, each from the file or else the environment,
    and the problems found reading them (keyed as the file would be).
    """

    def __init__(self, config: AzureADConfig, environ: Mapping[str, str]) -> None:
        self.config = config
        self.environ = environ
        self.problems: list[Invalid] = []

    def where(self, key: str) -> str:
        return key if getattr(self.config, key) is not None else ENVIRONMENT[key]

    def text(self, key: str) -> Optional[str]:
        value = getattr(self.config, key)
        if value is not None:
            return str(value)
        return self.environ.get(ENVIRONMENT[key]) or None

    def secret(self, key: str) -> Optional[Secret]:
        value = getattr(self.config, key)
        if value is not None:
            assert isinstance(value, Secret)
            return value
        name = ENVIRONMENT[key]
        found = self.environ.get(name)
        return Secret(found, f"environment variable {name}") if found else None

    def problem(self, key: str, message: str) -> None:
        if getattr(self.config, key) is None:
            message = f"{ENVIRONMENT[key]}: {message}"
        self.problems.append(Invalid(message, at=[key]))

    def has(self, key: str) -> bool:
        if key in ("client_secret", "identity_header"):
            return self.secret(key) is not None
        return self.text(key) is not None


def resolve(
    config: AzureADConfig, environ: Optional[Mapping[str, str]] = None, at: str = "azure_ad"
) -> Resolved:
    """
    The credential C{config} means, reading the environment for what it
    leaves out, and the certificate file if it names one.

    @param at: the section's key path, for messages.
    @raise ConfigError: naming each problem by its key (and the
        environment variable, when the value came from there).
    """
    settings = _Settings(config, os.environ if environ is None else environ)
    kind = config.source
    if kind == "auto":
        kind = next(
            (k for k, needs in NEEDS.items() if needs and all(map(settings.has, needs))),
            "managed_identity",
        )
    missing = [key for key in NEEDS[kind] if not settings.has(key)]
    if missing:
        names = " and ".join(f"{key} (or {ENVIRONMENT[key]})" for key in missing)
        raise ConfigError([f"{at}.source: source {kind} needs {names}"])
    source, plain_http = _source(kind, settings)
    if settings.problems:
        raise ConfigError(f"{at}.{p.at[0]}: {p.message}" for p in settings.problems)
    assert source is not None
    return Resolved(source, plain_http)


def _source(kind: str, settings: _Settings) -> tuple[Optional[TokenSource], bool]:
    scope = settings.config.scope
    client_id = settings.text("client_id")
    if client_id is not None and not _CLIENT.match(client_id):
        settings.problem("client_id", f"{client_id!r} is not a client id")
    if kind == "managed_identity":
        return _managed_identity(settings, scope, client_id), False
    tenant_id = settings.text("tenant_id")
    assert tenant_id is not None and client_id is not None
    if not _TENANT.match(tenant_id):
        settings.problem("tenant_id", f"{tenant_id!r} is not a tenant id or domain")
    authority, plain_http = DEFAULT_AUTHORITY, False
    given = settings.text("authority_host")
    if given is not None:
        try:
            authority, plain_http = authority_url(given)
        except Invalid as e:
            settings.problem("authority_host", e.message)
    common = (authority, tenant_id, client_id, scope)
    if kind == "client_secret":
        secret = settings.secret("client_secret")
        assert secret is not None
        return ClientSecretSource(*common, secret=secret), plain_http
    if kind == "client_certificate":
        path = settings.text("client_certificate")
        assert path is not None
        password = settings.secret("client_certificate_password")
        try:
            certificate = load_certificate(path, password.value if password else None)
        except OSError as e:
            settings.problem("client_certificate", f"cannot read {path}: {e.strerror}")
            return None, plain_http
        except ValueError as e:
            settings.problem("client_certificate", str(e))
            return None, plain_http
        return ClientCertificateSource(*common, certificate=certificate), plain_http
    token_file = settings.text("federated_token_file")
    assert token_file is not None
    if not os.path.isfile(token_file):
        settings.problem("federated_token_file", f"{token_file} does not exist or is not a file")
    return WorkloadIdentitySource(*common, token_file=token_file), plain_http


def _managed_identity(
    settings: _Settings, scope: str, client_id: Optional[str]
) -> Optional[TokenSource]:
    endpoint = settings.text("identity_endpoint")
    header = settings.secret("identity_header")
    if endpoint is not None and header is not None:
        if not _http_url(endpoint):
            settings.problem("identity_endpoint", f"{endpoint!r} is not an http(s) URL")
        return AppServiceIdentitySource(scope, endpoint, header, client_id)
    imds = settings.text("imds_endpoint") or IMDS_ENDPOINT
    if not _http_url(imds):
        settings.problem("imds_endpoint", f"{imds!r} is not an http(s) URL")
    return ManagedIdentitySource(scope, client_id, imds)


def _http_url(value: str) -> bool:
    scheme, _, rest = value.partition("://")
    return scheme in ("http", "https") and bool(rest.strip("/"))
