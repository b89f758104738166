"""
Measure what sealgw costs on Grafana's reads, next to the proxies that do
the same job, in one run on this machine, and print the ratios.

    .venv/bin/python bench/query.py [--duration 4] [--rounds 2] [--big-mb 10] [--big-duration 20]
        [--connections 4] [--only CASE ...] [--profile DIR] [--json FILE] [--keep]

The upstream is a real VictoriaMetrics (Debian's C{victoria-metrics}),
loaded with a Grafana-sized panel (200 series of 240 points: a
C{query_range} of about 1.1 MB of JSON) and a larger one (about
C{--big-mb} MB).  Five targets answer the same C{query_range}, sent as
Grafana sends it (a POST form):

- C{direct}: VictoriaMetrics itself;
- C{nginx}: a bearer-token C{map}, the tenant header set, kept-alive
  upstream connections, answers streamed (not buffered to disk);
- C{vmauth}: VictoriaMetrics' own auth proxy, a bearer token per user;
- C{sealgw}: the tenant header (VictoriaMetrics ignores it): the gate,
  the allow-list, the header policy, a read slot, the streamed answer;
- C{sealgw+label}: also keeps tenants apart by label, so the query is
  parsed and rewritten (once per distinct query: the rewrite is cached).

Each answer size is asked without and with C{Accept-Encoding: gzip}.  For
each of these four cases and each target, in C{--rounds} interleaved
rounds in rotated order: wrk with C{--connections} connections (req/s,
and the proxy's CPU time per answer, from C{/proc}), then wrk with one
connection (latency alone; the added p50 is against C{direct} in the
same round).  Traffic goes to 127.0.0.1 only; every run is bounded by
C{--duration}.

See docs/benchmarks.rst for what is measured and how to read it.
"""

from __future__ import annotations

import argparse
import gzip
import http.client
import json
import os
import platform
import random
import secrets
import shutil
import signal
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

from bench import processes, profile  # noqa: E402
from bench.load import LoadError, Result, merge, run_wrk  # noqa: E402
from bench.processes import Server, StartError, answers, free_port  # noqa: E402
from sealgw.signals.proto.remote_pb2 import WriteRequest  # noqa: E402

TENANT = processes.TENANT
TARGETS = ("direct", "nginx", "vmauth", "sealgw", "sealgw+label")
PROXIES = TARGETS[1:]

#: The label C{sealgw+label} keeps tenants apart by; every series carries
#: it, so all targets answer the same series.
LABEL = "tenant"

#: A Grafana panel's range: 240 points, one every 15 s (an hour).
POINTS = 240
STEP_S = 15
#: The panel's series; each is about 5.5 kB of JSON at 240 points.
PANEL_SERIES = 200
SERIES_BYTES = 5_500

#: The answers, each without and with C{Accept-Encoding: gzip}.
CASES = ("panel", "panel+gzip", "big", "big+gzip")

FORM = {"Content-Type": "application/x-www-form-urlencoded", "User-Agent": "Grafana/10"}


class BenchError(Exception):
    """
    The run could not be measured: a target refused, or answered
    differently from the others.
    """


def parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=4,
                        help="seconds of wrk per target, case and phase, over all rounds "
                        "(default 4)")
    parser.add_argument("--rounds", type=int, default=2,
                        help="interleaved rounds, each in a rotated order (default 2)")
    parser.add_argument("--big-mb", type=float, default=10.0,
                        help="size of the large answer in MB (default 10)")
    parser.add_argument("--big-duration", type=int,
                        help="--duration for the large answer, which takes the upstream "
                        "about a second to produce on two busy cores (default 5x --duration)")
    parser.add_argument("--connections", type=int, default=4,
                        help="wrk connections under load (default 4)")
    parser.add_argument("--only", action="append", choices=CASES, metavar="CASE",
                        help=f"measure only this case (repeatable): {', '.join(CASES)}")
    parser.add_argument("--profile", type=Path, metavar="DIR",
                        help="sample sealgw with py-spy during its load runs, stacks into DIR")
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    parser.add_argument("--keep", action="store_true",
                        help="keep the run's directory (configs, logs) for inspection")
    args = parser.parse_args(argv)
    if min(args.duration, args.rounds, args.connections) < 1 or args.big_mb <= 0:
        parser.error("--duration, --rounds and --connections must be at least 1, "
                     "--big-mb positive")
    if args.big_duration is None:
        args.big_duration = 5 * args.duration
    if min(args.duration, args.big_duration) < args.rounds:
        parser.error("--duration and --big-duration must give each round at least a second")
    if args.profile and profile.find_py_spy() is None:
        parser.error("--profile needs py-spy (pip install py-spy)")
    return args


# -- the data ------------------------------------------------------------------------------


def load_data(write_url: str, big_series: int, end_ms: int) -> None:
    """
    Push the panel's series (C{bench_panel}) and the large answer's
    (C{bench_big}) into the upstream, C{POINTS} samples each up to
    C{end_ms}, with values that do not repeat (as a real panel's do not),
    so that the JSON and its gzip are of realistic size.
    """
    rng = random.Random(25)
    series = [{"__name__": "bench_panel", "job": "api", "instance": f"10.0.{i // 250}.{i % 250}:8080",
               "id": f"{i:05d}"} for i in range(PANEL_SERIES)]
    series += [{"__name__": "bench_big", "job": "api", "instance": f"10.1.{i // 250}.{i % 250}:8080",
                "id": f"{i:05d}"} for i in range(big_series)]
    stamps = [end_ms - (POINTS - 1 - k) * STEP_S * 1000 for k in range(POINTS)]
    for start in range(0, len(series), 500):
        request = WriteRequest()
        for labels in series[start : start + 500]:
            labels = {**labels, LABEL: TENANT}
            one = request.timeseries.add()
            for name in sorted(labels):
                one.labels.add(name=name, value=labels[name])
            for stamp in stamps:
                one.samples.add(value=round(rng.uniform(0, 1000), 3), timestamp=stamp)
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
                raise BenchError(f"the upstream answered {response.status} to the data")


def query_form(metric: str, end_ms: int) -> bytes:
    end = end_ms / 1000
    start = end - (POINTS - 1) * STEP_S
    return urlencode(
        {"query": metric, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": str(STEP_S)}
    ).encode("ascii")


# -- sealgw --------------------------------------------------------------------------------


def start_sealgw(
    workdir: Path, cleanup: ExitStack, upstream: str, token: str, name: str, label: bool
) -> tuple[Server, str]:
    """
    sealgw from this checkout under twistd, one process, with a token file
    and Prometheus reads from C{upstream}; with C{label}, that upstream
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
    url: {upstream}
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


# -- the run -------------------------------------------------------------------------------


def ask(base: str, token: str, form: bytes, gzipped: bool) -> tuple[int, dict[str, str], bytes]:
    """
    One POST of C{form} to C{base}'s C{query_range}; the status, headers
    and body as they came on the wire (not inflated).
    """
    parts = urlsplit(base)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    headers = {**FORM, "Authorization": f"Bearer {token}"}
    if gzipped:
        headers["Accept-Encoding"] = "gzip"
    try:
        connection.request("POST", "/api/v1/query_range", body=form, headers=headers)
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


def wait_for_data(base: str, token: str, form: bytes, series: int) -> None:
    """
    Ask until the upstream answers all C{series} (it makes new samples
    searchable within a few seconds).
    """
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        # Not from (nor into) its cache, which would keep a partial answer.
        status, _, body = ask(base, token, form + b"&nocache=1", False)
        if status == 200 and len(json.loads(body)["data"]["result"]) == series:
            return
        time.sleep(0.5)
    raise BenchError(f"the upstream did not answer the {series} series loaded within 60s")


def check_same(urls: dict[str, str], token: str, form: bytes, gzipped: bool) -> int:
    """
    Every target answers C{form} with the same JSON (inflated when it came
    gzipped, which it must when asked for gzip); answer its size on the
    wire at C{direct}.
    """
    wire: dict[str, int] = {}
    bodies = {}
    for name, base in urls.items():
        status, headers, body = ask(base, token, form, gzipped)
        if status != 200:
            raise BenchError(f"{name} answered {status}: {body[:300]!r}")
        encoding = headers.get("content-encoding", "")
        if gzipped != (encoding == "gzip"):
            raise BenchError(f"{name} answered with Content-Encoding {encoding!r}")
        wire[name] = len(body)
        bodies[name] = gzip.decompress(body) if gzipped else body
    if len(set(bodies.values())) != 1:
        raise BenchError("the targets answer the query differently")
    return wire["direct"]


def percentile(values: list[float], p: float) -> float:
    """
    The C{p}th percentile of C{values} (nearest rank); the isolation
    benchmark's clients use it too.
    """
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))]


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
    except (StartError, BenchError, LoadError, OSError) as e:
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
    vm, vm_url = processes.start_victoria_metrics(workdir, cleanup)
    # Clear of VictoriaMetrics' 30 s search latency offset.
    end_ms = (int(time.time()) - 600) * 1000
    big_series = max(1, round(args.big_mb * 1_000_000 / SERIES_BYTES))
    load_data(f"{vm_url}/api/v1/write", big_series, end_ms)
    forms = {"panel": query_form("bench_panel", end_ms), "big": query_form("bench_big", end_ms)}
    wait_for_data(vm_url, token, forms["panel"], PANEL_SERIES)
    wait_for_data(vm_url, token, forms["big"], big_series)
    with urllib.request.urlopen(f"{vm_url}/internal/resetRollupResultCache", timeout=10):
        pass

    servers: dict[str, Server] = {}
    urls = {"direct": vm_url}
    servers["nginx"], urls["nginx"] = processes.start_nginx_read_proxy(
        workdir, cleanup, vm_url, token
    )
    servers["vmauth"], urls["vmauth"] = processes.start_vmauth(workdir, cleanup, vm_url, token)
    servers["sealgw"], urls["sealgw"] = start_sealgw(
        workdir, cleanup, vm_url, token, "sealgw", label=False
    )
    servers["sealgw+label"], urls["sealgw+label"] = start_sealgw(
        workdir, cleanup, vm_url, token, "sealgw-label", label=True
    )
    cases = [c for c in CASES if not args.only or c in args.only]
    sizes = {}
    bodies = {}
    for case in cases:
        answer, _, encoding = case.partition("+")
        sizes[case] = check_same(urls, token, forms[answer], encoding == "gzip")
        path = workdir / f"{answer}.form"
        path.write_bytes(forms[answer])
        bodies[case] = str(path)
    slices = {c: max(1, (args.big_duration if c.startswith("big") else args.duration)
                     // args.rounds) for c in cases}
    print(f"{os.cpu_count()} CPUs; " + ", ".join(f"{c}: {sizes[c]:,} bytes" for c in cases)
          + f"; {args.rounds} round(s) of " + ", ".join(f"{s}s" for s in sorted(set(slices.values())))
          + " per target, case and phase", flush=True)

    load: dict[str, dict[str, list[Result]]] = {c: {t: [] for t in TARGETS} for c in cases}
    alone: dict[str, dict[str, list[Result]]] = {c: {t: [] for t in TARGETS} for c in cases}
    stacks: list[Path] = []
    for r in range(args.rounds):
        order = TARGETS[r % len(TARGETS):] + TARGETS[: r % len(TARGETS)]
        for case in cases:
            headers = {**FORM, **({"Accept-Encoding": "gzip"} if case.endswith("gzip") else {})}
            slice_ = slices[case]
            for name in order:
                watch = {"proxy": servers[name]} if name in servers else {}
                watch["upstream"] = vm
                profiler = None
                if args.profile and name == "sealgw":
                    args.profile.mkdir(parents=True, exist_ok=True)
                    stacks.append(args.profile / f"sealgw-{case}-round{r + 1}.txt")
                    profiler = profile.start(servers[name].pid, slice_, stacks[-1])
                try:
                    load[case][name].append(run_wrk(
                        f"{urls[name]}/api/v1/query_range", bodies[case], token, duration=slice_,
                        connections=args.connections, threads=2, watch=watch, headers=headers,
                    ))
                finally:
                    if profiler is not None:
                        profiler.communicate(timeout=60)
                alone[case][name].append(run_wrk(
                    f"{urls[name]}/api/v1/query_range", bodies[case], token, duration=slice_,
                    connections=1, threads=1, watch=watch, headers=headers,
                ))
    if stacks:
        print(f"\nwhere sealgw's time went ({', '.join(map(str, stacks))}):\n"
              f"{profile.hotspots(stacks)}")
    return _report(args, sizes, load, alone)


def _report(
    args: argparse.Namespace,
    sizes: dict[str, int],
    load: dict[str, dict[str, list[Result]]],
    alone: dict[str, dict[str, list[Result]]],
) -> dict[str, Any]:
    report: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "load_average": os.getloadavg()},
        "connections": args.connections,
        "cases": {},
    }
    for case, by_target in load.items():
        rows: dict[str, dict[str, Any]] = {}
        merged_alone = {name: merge(runs) for name, runs in alone[case].items()}
        if not all(r.requests for r in merged_alone.values()):
            raise BenchError(f"a target answered no {case} query alone: give it more time")
        direct_p50 = merged_alone["direct"].p50_ms
        for name, runs in by_target.items():
            loaded = merge(runs)
            lonely = merged_alone[name]
            failed = loaded.failed + lonely.failed
            if failed:
                raise BenchError(f"{name} failed {failed} requests of {case}")
            row: dict[str, Any] = {
                "requests_per_second": round(loaded.requests_per_second, 1),
                "p50_alone_ms": round(lonely.p50_ms, 3),
                "added_p50_alone_ms": round(lonely.p50_ms - direct_p50, 3),
            }
            if not loaded.requests:
                raise BenchError(f"{name} answered no {case} query under load: give it more time")
            if name in PROXIES:
                row["cpu_ms_per_answer"] = round(
                    loaded.cpu_seconds["proxy"] * 1000 / loaded.requests, 3
                )
                row["cpu_ms_per_answer_alone"] = round(
                    lonely.cpu_seconds["proxy"] * 1000 / max(1, lonely.requests), 3
                )
            rows[name] = row
        vmauth = rows["vmauth"]["cpu_ms_per_answer"]
        for name in PROXIES:
            if vmauth:
                rows[name]["cpu_x_vmauth"] = round(rows[name]["cpu_ms_per_answer"] / vmauth, 2)
        report["cases"][case] = {"bytes": sizes[case], "targets": rows}
    return report


def _print(report: dict[str, Any]) -> None:
    print()
    print(f"{'case':<11} {'target':<13} {'req/s':>7} {'CPU ms/ans':>10} {'x vmauth':>8} "
          f"{'alone CPU':>9} {'p50 alone':>9} {'added p50':>9}")
    for case, data in report["cases"].items():
        for name, row in data["targets"].items():
            cpu = row.get("cpu_ms_per_answer")
            ratio = row.get("cpu_x_vmauth")
            lonely = row.get("cpu_ms_per_answer_alone")
            print(f"{case:<11} {name:<13} {row['requests_per_second']:>7.1f} "
                  f"{'' if cpu is None else f'{cpu:.2f}':>10} "
                  f"{'' if ratio is None else f'{ratio:.2f}':>8} "
                  f"{'' if lonely is None else f'{lonely:.2f}':>9} "
                  f"{row['p50_alone_ms']:>9.2f} {row['added_p50_alone_ms']:>+9.2f}")
        print()


if __name__ == "__main__":
    sys.exit(main())
