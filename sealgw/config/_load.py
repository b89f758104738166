"""
Turn a YAML file (sealgw's own, or seal-proxy's) into a L{Config}.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from typing import Any, Optional

import attr
import yaml
from twisted.logger import Logger

from sealgw.config._auth import TokenFileConfig
from sealgw.config._model import (
    Config,
    FileUpstreamConfig,
    HTTPUpstreamConfig,
    LabelActions,
    ListenerConfig,
    PushConfig,
    QueryConfig,
    ReadRouteConfig,
    RouteConfig,
)
from sealgw.config._problems import ConfigError, key_path, kind, unknown_keys
from sealgw.config._rules import SOURCE, SourceFile
from sealgw.config._sealproxy import is_seal_proxy, read_seal_proxy
from sealgw.config._structure import FAILED, Reading

attr.resolve_types(Config)
SECTIONS = tuple(f for f in attr.fields(Config) if SOURCE not in f.metadata)
"""The keys at the top of sealgw's own format."""

_log = Logger(namespace="sealgw.config")

LABEL_TENANCY_PUSHES: frozenset[str] = frozenset({"remote_write", "seal", "pushgateway"})
"""
The push routes that may relay to an upstream with label tenancy: those
whose intake sets the tenant's label on every series (Prometheus series;
Loki and OTLP bodies carry no such label).  Pushing any other route to
such an upstream would store data the tenant's reads cannot see.
"""


def load(
    path: str, bearer_tokens_path: Optional[str] = None, *, check_token_file: bool = False
) -> Config:
    """
    Read, validate and freeze the configuration at C{path}.

    @param bearer_tokens_path: seal-proxy's C{--bearer-tokens-path}; it
        overrides C{auth.token_file.path}.
    @param check_token_file: make a token file that cannot be opened a
        problem of the setting that named it, as a start and
        C{check-config} do; the file's entries are judged when the
        gateway is built.
    @raise ConfigError: listing every problem found.
    """
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise ConfigError([f"{path}: cannot read: {e.strerror}"]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(e, "problem", None) or str(e)
        raise ConfigError([f"{path}: not valid YAML{where}: {problem}"]) from None
    file = SourceFile(path, os.path.dirname(os.path.abspath(path)))
    if is_seal_proxy(data):
        config = read_seal_proxy(data, file, bearer_tokens_path)
    else:
        config = read(data, file, bearer_tokens_path)
    if check_token_file:
        _check_token_file(config, path, bearer_tokens_path)
    for warning in config.warnings:
        _log.warn("{note}", note=warning)
    return config


def _check_token_file(config: Config, path: str, bearer_tokens_path: Optional[str]) -> None:
    """
    A token file that cannot be opened is a problem of the setting that
    named it: C{auth.token_file.path}, or C{--bearer-tokens-path} when that
    was given.  The gateway's own reading of the file could only name the
    file, which someone who copied an example does not know to look for.

    @raise ConfigError: naming the setting, the file and why.
    """
    token_file = config.auth.token_file
    if token_file is None:
        return
    try:
        with open(token_file.path, "rb"):
            pass
    except OSError as e:
        if bearer_tokens_path is not None:
            where = "--bearer-tokens-path"
        else:
            where = f"{path}: auth.token_file.path"
        raise ConfigError([f"{where}: cannot read {token_file.path}: {e.strerror}"]) from None


def read(
    data: Any, file: SourceFile = SourceFile("<config>"), bearer_tokens_path: Optional[str] = None
) -> Config:
    """
    Read sealgw's own configuration format from parsed YAML.

    Each top-level section is structured on its own, so that one broken
    section does not hide the problems of the others, nor those of the
    checks that span sections.
    """
    reading = Reading(file)
    problems = reading.problems
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        problems.add("", f"expected a mapping, got {kind(data)}")
        problems.raise_if_any()
    for invalid in unknown_keys(data, [f.name for f in SECTIONS]):
        problems.add(key_path(invalid.at), invalid.message)
    sections = {
        f.name: reading.structure(data[f.name], f.type, (f.name,))
        for f in SECTIONS
        if data.get(f.name) is not None
    }
    for path, message in _across_sections(data, sections):
        problems.add(path, message)
    problems.raise_if_any()
    config = Config(source=file.source, **sections)
    if bearer_tokens_path is not None:
        config = with_token_file(config, bearer_tokens_path)
    return config


def _across_sections(
    data: Mapping[Any, Any], sections: dict[str, Any]
) -> Iterator[tuple[str, str]]:
    if not sections.get("listeners", ()):
        yield "listeners", "at least one listener is required"
    admin = sections.get("admin")
    if isinstance(admin, ListenerConfig) and admin.protocol != "http":
        yield "admin.protocol", "the admin listener serves HTTP only (/health, /ready, /metrics)"
    push = sections.get("push", PushConfig())
    upstreams = data.get("upstreams") or {}
    if push is FAILED or not isinstance(upstreams, Mapping):
        return
    names = {str(name) for name in upstreams}
    known = ", ".join(sorted(names)) or "none are configured"
    structured = sections.get("upstreams", {})
    if not isinstance(structured, Mapping):
        structured = {}
    for field in attr.fields(PushConfig):
        signal = getattr(push, field.name)
        route = getattr(signal, "route", signal)
        if route is None:
            continue
        yield from _push_route(field.name, signal, route, names, known, structured)
    query = sections.get("query", QueryConfig())
    if query is FAILED:
        return
    for field in attr.fields(QueryConfig):
        read = getattr(query, field.name)
        if not isinstance(read, ReadRouteConfig):
            continue
        if read.upstream not in names:
            yield (
                f"query.{field.name}.upstream",
                f"no upstream named {read.upstream!r} ({known})",
            )
        elif isinstance(structured.get(read.upstream), FileUpstreamConfig):
            yield (
                f"query.{field.name}.upstream",
                f"{read.upstream!r} is a file upstream; reads need an HTTP one",
            )
        elif field.name != "prometheus" and _tenancy_label(structured.get(read.upstream)):
            yield (
                f"query.{field.name}.upstream",
                f"{read.upstream!r} keeps tenants apart by label (tenancy: {{label: ...}}); "
                f"only PromQL reads can be held to a label, not {field.name}'s: give "
                f"{field.name} reads an upstream with tenancy: header",
            )


def _push_route(
    name: str,
    signal: Any,
    route: RouteConfig,
    names: set[str],
    known: str,
    structured: Mapping[Any, Any],
) -> Iterator[tuple[str, str]]:
    """
    The problems of push route C{name}: every upstream it names must
    exist and take its pushes, and all of them must keep tenants apart
    the same way, because one encoding of a push goes to each (a label
    set on every series for one, the tenant header for another).
    """
    targets = [(f"push.{name}.upstream", route.upstream)]
    targets += [
        (f"push.{name}.tenants.{tenant}", upstream)
        for tenant, upstreams in route.tenants.items()
        for upstream in upstreams
    ]
    targets += [(f"push.{name}.also", upstream) for upstream in route.also]
    labels: LabelActions = getattr(signal, "labels", LabelActions())
    tenancy: dict[Optional[str], str] = {}
    for at, upstream in targets:
        if upstream not in names:
            yield at, f"no upstream named {upstream!r} ({known})"
            continue
        label = _tenancy_label(structured.get(upstream))
        if upstream in structured:
            tenancy.setdefault(label, upstream)
        if name not in LABEL_TENANCY_PUSHES and label:
            yield (
                at,
                f"{upstream!r} keeps tenants apart by label (tenancy: {{label: ...}}), "
                f"and sealgw does not set that label on {name} pushes: give them an "
                "upstream with tenancy: header",
            )
        elif label and (label in labels.add or label in labels.remove):
            yield (
                f"push.{name}.labels",
                f"{label!r} is the tenant label of upstream {upstream!r}: sealgw sets "
                "it from the identity, and labels actions cannot add or remove it",
            )
    if len(tenancy) > 1:
        ways = ", ".join(
            f"{upstream!r} by " + (f"label {label!r}" if label else "the tenant header")
            for label, upstream in tenancy.items()
        )
        yield (
            f"push.{name}",
            f"the upstreams of one route must keep tenants apart the same way, "
            f"and these do not: {ways}",
        )


def _tenancy_label(upstream: object) -> Optional[str]:
    """
    The label an upstream keeps tenants apart by, if it does.
    """
    if isinstance(upstream, HTTPUpstreamConfig):
        return upstream.tenancy.label
    return None


def with_token_file(config: Config, path: str) -> Config:
    """
    C{config} with seal-proxy's C{--bearer-tokens-path} as its token file.
    """
    token_file = config.auth.token_file
    path = os.path.abspath(path)
    if token_file is None:
        token_file = TokenFileConfig(path=path)
    else:
        token_file = attr.evolve(token_file, path=path)
    return attr.evolve(config, auth=attr.evolve(config.auth, token_file=token_file))
