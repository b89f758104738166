"""
sealgw: a secure, multi-tenant gateway for observability data.

Requests come in through L{sealgw.web}, are authenticated by
L{sealgw.auth}, given a tenant by L{sealgw.tenancy}, decoded by
L{sealgw.signals} and handed to L{sealgw.relay}, which delivers them
upstream.  L{sealgw.tap} puts the pieces together for C{twistd}.
"""

from sealgw._version import __version__

__all__ = ["__version__"]
