"""
seal-proxy's own C{seal-proxy.yaml}, taken as it is: one listener, a
metrics address, label actions and one remote-write upstream, translated
into the model through the same converter as sealgw's own format.

seal-proxy's serde ignores keys it does not know, so its files may carry
anything: such keys are warned about, not refused.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Optional

import attr

from sealgw.config._auth import AuthConfig, TokenFileConfig
from sealgw.config._model import (
    BasicAuthConfig,
    Config,
    HTTPUpstreamConfig,
    LabelActions,
    ListenerConfig,
    PushConfig,
    RemoteWriteConfig,
    RouteConfig,
    SealPushConfig,
)
from sealgw.config._problems import Invalid, Problems, Step, key_path, kind, unknown_keys
from sealgw.config._rules import SOURCE, Count, SourceFile, text
from sealgw.config._secret import Secret
from sealgw.config._structure import FAILED, Keyed, Reading

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
POOL_KEYS = ("pool-max-idle-per-host", "pool_max_idle_per_host")
REMOTE_WRITE_KEYS = ("url", "username", "password", *POOL_KEYS)
NATIVE_KEYS = tuple(f.name for f in attr.fields(Config) if SOURCE not in f.metadata)
UPSTREAM = "remote-write"
HISTOGRAM_NOTE = (
    "not used: sealgw converts histograms to remote-write series itself, "
    "so seal-proxy's histogram relay listener (scraped by Alloy) is not needed "
    "and nothing listens there"
)


def is_seal_proxy(data: object) -> bool:
    return isinstance(data, dict) and any(key in data for key in SEAL_PROXY_KEYS)


def read_seal_proxy(
    data: Mapping[Any, Any], file: SourceFile, bearer_tokens_path: Optional[str]
) -> Config:
    reading = Reading(file)
    problems = reading.problems
    for key in data:
        # Leniency is for seal-proxy's keys; a file mixing in sealgw's own
        # would have them silently ignored.
        if key in NATIVE_KEYS:
            problems.add(
                key, "a key of sealgw's own format in a seal-proxy file: write one or the other"
            )
    top = _lenient(data, SEAL_PROXY_KEYS + POOL_KEYS[1:] + NATIVE_KEYS, (), problems)
    listen = _address(top.get("listen-address", "0.0.0.0:8000"), "listen-address", problems)
    metrics = _address(top.get("metrics-address", "0.0.0.0:9185"), "metrics-address", problems)
    if "histogram-address" in top:
        problems.warn("histogram-address", HISTOGRAM_NOTE)
    labels_at = ("label-actions",)
    labels = reading.structure(
        _lenient(top.get("label-actions"), ("add", "remove"), labels_at, problems),
        LabelActions,
        labels_at,
    )
    pool_size = _pool_size(top, (), reading)
    upstream = FAILED
    if UPSTREAM not in top:
        problems.add(UPSTREAM, "required")
    else:
        upstream = _remote_write(top[UPSTREAM], pool_size, reading)
    if bearer_tokens_path is None:
        problems.add("", "a seal-proxy config needs --bearer-tokens-path")
    problems.raise_if_any()
    assert bearer_tokens_path is not None
    route = RouteConfig(upstream=UPSTREAM)
    return Config(
        source=file.source,
        listeners=(ListenerConfig(endpoint=listen),),
        admin=ListenerConfig(endpoint=metrics),
        upstreams={UPSTREAM: upstream},
        push=PushConfig(
            seal=SealPushConfig(route=route, labels=labels),
            remote_write=RemoteWriteConfig(route=route, labels=labels),
        ),
        auth=AuthConfig(token_file=TokenFileConfig(path=os.path.abspath(bearer_tokens_path))),
        warnings=tuple(problems.warnings),
    )


def _lenient(value: Any, known: tuple[str, ...], at: tuple[Step, ...], problems: Problems) -> Any:
    """
    C{value} less the keys seal-proxy does not know, each warned about; a
    key written with no value is a key not written.
    """
    if not isinstance(value, Mapping):
        return value
    for invalid in unknown_keys(value, known, ignored=True):
        if invalid.at:
            problems.warn(key_path(at + invalid.at), invalid.message)
        else:
            problems.add(key_path(at), invalid.message)
    return {k: v for k, v in value.items() if k in known and v is not None}


def _address(value: object, key: str, problems: Problems) -> str:
    """
    seal-proxy's C{host:port} as a Twisted endpoint string.
    """
    try:
        address = text(value)
    except Invalid as e:
        problems.add(key, e.message)
        return FAILED
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        problems.add(key, f"{address!r} is not HOST:PORT")
        return FAILED
    host = host.strip("[]")
    if host in ("", "0.0.0.0"):
        return f"tcp:{port}"
    if ":" in host:
        return f"tcp6:{port}:interface={host.replace(':', chr(92) + ':')}"
    return f"tcp:{port}:interface={host}"


def _pool_size(section: Mapping[str, Any], at: tuple[Step, ...], reading: Reading) -> Optional[int]:
    """
    seal-proxy's C{pool_max_idle_per_host}, in either spelling: idle
    connections kept to the upstream, sealgw's C{max_connections}.
    """
    given = [key for key in POOL_KEYS if key in section]
    if len(given) > 1:
        reading.problems.add(
            key_path((*at, given[1])), f"the same setting as {given[0]}: give only one of them"
        )
        return None
    if not given:
        return None
    size = reading.structure(section[given[0]], Count, (*at, given[0]))
    return None if size is FAILED else int(size)


def _remote_write(value: object, pool_size: Optional[int], reading: Reading) -> HTTPUpstreamConfig:
    at: tuple[Step, ...] = (UPSTREAM,)
    section = _lenient(value, REMOTE_WRITE_KEYS, at, reading.problems)
    if not isinstance(section, Mapping):
        reading.problems.add(UPSTREAM, f"expected a mapping, got {kind(section)}")
        return FAILED
    body = {"url": section.get("url")}
    upstream = reading.structure(Keyed(UPSTREAM, body), HTTPUpstreamConfig, at)
    pool_size = _pool_size(section, at, reading) or pool_size
    basic_auth = _basic_auth(section, reading)
    if upstream is FAILED:
        return FAILED
    return attr.evolve(
        upstream,
        basic_auth=basic_auth,
        max_connections=pool_size or upstream.max_connections,
    )


def _basic_auth(section: Mapping[str, Any], reading: Reading) -> Optional[BasicAuthConfig]:
    """
    seal-proxy's C{username} and C{password}: always present in its files,
    and both empty (its sample's C{""}) when the upstream needs no basic
    auth.
    """
    username = section.get("username", "")
    password = section.get("password", "")
    if username == "" and password == "":
        return None
    if username != "":
        username = reading.structure(username, str, (UPSTREAM, "username"))
    if password == "":
        # A username alone: seal-proxy sends it with an empty password.
        secret = Secret("", reading.file.source)
    else:
        secret = reading.structure(password, Secret, (UPSTREAM, "password"))
    if FAILED in (username, secret):
        return None
    return BasicAuthConfig(username=username, password=secret)
