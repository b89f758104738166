"""
Entra ID (Azure AD) tokens for upstreams such as Azure Monitor: the
credential kinds C{DefaultAzureCredential} reads from the environment
(client secret, client certificate, workload identity, managed identity),
a refresher per upstream that never stops, and their state for C{/health}
and C{/metrics}; with workers, the refreshers run in the main process and
each worker presents the tokens it is handed (L{RelayedCredentials}).
See C{docs/azure.rst}.
"""

from sealgw.credentials.azure._assertion import ClientCertificate, load_certificate
from sealgw.credentials.azure._refresher import (
    EXPIRY_MARGIN,
    STARTUP_DEADLINE,
    AzureADCredentials,
    NoToken,
    TokenMetrics,
    clock_duration,
    rfc3339,
)
from sealgw.credentials.azure._relayed import (
    RELAY_MARGIN,
    RelayedCredentials,
    RelayedState,
    RelayedTokens,
    build_relayed_credentials,
    describe_for_workers,
    read_state,
)
from sealgw.credentials.azure._resolve import ENVIRONMENT, Resolved, resolve
from sealgw.credentials.azure._service import (
    IssuedCredential,
    OutboundCredentials,
    build_credentials,
)
from sealgw.credentials.azure._sources import (
    AppServiceIdentitySource,
    ClientCertificateSource,
    ClientSecretSource,
    ManagedIdentitySource,
    TokenRequest,
    TokenSource,
    WorkloadIdentitySource,
)
from sealgw.credentials.azure._token import (
    Token,
    TokenError,
    TokenRefused,
    TokenUnavailable,
    parse_answer,
)

__all__ = [
    "ENVIRONMENT",
    "EXPIRY_MARGIN",
    "RELAY_MARGIN",
    "STARTUP_DEADLINE",
    "AppServiceIdentitySource",
    "AzureADCredentials",
    "ClientCertificate",
    "ClientCertificateSource",
    "ClientSecretSource",
    "IssuedCredential",
    "ManagedIdentitySource",
    "NoToken",
    "OutboundCredentials",
    "RelayedCredentials",
    "RelayedState",
    "RelayedTokens",
    "Resolved",
    "Token",
    "TokenError",
    "TokenMetrics",
    "TokenRefused",
    "TokenRequest",
    "TokenSource",
    "TokenUnavailable",
    "WorkloadIdentitySource",
    "build_credentials",
    "build_relayed_credentials",
    "describe_for_workers",
    "clock_duration",
    "load_certificate",
    "parse_answer",
    "read_state",
    "resolve",
    "rfc3339",
]
