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
from OpenSSL import SSL
from twisted.logger import Logger

from sealgw.config._auth import AUTH_KEYS, TokenFileConfig, read_auth
from sealgw.config._model import (
    INTERMEDIATE_CIPHERS,
    TLS_VERSIONS,
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
from sealgw.config._reader import ConfigError, Reader, Secret, Table
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
    "histogram-address",
    "label-actions",
    "remote-write",
    "pool-max-idle-per-host",
)
# seal-proxy's own sample spells the pool size with underscores inside
# remote-write; both spellings are the same setting.
SEAL_POOL_KEYS = ("pool-max-idle-per-host", "pool_max_idle_per_host")
SEAL_REMOTE_WRITE_KEYS = ("url", "username", "password", *SEAL_POOL_KEYS)

LISTENER_KEYS = (
    "endpoint",
    "tls",
    "ops",
    "max_connections",
    "max_header_size",
    "header_timeout",
    "idle_timeout",
)
#: The smallest request head a listener may be limited to: a request line
#: and a Host header need room.
MIN_HEADER_SIZE = 1024
TLS_KEYS = (
    "certificate",
    "key",
    "client_ca",
    "client_certificates",
    "min_version",
    "ciphers",
    "watch_interval",
)
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
_log = Logger(namespace="sealgw.config")


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
    base_dir = os.path.dirname(os.path.abspath(path))
    if isinstance(data, dict) and any(k in data for k in SEAL_PROXY_KEYS):
        # seal-proxy's serde ignores keys it does not know, so its files
        # may carry anything: such keys are warned about, not refused.
        reader = Reader(source, base_dir, lenient_keys=True)
        config = _read_seal_proxy(reader, data, bearer_tokens_path)
    else:
        reader = Reader(source, base_dir)
        config = read(reader, data, bearer_tokens_path)
    reader.raise_if_problems()
    if reader.warnings:
        config = attr.evolve(config, warnings=tuple(reader.warnings))
        for warning in config.warnings:
            _log.warn("{note}", note=warning)
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
        tls = _read_tls(tt)
    defaults = ListenerConfig(endpoint="")
    max_header_size = t.size("max_header_size", defaults.max_header_size)
    if max_header_size is not None and max_header_size < MIN_HEADER_SIZE:
        t.problem("max_header_size", f"must be at least {MIN_HEADER_SIZE} bytes (1KiB)")
    return ListenerConfig(
        endpoint=endpoint or "",
        tls=tls,
        ops=t.bool("ops", False),
        max_connections=t.int("max_connections", defaults.max_connections, minimum=1),
        max_header_size=max_header_size or defaults.max_header_size,
        header_timeout=t.duration("header_timeout", defaults.header_timeout),
        idle_timeout=t.duration("idle_timeout", defaults.idle_timeout),
    )


def _read_tls(tt: Table) -> TLSConfig:
    mode = tt.choice("client_certificates", ["none", "optional", "required"], "none")
    min_version = tt.str("min_version", "1.2")
    if min_version not in TLS_VERSIONS:
        tt.problem(
            "min_version",
            f"{min_version!r} is not one of " + ", ".join(repr(v) for v in TLS_VERSIONS),
        )
        min_version = "1.2"
    ciphers = tt.str("ciphers", INTERMEDIATE_CIPHERS)
    why = _cipher_problem(ciphers) if ciphers is not None else None
    if why is not None:
        tt.problem("ciphers", why)
    tls = TLSConfig(
        certificate=_existing_file(tt, "certificate") or "",
        key=_existing_file(tt, "key") or "",
        client_ca=_existing_file(tt, "client_ca", optional=True),
        client_certificates=mode or "none",
        min_version=min_version,
        ciphers=ciphers if why is None and ciphers is not None else INTERMEDIATE_CIPHERS,
        watch_interval=tt.duration("watch_interval", 60.0, positive=False),
    )
    if tls.client_certificates != "none" and tls.client_ca is None and "client_ca" not in tt:
        tt.problem("client_ca", f"required when client_certificates is {mode!r}")
    return tls


def _cipher_problem(ciphers: str) -> Optional[str]:
    """
    Why OpenSSL cannot use the cipher string C{ciphers} for TLS 1.2, or
    L{None}.  OpenSSL itself skips names it does not know as long as one
    matches; a typo would then go unnoticed, so each name is tried alone.
    """
    try:
        whole = ciphers.encode("ascii")
    except UnicodeEncodeError:
        return f"{ciphers!r} is not an OpenSSL cipher string (not ASCII)"
    for name in re.split(r"[:, ;]+", ciphers):
        # !X, -X, +X and @X only remove, reorder or set a level: alone they
        # select nothing, so they cannot be tried alone.
        if name and name[0] not in "!-+@" and not _ciphers_match(name.encode("ascii")):
            return f"{name!r} names no TLS 1.2 cipher suite OpenSSL knows"
    if not _ciphers_match(whole):
        return f"{ciphers!r} leaves no TLS 1.2 cipher suite"
    return None


def _ciphers_match(ciphers: bytes) -> bool:
    try:
        SSL.Context(SSL.TLS_METHOD).set_cipher_list(ciphers)
    except SSL.Error:
        return False
    return True


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


def _seal_pool_size(t: Table, default: int) -> int:
    """
    seal-proxy's C{pool_max_idle_per_host}, in either spelling: idle
    connections kept to the upstream, sealgw's C{max_connections}.
    """
    given = [key for key in SEAL_POOL_KEYS if key in t]
    if len(given) > 1:
        t.problem(given[1], f"the same setting as {given[0]}: give only one of them")
        return default
    if not given:
        return default
    size = t.int(given[0], default, minimum=1)
    return default if size is None else int(size)


def _seal_basic_auth(t: Table) -> Optional[BasicAuthConfig]:
    """
    seal-proxy's C{username} and C{password}: always present in its files,
    and both empty (its sample's C{""}) when the upstream needs no basic
    auth.
    """
    username = t.raw("username")
    password = t.raw("password")
    if username in (None, "") and password in (None, ""):
        return None
    user = "" if username in (None, "") else t.str("username")
    if password in (None, ""):
        # A username alone: seal-proxy sends it with an empty password.
        secret: Optional[Secret] = Secret("", f"{t.source_name()} {t.at('password')}")
    else:
        secret = t.secret("password")
    if user is None or secret is None:
        return None
    return BasicAuthConfig(username=user, password=secret)


def _read_seal_proxy(
    reader: Reader, data: Any, bearer_tokens_path: Optional[str]
) -> Config:
    """
    seal-proxy's own C{seal-proxy.yaml}, taken as it is: one listener, a
    metrics address, label actions and one remote-write upstream.  Keys
    sealgw has no use for are accepted with a warning, as seal-proxy's
    serde would ignore them.
    """
    top = reader.table(data, "", SEAL_PROXY_KEYS)
    for key in top.keys():
        # Leniency is for seal-proxy's keys; a file mixing in sealgw's own
        # would have them silently ignored.
        if key in TOP_KEYS:
            reader.problem(
                key, "a key of sealgw's own format in a seal-proxy file: write one or the other"
            )
    listen = _seal_address(top, "listen-address", "0.0.0.0:8000")
    metrics = _seal_address(top, "metrics-address", "0.0.0.0:9185")
    if "histogram-address" in top:
        reader.warning(
            "histogram-address",
            "not used: sealgw converts histograms to remote-write series itself, "
            "so seal-proxy's histogram relay listener (scraped by Alloy) is not needed "
            "and nothing listens there",
        )
    labels = _read_labels(top.table("label-actions", ["add", "remove"]))
    pool_size = _seal_pool_size(top, 10)
    upstreams: dict[str, UpstreamConfig] = {}
    rt = top.table("remote-write", SEAL_REMOTE_WRITE_KEYS)
    if rt is None:
        reader.problem("remote-write", "required")
    else:
        upstreams["remote-write"] = HTTPUpstreamConfig(
            name="remote-write",
            url=rt.url("url") or "",
            basic_auth=_seal_basic_auth(rt),
            max_connections=_seal_pool_size(rt, pool_size),
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
