"""
An upstream's C{azure_ad} section: the Entra ID (Azure AD) credentials
whose tokens are presented to Azure Monitor.  Every key left out is taken
from the environment variable C{DefaultAzureCredential} reads, when the
credentials are built (L{sealgw.credentials.azure}).
"""

from __future__ import annotations

import ipaddress
from typing import Annotated, Optional
from urllib.parse import urlsplit

import attr

from sealgw.config._problems import Invalid
from sealgw.config._rules import URL, ExistingFile, OneOf, Path, Rule, Seconds, SourceFile, text
from sealgw.config._secret import Secret

#: Azure Monitor's query API (managed Prometheus): the default.
QUERY_SCOPE = "https://prometheus.monitor.azure.com/.default"
#: Azure Monitor's ingestion (data collection endpoints and rules).
INGESTION_SCOPE = "https://monitor.azure.com/.default"

DEFAULT_AUTHORITY = "https://login.microsoftonline.com"

#: Where the credentials come from: C{auto} tries them in
#: C{DefaultAzureCredential}'s order.
SOURCES = ("auto", "client_secret", "client_certificate", "workload_identity", "managed_identity")


def is_loopback(host: Optional[str]) -> bool:
    if not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def authority_url(value: str) -> tuple[str, bool]:
    """
    An authority host as the URL tokens are asked from (no trailing
    slash), and whether it is plain http, which only a loopback host may
    be (a local emulator, tests).  A bare host name means https, as the
    Azure SDKs take it.

    @raise Invalid: for anything else.
    """
    url = value.strip().rstrip("/")
    if "://" not in url:
        url = "https://" + url
    parts = urlsplit(url)
    try:
        _ = parts.port
    except ValueError:
        raise Invalid(f"{value!r} is not a URL (bad port)") from None
    if parts.query or parts.fragment or not parts.hostname:
        raise Invalid(f"{value!r} is not an authority host URL")
    if parts.scheme == "https":
        return url, False
    if parts.scheme == "http" and is_loopback(parts.hostname):
        return url, True
    raise Invalid(
        f"{value!r}: the authority must be https:// (http:// only on a loopback address)"
    )


@attr.frozen
class AuthorityHost(Rule):
    def structure(self, value: object, file: SourceFile) -> str:
        return authority_url(text(value))[0]


@attr.frozen
class Scope(Rule):
    """
    A client-credentials scope: a resource followed by C{/.default}.
    """

    def structure(self, value: object, file: SourceFile) -> str:
        scope = text(value)
        if not scope.endswith("/.default") or len(scope) == len("/.default"):
            raise Invalid(f"{scope!r} is not a resource's /.default scope")
        return scope


@attr.frozen
class AzureADConfig:
    """
    Entra ID credentials for one upstream.  Each key left out is read from
    its environment variable when the gateway is built (the variable is
    named in brackets).

    @ivar source: which kind of credential; C{auto} takes the first whose
        settings are all there, in C{DefaultAzureCredential}'s order:
        client secret, client certificate, workload identity, managed
        identity (which needs nothing).
    @ivar tenant_id: [AZURE_TENANT_ID]
    @ivar client_id: [AZURE_CLIENT_ID]; for a managed identity, the
        user-assigned identity's client id.
    @ivar client_secret: [AZURE_CLIENT_SECRET]
    @ivar client_certificate: a PEM file with the certificate and its
        private key [AZURE_CLIENT_CERTIFICATE_PATH].
    @ivar client_certificate_password: the key's password, if it has one
        [AZURE_CLIENT_CERTIFICATE_PASSWORD].
    @ivar federated_token_file: workload identity's token file, re-read at
        every refresh [AZURE_FEDERATED_TOKEN_FILE].
    @ivar authority_host: where tokens are asked for [AZURE_AUTHORITY_HOST];
        https, or http on a loopback address only.
    @ivar imds_endpoint: the instance metadata service
        [AZURE_POD_IDENTITY_AUTHORITY_HOST], C{http://169.254.169.254}.
    @ivar identity_endpoint: App Service's managed identity endpoint
        [IDENTITY_ENDPOINT]; used with C{identity_header} [IDENTITY_HEADER].
    @ivar scope: what the token is for.
    @ivar refresh_interval: how often the token is renewed, and in any case
        by half its lifetime.
    @ivar start_degraded: start even when no token can be had at start-up
        (the upstream's requests are answered 503 until one is).
    @ivar ca_file: the CAs to trust for an https authority instead of the
        system's.
    """

    source: Annotated[str, OneOf(SOURCES)] = "auto"
    tenant_id: Optional[str] = None
    client_id: Optional[str] = None
    client_secret: Optional[Secret] = None
    client_certificate: Optional[ExistingFile] = None
    client_certificate_password: Optional[Secret] = None
    federated_token_file: Optional[Path] = None
    authority_host: Optional[Annotated[str, AuthorityHost()]] = None
    imds_endpoint: Optional[URL] = None
    identity_endpoint: Optional[URL] = None
    identity_header: Optional[Secret] = None
    scope: Annotated[str, Scope()] = QUERY_SCOPE
    refresh_interval: Seconds = 1800.0
    start_degraded: bool = False
    ca_file: Optional[ExistingFile] = None
