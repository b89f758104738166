"""
The daemon around the routes: listeners and TLS, health, logging, the
service that starts, reloads and drains the gateway, and, with workers,
the main process that supervises the worker processes
(L{sealgw.daemon.worker}).
"""

from sealgw.daemon._health import DEGRADED, DOWN, OK, Health
from sealgw.daemon._listeners import Listener, parse_endpoint, prepare_listener
from sealgw.daemon._logging import make_observer
from sealgw.daemon._service import GatewayService
from sealgw.daemon._supervisor import Supervisor
from sealgw.daemon._tls import ServerTLS, server_tls_options
from sealgw.daemon._view import DaemonView, Worker
from sealgw.daemon._workers import WorkersService

__all__ = [
    "DEGRADED",
    "DOWN",
    "DaemonView",
    "GatewayService",
    "Health",
    "Listener",
    "OK",
    "ServerTLS",
    "Supervisor",
    "Worker",
    "WorkersService",
    "make_observer",
    "parse_endpoint",
    "prepare_listener",
    "server_tls_options",
]
