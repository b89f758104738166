"""
The daemon around the routes: listeners and TLS, health, logging, and the
service that starts, reloads and drains the gateway.
"""

from sealgw.daemon._health import DEGRADED, DOWN, OK, Health
from sealgw.daemon._listeners import Listener, parse_endpoint, prepare_listener
from sealgw.daemon._logging import make_observer
from sealgw.daemon._service import GatewayService
from sealgw.daemon._tls import ServerTLS, server_tls_options

__all__ = [
    "DEGRADED",
    "DOWN",
    "GatewayService",
    "Health",
    "Listener",
    "OK",
    "ServerTLS",
    "make_observer",
    "parse_endpoint",
    "prepare_listener",
    "server_tls_options",
]
