"""
Which address a request came from: the peer's, or the one a trusted proxy
says it forwarded for.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Any, Optional, Union

Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]


class ClientAddress:
    """
    C{X-Forwarded-For} is believed only from configured proxies, and then
    only up to the first hop that is not itself a trusted proxy: a client
    cannot make itself look like another by sending the header.
    """

    def __init__(self, trusted: Iterable[str]) -> None:
        self._trusted: list[Network] = [ipaddress.ip_network(t, strict=False) for t in trusted]

    def _is_trusted(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in net for net in self._trusted)

    def of(self, request: Any) -> Optional[str]:
        peer = getattr(request.getClientAddress(), "host", None)
        if peer is None:
            return None
        address = str(peer)
        if not self._trusted or not self._is_trusted(address):
            return address
        forwarded = request.requestHeaders.getRawHeaders(b"x-forwarded-for") or []
        hops = [
            h.strip().decode("latin-1")
            for value in forwarded
            for h in value.split(b",")
            if h.strip()
        ]
        # Walk from the nearest hop back; the first untrusted one is the client.
        for hop in reversed(hops):
            try:
                ipaddress.ip_address(hop)
            except ValueError:
                return address
            if not self._is_trusted(hop):
                return hop
            address = hop
        return address
