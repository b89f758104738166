"""
Which address a request came from: the peer's, or the one a trusted proxy
says it forwarded for.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable
from typing import Any, Optional, Union

Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]
Address = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]


# Asked for every request's peer, and clients come back: parsing an
# address costs more than finding it here.
@functools.lru_cache(maxsize=4096)
def _parse(text: str) -> Optional[Address]:
    """
    C{text} as an address, IPv4-mapped IPv6 (C{::ffff:192.0.2.1}, how an
    IPv6 listener that also takes IPv4 sees IPv4 peers) as the IPv4
    address it is; L{None} when it is not an address.
    """
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


class ClientAddress:
    """
    C{X-Forwarded-For} is believed only from configured proxies, and then
    only up to the first hop that is not itself a trusted proxy: a client
    cannot make itself look like another by sending the header.
    """

    def __init__(self, trusted: Iterable[str]) -> None:
        self._trusted: list[Network] = [ipaddress.ip_network(t, strict=False) for t in trusted]

    def _is_trusted(self, ip: Address) -> bool:
        return any(ip in net for net in self._trusted)

    def of(self, request: Any) -> Optional[str]:
        peer = getattr(request.getClientAddress(), "host", None)
        if peer is None:
            return None
        peer_ip = _parse(str(peer))
        if peer_ip is None:
            return str(peer)
        address = str(peer_ip)
        if not self._trusted or not self._is_trusted(peer_ip):
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
            hop_ip = _parse(hop)
            if hop_ip is None:
                return address
            if not self._is_trusted(hop_ip):
                return str(hop_ip)
            address = str(hop_ip)
        return address
