"""
The kinds of Entra ID credential, each as the token request it makes:
client secret, client certificate and workload identity (the v2 token
endpoint's client credentials grant), and managed identity (the instance
metadata service, or App Service's identity endpoint).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Optional, Protocol
from urllib.parse import urlencode

import attr

from sealgw.config import Secret
from sealgw.credentials.azure._assertion import CLIENT_ASSERTION_TYPE, ClientCertificate
from sealgw.credentials.azure._token import TokenUnavailable

FORM = "application/x-www-form-urlencoded"

#: The instance metadata service's address, and the API version whose
#: answers this reads.
IMDS_ENDPOINT = "http://169.254.169.254"
IMDS_PATH = "/metadata/identity/oauth2/token"
IMDS_API_VERSION = "2018-02-01"
APP_SERVICE_API_VERSION = "2019-08-01"


@attr.frozen(repr=False)
class TokenRequest:
    """
    One request for a token.  Its C{repr} names only the method and URL:
    the body and headers carry secrets.
    """

    method: str
    url: str
    query: tuple[tuple[str, str], ...] = ()
    headers: Mapping[str, str] = attr.field(factory=dict)
    body: Optional[bytes] = None
    content_type: Optional[str] = None

    def __repr__(self) -> str:
        return f"<TokenRequest {self.method} {self.url}>"


class TokenSource(Protocol):
    """
    One credential: what kind it is, how to name it in a message, and the
    request that gets a token.
    """

    kind: str

    @property
    def endpoint(self) -> str:
        """Where tokens are asked for, for messages."""

    def describe(self) -> str:
        """The credential in a few words, with no secret in them."""

    def token_request(self, now: float) -> TokenRequest:
        """
        The request to send now.

        @raise TokenUnavailable: when it cannot be made (a token file that
            cannot be read).
        """


def resource_of(scope: str) -> str:
    """
    A managed identity asks for a resource, not a scope.
    """
    return scope[: -len("/.default")] if scope.endswith("/.default") else scope


def _grant(client_id: str, scope: str, **fields: str) -> bytes:
    form = {"grant_type": "client_credentials", "client_id": client_id, "scope": scope}
    form.update(fields)
    return urlencode(form).encode("ascii")


@attr.frozen
class _ClientCredentials:
    authority: str
    tenant_id: str
    client_id: str
    scope: str

    @property
    def endpoint(self) -> str:
        return f"{self.authority}/{self.tenant_id}/oauth2/v2.0/token"

    def _who(self) -> str:
        return f"tenant {self.tenant_id}, client {self.client_id}"

    def _assertion_request(self, assertion: str) -> TokenRequest:
        """
        The client-credentials grant proved by a signed assertion (a
        certificate's, or a federated token).
        """
        body = _grant(
            self.client_id,
            self.scope,
            client_assertion_type=CLIENT_ASSERTION_TYPE,
            client_assertion=assertion,
        )
        return TokenRequest("POST", self.endpoint, body=body, content_type=FORM)


@attr.frozen
class ClientSecretSource(_ClientCredentials):
    secret: Secret = attr.field(kw_only=True)
    kind = "client_secret"

    def describe(self) -> str:
        return f"client secret ({self._who()}, secret from {self.secret.origin})"

    def token_request(self, now: float) -> TokenRequest:
        body = _grant(self.client_id, self.scope, client_secret=self.secret.value)
        return TokenRequest("POST", self.endpoint, body=body, content_type=FORM)


@attr.frozen
class ClientCertificateSource(_ClientCredentials):
    certificate: ClientCertificate = attr.field(kw_only=True)
    kind = "client_certificate"

    def describe(self) -> str:
        return (
            f"client certificate ({self._who()}, thumbprint {self.certificate.thumbprint} "
            f"from {self.certificate.path})"
        )

    def token_request(self, now: float) -> TokenRequest:
        return self._assertion_request(
            self.certificate.assertion(self.client_id, self.endpoint, now)
        )


@attr.frozen
class WorkloadIdentitySource(_ClientCredentials):
    """
    The token file is read for every request: Kubernetes rotates it.
    """

    token_file: str = attr.field(kw_only=True)
    kind = "workload_identity"

    def describe(self) -> str:
        return f"workload identity ({self._who()}, token file {self.token_file})"

    def token_request(self, now: float) -> TokenRequest:
        try:
            with open(self.token_file, encoding="utf-8") as f:
                assertion = f.read().strip()
        except OSError as e:
            raise TokenUnavailable(f"cannot read {self.token_file}: {e.strerror}") from None
        if not assertion:
            raise TokenUnavailable(f"{self.token_file} is empty")
        return self._assertion_request(assertion)


@attr.frozen
class ManagedIdentitySource:
    """
    The instance metadata service (VMs, AKS nodes): a GET with
    C{Metadata: true}; its answer's numbers are strings.
    """

    scope: str
    client_id: Optional[str] = None
    imds: str = IMDS_ENDPOINT
    kind = "managed_identity"

    @property
    def endpoint(self) -> str:
        return self.imds.rstrip("/") + IMDS_PATH

    def describe(self) -> str:
        who = f"client {self.client_id}" if self.client_id else "system-assigned"
        return f"managed identity ({who}, IMDS {self.imds})"

    def token_request(self, now: float) -> TokenRequest:
        query = [("api-version", IMDS_API_VERSION), ("resource", resource_of(self.scope))]
        if self.client_id:
            query.append(("client_id", self.client_id))
        return TokenRequest("GET", self.endpoint, tuple(query), {"Metadata": "true"})


@attr.frozen
class AppServiceIdentitySource:
    """
    App Service's (and Functions', Container Apps') managed identity
    endpoint, C{IDENTITY_ENDPOINT} with C{IDENTITY_HEADER}.
    """

    scope: str
    identity_endpoint: str
    identity_header: Secret
    client_id: Optional[str] = None
    kind = "managed_identity"

    @property
    def endpoint(self) -> str:
        return self.identity_endpoint

    def describe(self) -> str:
        who = f"client {self.client_id}" if self.client_id else "system-assigned"
        return f"managed identity ({who}, App Service endpoint {self.identity_endpoint})"

    def token_request(self, now: float) -> TokenRequest:
        query = [("api-version", APP_SERVICE_API_VERSION), ("resource", resource_of(self.scope))]
        if self.client_id:
            query.append(("client_id", self.client_id))
        return TokenRequest(
            "GET",
            self.identity_endpoint,
            tuple(query),
            {"X-IDENTITY-HEADER": self.identity_header.value},
        )
