"""
HTTP: the site and request types, the operational routes, the push routes,
and how a listener's resource is put together.
"""

from sealgw.web._channel import GatewayChannel
from sealgw.web._metrics import GatewayMetrics
from sealgw.web._ops import OpsRoutes
from sealgw.web._request import GatewayRequest
from sealgw.web._root import GatewayRoot
from sealgw.web._site import GatewaySite

__all__ = [
    "GatewayChannel",
    "GatewayMetrics",
    "GatewayRequest",
    "GatewayRoot",
    "GatewaySite",
    "OpsRoutes",
]
