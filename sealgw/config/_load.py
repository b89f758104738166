"""
Turn a YAML file (sealgw's own, or seal-proxy's) into a L{Config}.
"""

from __future__ import annotations

import ipaddress
import os
import re
from typing import Any, Optional

import attr
import yaml

from sealgw.config._auth import AUTH_KEYS, TokenFileConfig, read_auth
from sealgw.config._model import (
    BasicAuthConfig,
    Config,
    FileUpstreamConfig,
    HTTPUpstreamConfig,
    LabelActions,
    LimitsConfig,
    ListenerConfig,
    LogConfig,
    PushConfig,
    RemoteWriteConfig,
    RetryConfig,
    RouteConfig,
    SealPushConfig,
    TenancyConfig,
    TimeoutsConfig,
    TLSConfig,
    UpstreamConfig,
)
from sealgw.config._reader import ConfigError, Reader, Table
from sealgw.tenancy import TenantError, parse_tenant

TOP_KEYS = (
    "listeners",
    "admin",
    "log",
    "limits",
    "upstreams",
    "push",
    "auth",
    "tenancy",
    "trusted_proxies",
    "drain_grace",
)

SEAL_PROXY_KEYS = (
    "listen-address",
    "metrics-address",
    "label-actions",
    "remote-write",
)

LISTENER_KEYS = ("endpoint", "tls", "ops")
TLS_KEYS = ("certificate", "key", "client_ca", "client_certificates")
HTTP_UPSTREAM_KEYS = (
    "type",
    "url",
    "timeouts",
    "retry",
    "headers",
    "basic_auth",
    "bearer_token",
    "ca_file",
    "max_connections",
    "max_response_body",
)
FILE_UPSTREAM_KEYS = ("type", "directory", "rotate_size", "keep")
PUSH_KEYS = (
    "remote_write",
    "seal",
    "loki",
    "otlp_traces",
    "otlp_metrics",
    "otlp_logs",
)
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_ENDPOINT_TYPES = ("tcp", "tcp6", "ssl", "unix", "systemd")


def load(path: str, bearer_tokens_path: Optional[str] = None) -> Config:
    """
    Read, validate and freeze the configuration at C{path}.

    @param bearer_tokens_path: seal-proxy's C{--bearer-tokens-path}; it
        overrides C{auth.token_file.path}.
    @raise ConfigError: listing every problem found.
    """
    source = path
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise ConfigError([f"{source}: cannot read: {e.strerror}"]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(e, "problem", None) or str(e)
        raise ConfigError([f"{source}: not valid YAML{where}: {problem}"]) from None
    reader = Reader(source, os.path.dirname(os.path.abspath(path)))
    if isinstance(data, dict) and any(k in data for k in SEAL_PROXY_KEYS):
        config = _read_seal_proxy(reader, data, bearer_tokens_path)
    else:
        config = read(reader, data, bearer_tokens_path)
    reader.raise_if_problems()
    return config


def read(
    reader: Reader, data: Any, bearer_tokens_path: Optional[str] = None
) -> Config:
    """
    Read sealgw's own configuration format from parsed YAML.
    """
    top = reader.table(data, "", TOP_KEYS)
    listeners = tuple(
        _read_listener(lt) for lt in top.tables("listeners", LISTENER_KEYS)
    )
    if not listeners:
        reader.problem("listeners", "at least one listener is required")
    admin = None
    at = top.table("admin", LISTENER_KEYS)
    if at is not None:
        admin = _read_listener(at)

    log = LogConfig()
    lt = top.table("log", ["format", "level", "access"])
    if lt is not None:
        log = LogConfig(
            format=lt.choice("format", ["text", "json"], "text"),
            level=lt.choice(
                "level", ["debug", "info", "warn", "error", "critical"], "info"
            ),
            access=lt.bool("access", True),
        )

    limits = LimitsConfig()
    mt = top.table("limits", ["max_body", "max_decompressed"])
    if mt is not None:
        limits = LimitsConfig(
            max_body=mt.size("max_body", limits.max_body),
            max_decompressed=mt.size("max_decompressed", limits.max_decompressed),
        )
        if limits.max_decompressed < limits.max_body:
            mt.problem("max_decompressed", "must not be smaller than max_body")

    upstreams: dict[str, UpstreamConfig] = {}
    ut = top.table("upstreams", None)
    if ut is not None:
        for name in ut.keys():
            upstream = _read_upstream(ut, name)
            if upstream is not None:
                upstreams[name] = upstream

    push = _read_push(top.table("push", PUSH_KEYS), upstreams)

    auth = read_auth(top.table("auth", AUTH_KEYS))
    if bearer_tokens_path is not None:
        auth = _with_token_file(auth, os.path.abspath(bearer_tokens_path))

    tenancy = TenancyConfig()
    tt = top.table("tenancy", ["header", "federation", "default_tenant"])
    if tt is not None:
        header = tt.str("header", tenancy.header)
        if header and not _HEADER_NAME.match(header):
            tt.problem("header", "not a valid HTTP header name")
        default_tenant = tt.str("default_tenant", tenancy.default_tenant)
        try:
            parse_tenant(default_tenant)
        except TenantError as e:
            tt.problem("default_tenant", str(e))
        tenancy = TenancyConfig(
            header=header or tenancy.header,
            federation=tt.bool("federation", False),
            default_tenant=default_tenant or tenancy.default_tenant,
        )

    trusted = top.str_list("trusted_proxies", ())
    for i, cidr in enumerate(trusted or ()):
        try:
            ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            reader.problem(f"trusted_proxies[{i}]", f"{cidr!r} is not an address or CIDR")

    return Config(
        source=reader.source,
        listeners=listeners,
        admin=admin,
        log=log,
        limits=limits,
        upstreams=upstreams,
        push=push,
        auth=auth,
        tenancy=tenancy,
        trusted_proxies=tuple(trusted or ()),
        drain_grace=top.duration("drain_grace", 30.0, positive=False),
    )


def _with_token_file(auth: Any, path: str) -> Any:
    watch = auth.token_file.watch_interval if auth.token_file else 5.0
    return attr.evolve(auth, token_file=TokenFileConfig(path=path, watch_interval=watch))


def _read_listener(t: Table) -> ListenerConfig:
    endpoint = t.str("endpoint")
    tls = None
    tt = t.table("tls", TLS_KEYS)
    if endpoint is not None:
        kind = endpoint.split(":", 1)[0]
        if kind not in _ENDPOINT_TYPES:
            t.problem(
                "endpoint",
                f"{endpoint!r} is not an endpoint string this gateway serves "
                "(tcp:PORT, ssl:PORT, unix:PATH or systemd:domain=INET:index=N)",
            )
        elif kind == "ssl" and tt is None:
            t.problem("tls", "an ssl: endpoint needs a tls section with certificate and key")
    if tt is not None:
        mode = tt.choice(
            "client_certificates", ["none", "optional", "required"], "none"
        )
        tls = TLSConfig(
            certificate=_existing_file(tt, "certificate") or "",
            key=_existing_file(tt, "key") or "",
            client_ca=_existing_file(tt, "client_ca", optional=True),
            client_certificates=mode or "none",
        )
        if tls.client_certificates != "none" and tls.client_ca is None and "client_ca" not in tt:
            tt.problem("client_ca", f"required when client_certificates is {mode!r}")
    return ListenerConfig(endpoint=endpoint or "", tls=tls, ops=t.bool("ops", False))


def _existing_file(t: Table, key: str, optional: bool = False) -> Optional[str]:
    if key not in t:
        if not optional:
            t.problem(key, "required")
        return None
    path = t.path_(key)
    if path is None:
        return None
    if not os.path.isfile(path):
        t.problem(key, f"{path} does not exist or is not a file")
        return None
    return str(path)


def _read_upstream(parent: Table, name: str) -> Optional[UpstreamConfig]:
    raw = parent.raw(name)
    kind = raw.get("type", "http") if isinstance(raw, dict) else "http"
    if kind == "file":
        t = parent.reader.table(raw, parent.at(name), FILE_UPSTREAM_KEYS)
        return FileUpstreamConfig(
            name=name,
            directory=t.path_("directory"),
            rotate_size=t.size("rotate_size", 64 * 1024 * 1024),
            keep=t.int("keep", 5, minimum=1),
        )
    t = parent.reader.table(raw, parent.at(name), HTTP_UPSTREAM_KEYS)
    t.choice("type", ["http", "file"], "http")
    timeouts = TimeoutsConfig()
    tt = t.table("timeouts", ["connect", "response", "body"])
    if tt is not None:
        timeouts = TimeoutsConfig(
            connect=tt.duration("connect", timeouts.connect),
            response=tt.duration("response", timeouts.response),
            body=tt.duration("body", timeouts.body),
        )
    retry = RetryConfig()
    rt = t.table("retry", ["attempts", "initial_backoff", "max_backoff", "deadline"])
    if rt is not None:
        retry = RetryConfig(
            attempts=rt.int("attempts", retry.attempts, minimum=1),
            initial_backoff=rt.duration("initial_backoff", retry.initial_backoff),
            max_backoff=rt.duration("max_backoff", retry.max_backoff),
            deadline=rt.duration("deadline", retry.deadline),
        )
        if retry.max_backoff < retry.initial_backoff:
            rt.problem("max_backoff", "must not be shorter than initial_backoff")
    headers = t.str_map("headers", {})
    for header in headers or {}:
        if not _HEADER_NAME.match(header):
            t.problem(f"headers.{header}", "not a valid HTTP header name")
    basic = None
    bt = t.table("basic_auth", ["username", "password"])
    if bt is not None:
        basic = BasicAuthConfig(username=bt.str("username") or "", password=bt.secret("password"))
    bearer = t.secret("bearer_token", None)
    if basic is not None and bearer is not None:
        t.problem("bearer_token", "give either basic_auth or bearer_token, not both")
    return HTTPUpstreamConfig(
        name=name,
        url=t.url("url") or "",
        timeouts=timeouts,
        retry=retry,
        headers=headers or {},
        basic_auth=basic,
        bearer_token=bearer,
        ca_file=_existing_file(t, "ca_file", optional=True),
        max_connections=t.int("max_connections", 10, minimum=1),
        max_response_body=t.size("max_response_body", 1024 * 1024),
    )


def _read_route(t: Optional[Table], upstreams: dict[str, UpstreamConfig]) -> Optional[RouteConfig]:
    if t is None:
        return None
    name = t.str("upstream")
    if name is not None and name not in upstreams:
        known = ", ".join(sorted(upstreams)) or "none are configured"
        t.problem("upstream", f"no upstream named {name!r} ({known})")
    path = t.str("path", "")
    if path and not path.startswith("/"):
        t.problem("path", "must start with /")
    return RouteConfig(upstream=name or "", path=path or "")


def _read_labels(t: Optional[Table]) -> LabelActions:
    if t is None:
        return LabelActions()
    add = t.str_map("add", {})
    remove_raw = t.raw("remove")
    remove: frozenset[str] = frozenset()
    if isinstance(remove_raw, dict):
        # seal-proxy writes remove as a mapping; only its keys matter.
        remove = frozenset(str(k) for k in remove_raw)
    elif remove_raw is not None:
        remove = frozenset(t.str_list("remove", ()) or ())
    return LabelActions(add=add or {}, remove=remove)


def _read_push(t: Optional[Table], upstreams: dict[str, UpstreamConfig]) -> PushConfig:
    if t is None:
        return PushConfig()
    route_keys = ["upstream", "path"]
    rw = None
    rwt = t.table("remote_write", route_keys + ["labels"])
    if rwt is not None:
        rw = RemoteWriteConfig(
            route=_read_route(rwt, upstreams),  # type: ignore[arg-type]
            labels=_read_labels(rwt.table("labels", ["add", "remove"])),
        )
    seal = None
    st = t.table("seal", route_keys + ["labels", "batch_size"])
    if st is not None:
        seal = SealPushConfig(
            route=_read_route(st, upstreams),  # type: ignore[arg-type]
            labels=_read_labels(st.table("labels", ["add", "remove"])),
            batch_size=st.int("batch_size", 500, minimum=1),
        )
    return PushConfig(
        remote_write=rw,
        seal=seal,
        loki=_read_route(t.table("loki", route_keys), upstreams),
        otlp_traces=_read_route(t.table("otlp_traces", route_keys), upstreams),
        otlp_metrics=_read_route(t.table("otlp_metrics", route_keys), upstreams),
        otlp_logs=_read_route(t.table("otlp_logs", route_keys), upstreams),
    )


def _seal_address(t: Table, key: str, default: str) -> Optional[str]:
    """
    seal-proxy's C{host:port} as a Twisted endpoint string.
    """
    value = t.str(key, default)
    if value is None:
        return None
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        t.problem(key, f"{value!r} is not HOST:PORT")
        return None
    host = host.strip("[]")
    if host in ("", "0.0.0.0"):
        return f"tcp:{port}"
    if ":" in host:
        return f"tcp6:{port}:interface={host.replace(':', chr(92) + ':')}"
    return f"tcp:{port}:interface={host}"


def _read_seal_proxy(
    reader: Reader, data: Any, bearer_tokens_path: Optional[str]
) -> Config:
    """
    seal-proxy's own C{seal-proxy.yaml}, taken as it is: one listener, a
    metrics address, label actions and one remote-write upstream.
    """
    top = reader.table(data, "", SEAL_PROXY_KEYS)
    listen = _seal_address(top, "listen-address", "0.0.0.0:8000")
    metrics = _seal_address(top, "metrics-address", "0.0.0.0:9185")
    labels = _read_labels(top.table("label-actions", ["add", "remove"]))
    upstreams: dict[str, UpstreamConfig] = {}
    rt = top.table(
        "remote-write", ["url", "username", "password", "pool-max-idle-per-host"]
    )
    if rt is None:
        reader.problem("remote-write", "required")
    else:
        basic = None
        if "username" in rt or "password" in rt:
            basic = BasicAuthConfig(
                username=rt.str("username") or "", password=rt.secret("password")
            )
        upstreams["remote-write"] = HTTPUpstreamConfig(
            name="remote-write",
            url=rt.url("url") or "",
            basic_auth=basic,
            max_connections=rt.int("pool-max-idle-per-host", 10, minimum=1),
        )
    auth = read_auth(None)
    if bearer_tokens_path is not None:
        auth = _with_token_file(auth, os.path.abspath(bearer_tokens_path))
    else:
        reader.problem("", "a seal-proxy config needs --bearer-tokens-path")
    route = RouteConfig(upstream="remote-write")
    return Config(
        source=reader.source,
        listeners=(ListenerConfig(endpoint=listen or "tcp:8000"),),
        admin=ListenerConfig(endpoint=metrics) if metrics else None,
        upstreams=upstreams,
        push=PushConfig(
            seal=SealPushConfig(route=route, labels=labels),
            remote_write=RemoteWriteConfig(route=route, labels=labels),
        ),
        auth=auth,
    )
