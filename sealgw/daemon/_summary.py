"""
The few lines a gateway logs once it listens: where it listens, which
routes go to which upstream, and where identities come from; so that
whoever started it sees at once what it serves, and what a token must be
to be let in.  Never a secret: upstream URLs lose their user information
and query, and identity sources are named by where they are, not by what
they hold.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import attr

from sealgw.config import Config, FileUpstreamConfig, ListenerConfig

_EVERY_INTERFACE = ("0.0.0.0", "::", "")


@attr.frozen
class Bound:
    """
    One listener as it was bound: its configured endpoint, where it sits
    in the configuration, and the address the system gave it.
    """

    where: str
    config: ListenerConfig
    address: str


def start_summary(config: Config, bound: Iterable[Bound]) -> str:
    """
    The summary, as lines: the first says where the configuration came
    from, each next one (indented) a part of it.
    """
    workers = f" with {config.workers} worker processes" if config.workers > 1 else ""
    lines = [f"sealgw serving {config.source}{workers}"]
    lines.append("  listening: " + "; ".join(_listener(b) for b in bound))
    lines.append("  push: " + (_routes(config, "push") or "none"))
    lines.append("  reads: " + (_routes(config, "query") or "none"))
    lines.append("  upstreams: " + ("; ".join(_upstreams(config)) or "none"))
    lines.append("  identities: " + _identities(config))
    return "\n".join(lines)


def bound_listeners(listeners: Iterable[Any]) -> list[Bound]:
    """
    L{Bound} for each of a service's listeners (L{sealgw.daemon.Listener}).
    """
    return [Bound(li.where, li.config, _address(li.port)) for li in listeners]


def _address(port: Any) -> str:
    try:
        host = port.getHost()
    except AttributeError:
        return "?"
    if hasattr(host, "port"):
        name = str(host.host)
        return f"[{name}]:{host.port}" if ":" in name else f"{name}:{host.port}"
    path = getattr(host, "name", None)  # a unix socket's
    if isinstance(path, bytes):
        return path.decode(errors="replace")
    return str(path if path is not None else host)


def _listener(bound: Bound) -> str:
    scheme = "https://" if bound.config.tls is not None else "http://"
    if bound.address.startswith(("/", "?")):  # a unix socket, or not known
        scheme = ""
    parts = [bound.where]
    if scheme and bound.address.rpartition(":")[0].strip("[]") in _EVERY_INTERFACE:
        parts.append("every interface")
    if bound.config.protocol == "otlp-grpc":
        parts.append("OTLP over gRPC only")
    if bound.where == "admin":
        parts.append("health, readiness and metrics only")
    elif bound.config.ops:
        parts.append("with health, readiness and metrics")
    if bound.config.auth == "none":
        parts.append(f"no authentication: every request is {bound.config.identity!r}")
    return f"{scheme}{bound.address} ({', '.join(parts)})"


def _routes(config: Config, section: str) -> str:
    """
    Routes grouped by upstream: C{remote_write, seal -> mimir; loki -> loki}.
    """
    routes = getattr(config, section)
    by_upstream: dict[str, list[str]] = {}
    for field in attr.fields(type(routes)):
        value = getattr(routes, field.name)
        route = getattr(value, "route", value)
        upstream = getattr(route, "upstream", None)
        if isinstance(upstream, str):
            by_upstream.setdefault(upstream, []).append(field.name)
    return "; ".join(f"{', '.join(names)} -> {name}" for name, names in by_upstream.items())


def _upstreams(config: Config) -> Iterable[str]:
    for name, upstream in config.upstreams.items():
        if isinstance(upstream, FileUpstreamConfig):
            yield f"{name} (files in {upstream.directory})"
        else:
            yield f"{name} ({_public_url(upstream.url)})"


def _public_url(url: str) -> str:
    """
    C{url} without what may be a secret: user information and query.
    """
    parts = urlsplit(url)
    netloc = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _identities(config: Config) -> str:
    auth = config.auth
    sources: list[str] = []
    if auth.token_file is not None:
        sources.append(f"token file {auth.token_file.path}")
    if auth.oidc is not None:
        sources.append(f"OIDC tokens from {_public_url(auth.oidc.issuer)}")
    if auth.client_certificates is not None:
        sources.append(
            f"client certificates ({len(auth.client_certificates.identities)} identities)"
        )
    open_ = [li.endpoint for li in config.listeners if li.auth == "none"]
    if open_:
        sources.append("no authentication on " + ", ".join(open_))
    if not sources:
        return "none: every request that needs a token is refused (401)"
    return "; ".join(sources)
