"""
Outbound credentials: what sealgw presents to the services it calls.  The
HTTP client (L{sealgw.http}) asks an L{ICredentials} before every request.
"""

from sealgw.credentials._interfaces import ICredentials
from sealgw.credentials._static import (
    BasicAuthCredentials,
    BearerCredentials,
    NoCredentials,
    credentials_for,
)

__all__ = [
    "BasicAuthCredentials",
    "BearerCredentials",
    "ICredentials",
    "NoCredentials",
    "credentials_for",
]
