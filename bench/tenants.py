"""
The two tenants of bench/isolation.py: their series, written straight into
the Prometheus they share, the queries they ask, and the token file and
sealgw configuration that keep them apart by label.
"""

from __future__ import annotations

import math
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Optional

import snappy
import yaml

from bench.load import REMOTE_WRITE_HEADERS, LoadError
from sealgw.signals.proto.remote_pb2 import WriteRequest

TENANT_A = "team-a"
TENANT_B = "team-b"

#: The label the shared Prometheus keeps tenants apart by.
LABEL = "tenant"

#: The counter every series of the data is a child of, and its jobs (a
#: dashboard's C{sum by (job)} answers one series per job).
METRIC = "bench_requests_total"
JOBS = 8

#: Seconds between two points of a series, as a scrape interval.
INTERVAL_S = 60

#: B's dashboard panel: this query over the data's last hour, one point
#: every 15 s (Grafana's step for an hour on a wide panel).
B_QUERY = f"sum by (job) (rate({METRIC}[5m]))"
B_RANGE_S = 3600
B_STEP_S = 15

#: Where the long regular expression goes in A's query.
REGEX_PLACEHOLDER = "$REGEX"

#: A's most costly admitted query, by default: every one of A's series
#: selected through a regular expression of --a-regex-bytes, a window of
#: an hour evaluated at every --a-step over --a-range.
A_QUERY = (
    f'sum by (job) (count_over_time({{__name__=~"bench_.+", instance=~"{REGEX_PLACEHOLDER}"}}'
    "[1h]))"
)

# -- the data ------------------------------------------------------------------------------


def instances(series: int) -> list[str]:
    """
    The instances of a tenant's C{series} series, each with L{JOBS} jobs
    (the last one may have fewer).
    """
    return [f"host-{i:04d}:9100" for i in range(math.ceil(series / JOBS))]


def series_labels(tenant: str, series: int) -> list[dict[str, str]]:
    """
    A tenant's series: L{METRIC} for every job of every instance.
    """
    hosts = instances(series)
    return [
        {"__name__": METRIC, "instance": hosts[i // JOBS], "job": f"job-{i % JOBS}",
         LABEL: tenant}
        for i in range(series)
    ]


def data_requests(
    tenants: Sequence[str], series: int, points: int, end_ms: int
) -> Iterator[WriteRequest]:
    """
    The data as remote-write requests, one per point in time, oldest
    first, every tenant's series in each: Prometheus refuses a sample far
    older than the newest it holds, so the data goes in as a scrape would
    have sent it.  Counter values grow by a different step per series.
    """
    labelled = [labels for tenant in tenants for labels in series_labels(tenant, series)]
    for point in range(points):
        timestamp = end_ms - (points - 1 - point) * INTERVAL_S * 1000
        request = WriteRequest()
        for index, labels in enumerate(labelled):
            one = request.timeseries.add()
            for name in sorted(labels):
                one.labels.add(name=name, value=labels[name])
            one.samples.add(value=float(point * (1 + index % 17)), timestamp=timestamp)
        yield request


def load_data(write_url: str, series: int, points: int, end_ms: int) -> None:
    """
    Write both tenants' series straight into Prometheus.
    """
    for request in data_requests((TENANT_A, TENANT_B), series, points, end_ms):
        push = urllib.request.Request(
            write_url,
            data=snappy.compress(request.SerializeToString()),
            method="POST",
            headers=REMOTE_WRITE_HEADERS,
        )
        try:
            with urllib.request.urlopen(push, timeout=30) as response:
                status = response.status
        except OSError as e:
            raise LoadError(f"the data could not be written to Prometheus: {e}") from None
        if status // 100 != 2:
            raise LoadError(f"Prometheus answered {status} to the data")


# -- the queries -----------------------------------------------------------------------------


def alternation(names: Sequence[str], size: int) -> str:
    """
    A regular expression of at most C{size} bytes matching every one of
    C{names}, padded with names that match no series: a long alternation,
    as a dashboard variable set to "All" over thousands of hosts makes.
    Just C{.+} when C{size} is 0.
    """
    if size == 0:
        return ".+"
    text = "|".join(names)
    if len(text) > size:
        raise ValueError(f"{len(names)} names need {len(text)} bytes, more than {size}")
    pads = []
    used = len(text)
    for n in range(size):
        pad = f"|pad-{n:06d}:9100"
        if used + len(pad) > size:
            break
        pads.append(pad)
        used += len(pad)
    return text + "".join(pads)


def a_query(template: str, series: int, regex_bytes: int) -> str:
    """
    A's costly query: C{template} with L{REGEX_PLACEHOLDER} replaced by an
    L{alternation} of C{regex_bytes} over the instances of A's C{series}.
    """
    regex = alternation(instances(series), regex_bytes)
    return template.replace(REGEX_PLACEHOLDER, regex)


def range_form(query: str, end_s: float, range_s: float, step_s: float) -> dict[str, str]:
    """
    The parameters of a C{query_range} ending at C{end_s}.
    """
    return {
        "query": query,
        "start": f"{end_s - range_s:.3f}",
        "end": f"{end_s:.3f}",
        "step": f"{step_s:g}",
    }


# -- sealgw ----------------------------------------------------------------------------------


def token_file(tokens: Mapping[str, str], a_limits: Mapping[str, Any]) -> str:
    """
    The token file: A with C{a_limits}, B with none (the default limits,
    none by default), each with its one tenant.
    """
    entries: list[dict[str, Any]] = [
        {"name": "tenant-a", "token": tokens[TENANT_A], "tenants": [TENANT_A]},
        {"name": "tenant-b", "token": tokens[TENANT_B], "tenants": [TENANT_B]},
    ]
    if a_limits:
        entries[0]["limits"] = dict(a_limits)
    return "# Generated by bench/isolation.py for one benchmark run.\n" + yaml.safe_dump(
        entries, sort_keys=False
    )


def sealgw_config(
    port: int, admin: int, prometheus: str, tokens: Path,
    more: Optional[Mapping[str, Any]] = None,
) -> str:
    """
    One gateway in front of one Prometheus shared by label: pushes to its
    remote-write receiver, Prometheus reads, C{/health} on the admin
    listener; C{more} merged in (L{merged}), for settings the bench does
    not know of, such as bounds on queries.
    """
    config: dict[str, Any] = {
        "listeners": [{"endpoint": f"tcp:{port}:interface=127.0.0.1"}],
        "admin": {"endpoint": f"tcp:{admin}:interface=127.0.0.1"},
        "log": {"access": False},
        "upstreams": {
            "prometheus": {
                "url": prometheus,
                "max_connections": 16,
                "tenancy": {"label": LABEL},
            },
        },
        "push": {"remote_write": {"upstream": "prometheus", "path": "/api/v1/write"}},
        "query": {"prometheus": {"upstream": "prometheus", "timeout": "60s"}},
        "auth": {"token_file": {"path": str(tokens)}},
    }
    return "# Generated by bench/isolation.py for one benchmark run.\n" + yaml.safe_dump(
        merged(config, more or {}), sort_keys=False
    )


def merged(base: Mapping[str, Any], more: Mapping[str, Any]) -> dict[str, Any]:
    """
    C{base} with C{more} laid over it: mappings merged key by key, any
    other value of C{more} (a list too) replacing C{base}'s.
    """
    out = dict(base)
    for key, value in more.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merged(out[key], value)
        else:
            out[key] = value
    return out
