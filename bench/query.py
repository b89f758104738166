"""
Measure the latency sealgw adds to a query, against asking the same
Prometheus directly, for a small answer and a large one (about 10 MB of
JSON), in one run on this machine, and print the ratios.

    .venv/bin/python bench/query.py [--duration 6] [--rounds 3] [--big-mb 10]
        [--json results.json]

Three targets answer the same query with the same bytes: Prometheus
directly; sealgw with the tenant header (Prometheus ignores it), which
only authenticates and streams; sealgw with label tenancy, which also
parses the query and rewrites every selector.  One client asks one
question at a time on a kept-alive connection and reads each answer
whole, so the figures are latency without queueing.  Traffic goes to
127.0.0.1 only; every run is bounded by --duration.

See docs/benchmarks.rst for what is measured and how to read it.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import secrets
import shutil
import signal
import statistics
import sys
import tempfile
import time
import urllib.request
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Optional
from urllib.parse import urlencode, urlsplit

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    # Run as a script: the checkout's bench and sealgw packages.
    sys.path.insert(0, str(ROOT))

import snappy  # noqa: E402

from bench import processes  # noqa: E402
from bench.processes import Server, StartError, answers, free_port  # noqa: E402
from sealgw.signals.proto.remote_pb2 import WriteRequest  # noqa: E402

TENANT = "bench"
TARGETS = ("direct", "sealgw", "sealgw+label")

#: The label C{sealgw+label} keeps tenants apart by; every series carries
#: it, so all three targets answer the same series.
LABEL = "tenant"

#: Bytes of padding per series of the large answer: each then takes about
#: this plus 100 bytes of JSON.
PAD = 400


class BenchError(Exception):
    """
    The run could not be measured: a target refused, or answered
    differently from the others.
    """


def parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=6.0,
                        help="seconds of questions per target and answer size, over all "
                        "rounds (default 6)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="interleaved rounds, each in a rotated order (default 3)")
    parser.add_argument("--big-mb", type=float, default=10.0,
                        help="size of the large answer in MB (default 10)")
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    parser.add_argument("--keep", action="store_true",
                        help="keep the run's directory (configs, logs) for inspection")
    args = parser.parse_args(argv)
    if args.duration <= 0 or args.rounds < 1 or args.big_mb <= 0:
        parser.error("--duration and --big-mb must be positive, --rounds at least 1")
    return args


# -- the data ------------------------------------------------------------------------------


def load_data(write_url: str, big_series: int, timestamp_ms: int) -> None:
    """
    Push the small answer's one series and the large answer's many into
    Prometheus, one sample each at C{timestamp_ms}.
    """
    series = [{"__name__": "bench_small", "job": "api", "instance": "10.0.0.1:8080"}]
    series += [
        {"__name__": "bench_big", "id": f"{i:07d}", "pad": "x" * PAD}
        for i in range(big_series)
    ]
    for start in range(0, len(series), 5000):
        request = WriteRequest()
        for labels in series[start : start + 5000]:
            labels = {**labels, LABEL: TENANT}
            one = request.timeseries.add()
            for name in sorted(labels):
                one.labels.add(name=name, value=labels[name])
            one.samples.add(value=1.0, timestamp=timestamp_ms)
        push = urllib.request.Request(
            write_url,
            data=snappy.compress(request.SerializeToString()),
            method="POST",
            headers={
                "Content-Type": "application/x-protobuf",
                "Content-Encoding": "snappy",
                "X-Prometheus-Remote-Write-Version": "0.1.0",
            },
        )
        with urllib.request.urlopen(push, timeout=60) as response:
            if response.status // 100 != 2:
                raise BenchError(f"Prometheus answered {response.status} to the data")


# -- sealgw --------------------------------------------------------------------------------


def start_sealgw(
    workdir: Path, cleanup: ExitStack, prometheus: str, token: str, name: str, label: bool
) -> tuple[Server, str]:
    """
    sealgw from this checkout under twistd, one process, with a token file
    and Prometheus reads from C{prometheus}; with C{label}, that upstream
    keeps tenants apart by label.
    """
    port, admin = free_port(), free_port()
    tokens = workdir / f"{name}-tokens.yaml"
    tokens.write_text(f"- name: bench\n  token: {token}\n  tenants: [{TENANT}]\n")
    tenancy = f"{{label: {LABEL}}}" if label else "header"
    config = workdir / f"{name}.yaml"
    config.write_text(
        f"""\
# Generated by bench/query.py for one benchmark run.
listeners:
  - endpoint: tcp:{port}:interface=127.0.0.1
admin:
  endpoint: tcp:{admin}:interface=127.0.0.1
log:
  access: false
upstreams:
  prometheus:
    url: {prometheus}
    max_connections: 16
    tenancy: {tenancy}
query:
  prometheus: {{upstream: prometheus, timeout: 30s}}
auth:
  token_file: {{path: {tokens}}}
"""
    )
    server = Server(
        name,
        [str(processes.VENV_BIN / "twistd"), "-n", "--pidfile=", "sealgw", "--config",
         str(config)],
        workdir / f"{name}.log",
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    cleanup.callback(server.stop)
    server.wait_until(answers(f"http://127.0.0.1:{admin}/ready"))
    return server, f"http://127.0.0.1:{port}"


# -- the client ----------------------------------------------------------------------------


class Client:
    """
    One kept-alive connection asking one question at a time.
    """

    def __init__(self, base: str, token: Optional[str]) -> None:
        parts = urlsplit(base)
        self.connection = http.client.HTTPConnection(
            parts.hostname, parts.port, timeout=60
        )
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}

    def ask(self, path: str) -> tuple[int, bytes]:
        self.connection.request("GET", path, headers=self.headers)
        response = self.connection.getresponse()
        return response.status, response.read()

    def close(self) -> None:
        self.connection.close()


def measure(client: Client, path: str, seconds: float) -> list[float]:
    """
    Ask C{path} again and again for C{seconds}; answer each latency in
    milliseconds (request sent to answer read whole).
    """
    latencies = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        began = time.perf_counter()
        status, _ = client.ask(path)
        latencies.append((time.perf_counter() - began) * 1000)
        if status != 200:
            raise BenchError(f"{path} answered {status} during the run")
    return latencies


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))]


# -- the run -------------------------------------------------------------------------------


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    workdir = Path(tempfile.mkdtemp(prefix="sealgw-bench-query-"))
    keep = args.keep
    try:
        with ExitStack() as cleanup:
            report = _run(args, workdir, cleanup)
    except KeyboardInterrupt:
        print("\ninterrupted; every server was stopped", file=sys.stderr)
        return 130
    except (StartError, BenchError, OSError) as e:
        keep = True
        print(f"\nbench: {e}", file=sys.stderr)
        print(f"(configs and logs kept in {workdir})", file=sys.stderr)
        return 2
    finally:
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)
    if keep:
        print(f"run directory kept: {workdir}")
    _print(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"results written to {args.json}")
    return 0


def _run(args: argparse.Namespace, workdir: Path, cleanup: ExitStack) -> dict[str, Any]:
    processes.check_twistd_plugin()
    token = secrets.token_hex(16)
    prometheus, write_url = processes.start_prometheus(workdir, cleanup)
    base = write_url.removesuffix("/api/v1/write")
    timestamp_ms = int(time.time() * 1000)
    big_series = max(1, round(args.big_mb * 1_000_000 / (PAD + 100)))
    load_data(write_url, big_series, timestamp_ms)
    sealgw, sealgw_url = start_sealgw(workdir, cleanup, base, token, "sealgw", label=False)
    labelled, labelled_url = start_sealgw(
        workdir, cleanup, base, token, "sealgw-label", label=True
    )
    servers = {"sealgw": sealgw, "sealgw+label": labelled}
    clients = {
        "direct": Client(base, None),
        "sealgw": Client(sealgw_url, token),
        "sealgw+label": Client(labelled_url, token),
    }
    for client in clients.values():
        cleanup.callback(client.close)
    at = f"{timestamp_ms / 1000:.3f}"
    paths = {
        "small": "/api/v1/query?" + urlencode({"query": "bench_small", "time": at}),
        "large": "/api/v1/query?" + urlencode({"query": "bench_big", "time": at}),
    }
    sizes = {}
    for answer, path in paths.items():
        bodies = {name: _answer(client, path, name) for name, client in clients.items()}
        if len(set(bodies.values())) != 1:
            raise BenchError(f"the targets answer the {answer} query differently")
        sizes[answer] = len(bodies["direct"])
    slice_ = args.duration / args.rounds
    print(f"{os.cpu_count()} CPUs; answers of {sizes['small']} and {sizes['large']:,} bytes; "
          f"{args.rounds} round(s) of {slice_:.1f}s per target and answer, one question at "
          "a time", flush=True)

    latencies: dict[str, dict[str, list[float]]] = {
        answer: {name: [] for name in TARGETS} for answer in paths
    }
    cpu: dict[str, dict[str, float]] = {answer: dict.fromkeys(servers, 0.0) for answer in paths}
    for answer, path in paths.items():
        for r in range(args.rounds):
            order = TARGETS[r % len(TARGETS):] + TARGETS[: r % len(TARGETS)]
            for name in order:
                server = servers.get(name)
                before = server.cpu_seconds() if server else 0.0
                latencies[answer][name] += measure(clients[name], path, slice_)
                if server:
                    cpu[answer][name] += server.cpu_seconds() - before
    return _report(sizes, latencies, cpu)


def _answer(client: Client, path: str, name: str) -> bytes:
    status, body = client.ask(path)
    if status != 200:
        raise BenchError(f"{name} answered {status} to {path}: {body[:300]!r}")
    return body


def _report(
    sizes: dict[str, int],
    latencies: dict[str, dict[str, list[float]]],
    cpu: dict[str, dict[str, float]],
) -> dict[str, Any]:
    report: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "answers": {},
    }
    for answer, by_target in latencies.items():
        direct = statistics.median(by_target["direct"])
        rows = {}
        for name, values in by_target.items():
            p50 = statistics.median(values)
            row = {
                "requests": len(values),
                "p50_ms": round(p50, 3),
                "p90_ms": round(percentile(values, 90), 3),
                "p99_ms": round(percentile(values, 99), 3),
                "added_p50_ms": round(p50 - direct, 3),
                "p50_ratio": round(p50 / direct, 2),
            }
            if name in cpu[answer]:
                row["cpu_ms_per_request"] = round(cpu[answer][name] * 1000 / len(values), 3)
            rows[name] = row
        report["answers"][answer] = {"bytes": sizes[answer], "targets": rows}
    return report


def _print(report: dict[str, Any]) -> None:
    print()
    print(f"{'answer':<7} {'target':<13} {'requests':>8} {'p50 ms':>8} {'p90 ms':>8} "
          f"{'p99 ms':>8} {'added p50':>10} {'x direct':>9} {'CPU ms/req':>10}")
    for answer, data in report["answers"].items():
        for name, row in data["targets"].items():
            cpu = row.get("cpu_ms_per_request")
            print(f"{answer:<7} {name:<13} {row['requests']:>8} {row['p50_ms']:>8.2f} "
                  f"{row['p90_ms']:>8.2f} {row['p99_ms']:>8.2f} {row['added_p50_ms']:>+10.2f} "
                  f"{row['p50_ratio']:>9.2f} {'' if cpu is None else f'{cpu:.2f}':>10}")


if __name__ == "__main__":
    sys.exit(main())
