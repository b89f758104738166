"""
Measure sealgw's seal-proxy push route (C{POST /publish/metrics}), one
metric type at a time, in samples per second of sealgw's CPU, next to its
remote-write pass-through measured in the same run on the same sealgw.

    .venv/bin/python bench/seal.py [--duration 10] [--rounds 2] [--samples 2000]
        [--batch-size 500] [--type counter ...] [--json FILE] [--keep]

Each body is shaped exactly as a seal key server sends it (see L{body}):
one per metric type, with enough metrics that sealgw makes about
C{--samples} remote-write samples of one push.  How many it makes is
counted, not assumed: the bodies are converted once in this process by
sealgw's own intake function before anything is measured.  The upstream
is an nginx that answers 204 (the "sink" of bench/run.py), so what is
measured is sealgw's own cost.  See docs/benchmarks.rst.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Optional

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    # Run as a script: the checkout's bench and sealgw packages.
    sys.path.insert(0, str(ROOT))

import snappy  # noqa: E402

from bench import payloads, processes  # noqa: E402
from bench.load import Result, add_load_options, check_load_options  # noqa: E402
from bench.run import Stopped, Target, measure, warn_failed, with_servers  # noqa: E402
from sealgw.signals import intake  # noqa: E402
from sealgw.signals.proto import metrics_pb2  # noqa: E402
from sealgw.signals.proto.remote_pb2 import WriteRequest  # noqa: E402

#: Every metric type a C{MetricFamily} can hold, as sealgw converts it.
#: seal's key server (Rust's C{prometheus} crate) sends the first three.
TYPES = ("counter", "gauge", "histogram", "summary", "untyped", "gauge_histogram")

#: The headers a seal key server sends with its push, besides the bearer
#: token (C{reqwest} with C{.header(CONTENT_ENCODING, "snappy")} and a
#: body: no C{Content-Type}, C{Accept: */*} by default, C{Content-Length}).
SEAL_HEADERS = {"Content-Encoding": "snappy", "Accept": "*/*"}

#: The labels the key server's config gives every push, plus the
#: C{hostname} it always adds (C{MetricPayload.labels}).
CLIENT_LABELS = {"network": "testnet", "hostname": "seal-key-server-1"}

#: What the route adds to every series (seal-proxy's C{label-actions}), as
#: run.py's C{sealgw+labels} target adds it.
ROUTE_LABELS = {"network": "bench"}

# The label sets of the key server's HTTP metrics (C{route}, C{status}).
_ROUTES = ("/v1/fetch_key", "/v1/service", "/health", "/v1/fetch_key/batch",
           "/v1/aggregate", "/v1/certificate", "/v1/service/history", "/metrics",
           "/v1/committee", "/v1/status")
_STATUSES = ("200", "400", "403", "500", "503")
#: The key server's latency buckets (milliseconds, 10 to 100); Rust's
#: crate leaves the C{+Inf} bucket out, the sample count carries it.
_BUCKETS = tuple(float(b) for b in range(10, 101, 10))
_QUANTILES = (0.5, 0.9, 0.99)
_FAMILY_NAMES = {
    "counter": "http_requests_total",
    "gauge": "http_request_in_flight",
    "histogram": "http_request_duration_millis",
    "summary": "sui_rpc_request_duration_millis",
    "untyped": "key_server_untyped",
    "gauge_histogram": "http_request_size_bytes",
}
_PROTO_TYPES = {
    "counter": metrics_pb2.COUNTER,
    "gauge": metrics_pb2.GAUGE,
    "histogram": metrics_pb2.HISTOGRAM,
    "summary": metrics_pb2.SUMMARY,
    "untyped": metrics_pb2.UNTYPED,
    "gauge_histogram": metrics_pb2.GAUGE_HISTOGRAM,
}


def series_per_metric(kind: str) -> int:
    """
    How many remote-write series sealgw makes of one metric of C{kind}.
    """
    if kind in ("histogram", "gauge_histogram"):
        return len(_BUCKETS) + 3  # the buckets, +Inf, _sum, _count
    if kind == "summary":
        return len(_QUANTILES) + 2  # the quantiles, _sum, _count
    return 1


def families(kind: str, metrics: int, timestamp_ms: int) -> list[metrics_pb2.MetricFamily]:
    """
    C{metrics} metrics of type C{kind}, as the key server's registry holds
    them: families of at most 50 metrics (one per C{route} and C{status}),
    every metric stamped with the push's time as the key server stamps it.
    """
    per_family = len(_ROUTES) * len(_STATUSES)
    out: list[metrics_pb2.MetricFamily] = []
    for index in range(metrics):
        if index % per_family == 0:
            out.append(metrics_pb2.MetricFamily(
                name=f"{_FAMILY_NAMES[kind]}_{index // per_family:02d}",
                help=f"bench {kind} family {index // per_family}",
                type=_PROTO_TYPES[kind],
            ))
        metric = out[-1].metric.add()
        n = index % per_family
        metric.label.add(name="route", value=_ROUTES[n // len(_STATUSES)])
        metric.label.add(name="status", value=_STATUSES[n % len(_STATUSES)])
        metric.timestamp_ms = timestamp_ms
        value = float(index * 7 % 1000)
        if kind == "counter":
            metric.counter.value = value
        elif kind == "gauge":
            metric.gauge.value = value
        elif kind == "untyped":
            metric.untyped.value = value
        elif kind == "summary":
            metric.summary.sample_count = 100 + index
            metric.summary.sample_sum = 12.5 * (100 + index)
            for q in _QUANTILES:
                metric.summary.quantile.add(quantile=q, value=10.0 + 90 * q)
        else:
            histogram = metric.histogram
            count = 0
            for i, bound in enumerate(_BUCKETS):
                count += (index + i) % 5
                histogram.bucket.add(upper_bound=bound, cumulative_count=count)
            histogram.sample_count = count + 3
            histogram.sample_sum = 41.5 * histogram.sample_count
    return out


def delimited(items: list[metrics_pb2.MetricFamily]) -> bytes:
    """
    C{prometheus::ProtobufEncoder}'s output: each family preceded by its
    length as a varint.
    """
    out = bytearray()
    for family in items:
        data = family.SerializeToString()
        length = len(data)
        while length > 0x7F:
            out.append(length & 0x7F | 0x80)
            length >>= 7
        out.append(length)
        out += data
    return bytes(out)


def body(items: list[metrics_pb2.MetricFamily]) -> bytes:
    """
    A push as seal's key server makes it (C{metrics_push.rs}): C{serde_json}
    of C{MetricPayload {labels, buf}} (compact, C{buf} an array of byte
    values), compressed as one raw snappy block.
    """
    payload = {"labels": CLIENT_LABELS, "buf": list(delimited(items))}
    return bytes(snappy.compress(json.dumps(payload, separators=(",", ":")).encode()))


def convert(data: bytes, batch_size: int) -> tuple[int, int]:
    """
    Convert a push as sealgw will, with this bench's route and identity:
    answer the samples it makes and the remote-write requests they go
    upstream in.
    """
    facts = intake.RequestFacts(
        content_encoding="snappy",
        tenant=processes.TENANT,
        identity="bench",
        client_ip="127.0.0.1",
        received_at=time.time(),
    )
    pushes = intake.seal_pushes(
        data, facts, add=ROUTE_LABELS, remove=frozenset(), batch_size=batch_size,
        limit=64 << 20,
    ).pushes
    samples = 0
    for push in pushes:
        request = WriteRequest()
        request.ParseFromString(snappy.decompress(push.body))
        samples += sum(len(series.samples) for series in request.timeseries)
    return samples, len(pushes)


def write_bodies(
    directory: Path, kinds: tuple[str, ...], samples: int, batch_size: int
) -> dict[str, dict[str, Any]]:
    """
    One body file per type, with its metric count, its exact sample count
    and the upstream requests one push becomes.
    """
    now = int(time.time() * 1000)
    out = {}
    for kind in kinds:
        metrics = max(1, round(samples / series_per_metric(kind)))
        data = body(families(kind, metrics, now))
        path = directory / f"seal-{kind}.snappy"
        path.write_bytes(data)
        made, requests = convert(data, batch_size)
        out[kind] = {"path": str(path), "metrics": metrics, "samples": made,
                     "upstream_requests": requests, "bytes": len(data)}
    return out


def parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_load_options(parser, duration_help="seconds of load per metric type (default 10)")
    parser.add_argument("--samples", type=int, default=2000,
                        help="about how many samples one push makes (default 2000)")
    parser.add_argument("--batch-size", type=int, default=500,
                        help="the seal route's batch_size: most samples per upstream "
                        "request (default 500, the route's default)")
    parser.add_argument("--type", action="append", dest="types", choices=TYPES,
                        help="a metric type to measure; repeat for several (default all)")
    parser.add_argument("--workers", type=int, default=1,
                        help="sealgw's workers: setting (default 1)")
    args = parser.parse_args(argv)
    check_load_options(parser, args)
    if min(args.samples, args.batch_size, args.workers) < 1:
        parser.error("--samples, --batch-size and --workers must be at least 1")
    # What bench.run.measure reads besides the above.
    args.latency_duration = 0
    args.profile = None
    return args


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    token = secrets.token_hex(16)
    try:
        report = with_servers(
            lambda workdir, cleanup: run(args, workdir, cleanup, token), keep=args.keep,
        )
    except Stopped as e:
        return e.status
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"results written to {args.json}")
    if report["failed_requests"]:
        warn_failed(report["failed_requests"])
        return 1
    return 0


def run(
    args: argparse.Namespace, workdir: Path, cleanup: ExitStack, token: str
) -> dict[str, Any]:
    """
    Build the bodies, start the sink and one sealgw with both routes,
    measure each type and the remote-write pass-through, print the table
    and answer the report.
    """
    kinds = tuple(args.types or TYPES)
    processes.check_twistd_plugin()
    bodies = write_bodies(workdir, kinds, args.samples, args.batch_size)
    rw_size = 2000
    rw_body = payloads.write_bodies(str(workdir), (rw_size,))[rw_size]
    upstream, upstream_url = processes.start_sink(workdir, cleanup)
    sealgw, url = processes.start_sealgw(
        workdir, cleanup, upstream_url, token, workers=args.workers,
        seal=processes.SealRoute(batch_size=args.batch_size, labels=ROUTE_LABELS),
    )
    watch = {"proxy": sealgw}
    targets = {
        kind: Target(processes.seal_url(url), watch, bodies[kind]["path"], SEAL_HEADERS)
        for kind in kinds
    }
    targets[REMOTE_WRITE] = Target(url, watch, rw_body)
    print(f"seal pushes: upstream sink; {os.cpu_count()} CPUs; one sealgw "
          f"(workers: {args.workers}, seal batch_size {args.batch_size}); per type, "
          f"{args.rounds} round(s) of {max(1, round(args.duration / args.rounds))}s "
          f"({args.connections} connections)", flush=True)
    results = measure(targets, token, args, upstream, "seal pushes")
    samples = {kind: bodies[kind]["samples"] for kind in kinds}
    samples[REMOTE_WRITE] = rw_size
    sizes = {kind: bodies[kind]["bytes"] for kind in kinds}
    sizes[REMOTE_WRITE] = os.path.getsize(rw_body)
    loads = {name: runs["load"] for name, runs in results.items()}
    print(table(args, bodies, loads, sizes))
    per_cpu = {name: per_cpu_second(samples[name], r) for name, r in loads.items()}
    return {
        "settings": {
            "duration_s": args.duration,
            "rounds": args.rounds,
            "connections": args.connections,
            "threads": args.threads,
            "seal_batch_size": args.batch_size,
            "sealgw_workers": args.workers,
            "upstream": "sink",
        },
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "types": {
            kind: {
                "metrics_per_push": bodies[kind]["metrics"],
                "samples_per_push": bodies[kind]["samples"],
                "upstream_requests_per_push": bodies[kind]["upstream_requests"],
                "body_bytes": bodies[kind]["bytes"],
                "load": loads[kind].as_json(bodies[kind]["samples"]),
                "samples_per_sealgw_cpu_second": per_cpu[kind],
            }
            for kind in kinds
        },
        "remote_write_pass_through": {
            "samples_per_push": rw_size,
            "body_bytes": sizes[REMOTE_WRITE],
            "load": loads[REMOTE_WRITE].as_json(rw_size),
            "samples_per_sealgw_cpu_second": per_cpu[REMOTE_WRITE],
        },
        "failed_requests": sum(r.failed for r in loads.values()),
    }


#: The comparison row: a 2,000-sample remote-write body, relayed as it came.
REMOTE_WRITE = "remote write"


def per_cpu_second(samples: int, result: Result) -> float:
    """
    Samples per second of sealgw's CPU (0 when it used none).
    """
    cpu = result.cpu.get("proxy", 0.0)
    return result.requests_per_second * samples / cpu if cpu > 0 else 0.0


def table(
    args: argparse.Namespace,
    bodies: dict[str, dict[str, Any]],
    loads: dict[str, Result],
    sizes: dict[str, int],
) -> str:
    rw = per_cpu_second(2000, loads[REMOTE_WRITE])
    lines = [
        "",
        f"== seal pushes (POST /publish/metrics), upstream sink, {args.connections} "
        f"connections, seal batch_size {args.batch_size} ==",
        f"{'type':16} {'metrics':>7} {'samples':>7} {'KiB':>6} {'up.req':>6} {'req/s':>8} "
        f"{'samples/s':>10} {'failed':>6} {'sealgw CPU':>10} {'samples/CPU-s':>13} "
        f"{'x rw':>6}",
    ]
    for name, load in loads.items():
        if name == REMOTE_WRITE:
            metrics, samples, requests = "-", 2000, 1
        else:
            metrics = str(bodies[name]["metrics"])
            samples, requests = bodies[name]["samples"], bodies[name]["upstream_requests"]
        per_cpu = per_cpu_second(samples, load)
        ratio = f"{per_cpu / rw:.3f}" if rw else "-"
        lines.append(
            f"{name:16} {metrics:>7} {samples:7d} {sizes[name] / 1024:6.1f} {requests:6d} "
            f"{load.requests_per_second:8.1f} {load.requests_per_second * samples:10.0f} "
            f"{load.failed:6d} {load.cpu.get('proxy', 0.0):10.2f} "
            f"{per_cpu / 1e6:12.3f}M {ratio:>6}"
        )
    lines += [
        "",
        "KiB: the push as sent (snappy); up.req: the remote-write requests sealgw sends "
        "upstream per push;",
        "samples/CPU-s: samples per second of sealgw's CPU; x rw: that, over the "
        f"{REMOTE_WRITE!r} row's (a 2,000-sample",
        "remote-write body relayed as it came, to the same sealgw in the same run)",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
