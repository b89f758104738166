"""
Measure remote write 2.0 against 1.0: what the intake costs a request in
each case (in this process, no servers), and then sealgw's samples per
CPU-second under load for 1.0 relayed as it came, 2.0 relayed as it came
(an upstream with C{remote_write_version: 2}) and 2.0 converted to 1.0
(the default).

    .venv/bin/python bench/rw2.py [--intake-only] [--calls 200] [--duration 10]
        [--rounds 2] [--connections 8] [--json FILE] [--keep]

The bodies are bench/payloads.py's 2,000 series of one sample each, the
2.0 one the same series written as a 2.0 sender writes them (every string
once in the symbols table).  Intake figures are the median of C{--calls}
calls of C{sealgw.signals.intake.remote_write_pushes}, in milliseconds,
with the C extension in use said.  The upstream of the load runs is the
nginx sink of bench/run.py (answers 204 to anything), so what is
measured is sealgw's own cost.  See docs/push.rst and
docs/benchmarks.rst.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Optional

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import snappy  # noqa: E402

from bench import payloads, processes  # noqa: E402
from bench.load import add_load_options, check_load_options  # noqa: E402
from bench.run import Stopped, Target, measure, warn_failed, with_servers  # noqa: E402
from bench.seal import per_cpu_second  # noqa: E402
from sealgw.signals import _relabel, _samplecheck, intake, remote_write2  # noqa: E402
from sealgw.signals.proto import remote_v2_pb2 as v2  # noqa: E402
from sealgw.signals.proto.remote_pb2 import WriteRequest  # noqa: E402

SERIES = 2000
LIMIT = 64 << 20

#: The headers Prometheus 3 sends with a 2.0 request, besides the token.
RW2_HEADERS = {
    "Content-Type": remote_write2.CONTENT_TYPE,
    "Content-Encoding": "snappy",
    "X-Prometheus-Remote-Write-Version": remote_write2.VERSION,
}


def as_v2(request: WriteRequest) -> v2.Request:
    """
    C{request}'s series as a 2.0 sender writes them.
    """
    out = v2.Request(symbols=[""])
    index = {"": 0}

    def ref(text: str) -> int:
        if text not in index:
            index[text] = len(out.symbols)
            out.symbols.append(text)
        return index[text]

    for series in request.timeseries:
        one = out.timeseries.add(
            labels_refs=[r for label in series.labels for r in (ref(label.name), ref(label.value))]
        )
        for sample in series.samples:
            one.samples.add(value=sample.value, timestamp=sample.timestamp)
    return out


def bodies(now_ms: int) -> tuple[bytes, bytes]:
    """
    The 1.0 and 2.0 bodies of the same 2,000 series.
    """
    request = payloads.build(SERIES, now_ms)
    return (
        bytes(snappy.compress(request.SerializeToString())),
        bytes(snappy.compress(as_v2(request).SerializeToString())),
    )


#: Each intake case: its body (1.0 or 2.0), the upstream's version, the
#: tenant label (None for none) and the route's check.
CASES = {
    "1.0 relayed as it came": ("1.0", 1, None, "headers"),
    "1.0 label tenancy": ("1.0", 1, "tenant", "headers"),
    "2.0 relayed as it came": ("2.0", 2, None, "headers"),
    "2.0 relayed, decoded (check: decode)": ("2.0", 2, None, "decode"),
    "2.0 relayed, label tenancy": ("2.0", 2, "tenant", "headers"),
    "2.0 converted to 1.0": ("2.0", 1, None, "headers"),
    "2.0 converted, label tenancy": ("2.0", 1, "tenant", "headers"),
    "2.0 converted, check: labels": ("2.0", 1, None, "labels"),
}


def intake_costs(calls: int) -> dict[str, dict[str, float]]:
    """
    Median and best milliseconds of one intake call, per case.
    """
    now = time.time()
    rw1, rw2 = bodies(int(now * 1000))
    out = {}
    for name, (version, upstream, label, check) in CASES.items():
        facts = intake.RequestFacts(
            content_type="application/x-protobuf" if version == "1.0" else remote_write2.CONTENT_TYPE,
            content_encoding="snappy",
            tenant="team-a",
            received_at=now,
            tenant_label=label,
            upstream_remote_write=upstream,
        )
        body = rw1 if version == "1.0" else rw2

        def call(body: bytes = body, facts: intake.RequestFacts = facts, check: str = check) -> Any:
            return intake.remote_write_pushes(
                body, facts, add={}, remove=frozenset(), limit=LIMIT, check=check
            )

        out[name] = _timed(call, calls)
    return out


def _timed(call: Callable[[], Any], calls: int) -> dict[str, float]:
    call()  # warm the caches
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1000)
    return {"median_ms": statistics.median(times), "best_ms": min(times)}


def intake_table(costs: dict[str, dict[str, float]], sizes: tuple[int, int]) -> str:
    base = costs["1.0 relayed as it came"]["median_ms"]
    lines = [
        "",
        f"== intake, {SERIES} series of one sample (1.0 body {sizes[0] / 1024:.1f} KiB, "
        f"2.0 body {sizes[1] / 1024:.1f} KiB, snappy); C extension: "
        f"relabel {_relabel.IMPLEMENTATION}, sample limits {_samplecheck.IMPLEMENTATION} ==",
        f"{'case':40} {'median ms':>10} {'best ms':>8} {'- 1.0 ms':>9}",
    ]
    for name, cost in costs.items():
        lines.append(
            f"{name:40} {cost['median_ms']:10.3f} {cost['best_ms']:8.3f} "
            f"{cost['median_ms'] - base:9.3f}"
        )
    lines.append("- 1.0 ms: the median over that of 1.0 relayed as it came")
    return "\n".join(lines)


def parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_load_options(parser, duration_help="seconds of load per row (default 10)")
    parser.add_argument("--calls", type=int, default=200,
                        help="intake calls per case (default 200)")
    parser.add_argument("--intake-only", action="store_true",
                        help="measure the intake only, start no servers")
    args = parser.parse_args(argv)
    check_load_options(parser, args)
    if args.calls < 1:
        parser.error("--calls must be at least 1")
    args.latency_duration = 0
    args.profile = None
    return args


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    costs = intake_costs(args.calls)
    rw1, rw2 = bodies(int(time.time() * 1000))
    print(intake_table(costs, (len(rw1), len(rw2))), flush=True)
    report: dict[str, Any] = {"series": SERIES, "intake": costs}
    if not args.intake_only:
        token = secrets.token_hex(16)
        try:
            report["load"] = with_servers(
                lambda workdir, cleanup: run(args, workdir, cleanup, token), keep=args.keep
            )
        except Stopped as e:
            return e.status
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"results written to {args.json}")
    if report.get("load", {}).get("failed_requests"):
        warn_failed(report["load"]["failed_requests"])
        return 1
    return 0


def run(
    args: argparse.Namespace, workdir: Path, cleanup: ExitStack, token: str
) -> dict[str, Any]:
    """
    The sink, a sealgw whose upstream reads 1.0 and one whose upstream
    reads 2.0; each row under load.
    """
    processes.check_twistd_plugin()
    rw1, rw2 = bodies(int(time.time() * 1000))
    (workdir / "rw1.snappy").write_bytes(rw1)
    (workdir / "rw2.snappy").write_bytes(rw2)
    upstream, upstream_url = processes.start_sink(workdir, cleanup)
    reads1, url1 = processes.start_sealgw(workdir, cleanup, upstream_url, token, name="sealgw-v1")
    reads2, url2 = processes.start_sealgw(
        workdir, cleanup, upstream_url, token, name="sealgw-v2", remote_write_version=2
    )
    targets = {
        "1.0 relayed": Target(url1, {"proxy": reads1}, str(workdir / "rw1.snappy")),
        "2.0 relayed": Target(url2, {"proxy": reads2}, str(workdir / "rw2.snappy"), RW2_HEADERS),
        "2.0 converted": Target(
            url1, {"proxy": reads1}, str(workdir / "rw2.snappy"), RW2_HEADERS
        ),
    }
    print(f"remote write 2.0: upstream sink; {os.cpu_count()} CPUs; {args.rounds} round(s) "
          f"of {max(1, round(args.duration / args.rounds))}s ({args.connections} connections)",
          flush=True)
    results = measure(targets, token, args, upstream, "remote write 2.0")
    loads = {name: runs["load"] for name, runs in results.items()}
    base = per_cpu_second(SERIES, loads["1.0 relayed"])
    lines = [
        "",
        f"== {SERIES}-sample pushes through sealgw, upstream sink, {args.connections} connections ==",
        f"{'row':16} {'req/s':>8} {'failed':>6} {'sealgw CPU':>10} {'samples/CPU-s':>13} {'x 1.0':>6}",
    ]
    for name, load in loads.items():
        per_cpu = per_cpu_second(SERIES, load)
        ratio = f"{per_cpu / base:.3f}" if base else "-"
        lines.append(
            f"{name:16} {load.requests_per_second:8.1f} {load.failed:6d} "
            f"{load.cpu.get('proxy', 0.0):10.2f} {per_cpu / 1e6:12.3f}M {ratio:>6}"
        )
    print("\n".join(lines))
    return {
        "rows": {
            name: {
                "load": load.as_json(SERIES),
                "samples_per_sealgw_cpu_second": per_cpu_second(SERIES, load),
            }
            for name, load in loads.items()
        },
        "failed_requests": sum(load.failed for load in loads.values()),
    }


if __name__ == "__main__":
    sys.exit(main())
