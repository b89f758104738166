"""
Measure how well one gateway keeps two tenants apart for availability:
tenant B's dashboard query, asked one at a time, while tenant A floods at
and above its limits; and the admin listener's /health while A's most
costly admitted query runs.  One run on this machine, traffic to
127.0.0.1 only, every stage bounded by --duration.

    .venv/bin/python bench/isolation.py [--duration 20] [--json FILE] [--keep]
        [--a-limits YAML] [--a-push-rate R] [--a-read-rate R] [--a-step S] ...

One Prometheus (remote-write receiver on) holds both tenants' series and
is shared through one sealgw with C{tenancy: {label: tenant}}.  Stages:

1. quiet: B's query, one at a time on a kept-alive connection;
2. A floods: the same, while wrk sends A's pushes and A's costly reads
   from several connections at twice A's limits (or flat out);
3. health: C{/health} sampled at a fixed interval, first alone, then
   while A's costly query runs back to back.

See docs/benchmarks.rst ("Tenant isolation") for what is measured and how
to read it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import secrets
import sys
import threading
import time
from collections.abc import Mapping
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Optional
from urllib.parse import urlencode

import attr
import yaml

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    # Run as a script: the checkout's bench and sealgw packages.
    sys.path.insert(0, str(ROOT))

from bench import payloads, processes  # noqa: E402
from bench.clients import FORM_HEADERS, Client, Latencies, in_background, measure  # noqa: E402
from bench.isolation_report import report, table  # noqa: E402
from bench.load import LoadError, cpu_snapshot, preflight, start_wrk  # noqa: E402
from bench.run import Stopped, with_servers  # noqa: E402
from bench.tenants import (  # noqa: E402
    A_QUERY,
    B_QUERY,
    B_RANGE_S,
    B_STEP_S,
    INTERVAL_S,
    JOBS,
    REGEX_PLACEHOLDER,
    TENANT_A,
    TENANT_B,
    a_query,
    load_data,
    range_form,
    sealgw_config,
    token_file,
)

#: A's limits in its token-file entry unless --a-limits says otherwise:
#: the shape docs/auth.rst shows, pushes and reads apart.
A_LIMITS = "{requests_per_second: 50, reads: {requests_per_second: 20, max_concurrent: 4}}"

#: How far above its limits A offers requests unless told a rate.
OVERDRIVE = 2.0


class BenchError(LoadError):
    """
    The run could not be measured: the data did not load, or a tenant's
    request was refused before the stages began.  A L{LoadError}, so that
    the run's directory is kept to explain it, as when wrk fails.
    """


# -- the options -----------------------------------------------------------------------------


def parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=20.0,
                        metavar="S",
                        help="seconds per stage (default 20; about 70 s in all)")
    parser.add_argument("--series", metavar="N", type=int, default=320,
                        help=f"series per tenant, {JOBS} jobs (default 320)")
    parser.add_argument("--points", metavar="N", type=int, default=60,
                        help=f"points per series, one every {INTERVAL_S}s up to now (default 60)")
    parser.add_argument("--a-limits", default=A_LIMITS, metavar="YAML",
                        help=f"tenant A's limits in its token-file entry (default {A_LIMITS})")
    parser.add_argument("--a-push-connections", metavar="N", type=int, default=8,
                        help="wrk connections for A's pushes (default 8)")
    parser.add_argument("--a-push-rate", metavar="R", type=float,
                        help=f"pushes a second A offers, over all its connections; 0 is flat "
                        f"out (default {OVERDRIVE:g}x its requests_per_second, else flat out)")
    parser.add_argument("--a-push-batch", metavar="N", type=int, default=500,
                        help="samples per push of A's (default 500)")
    parser.add_argument("--a-read-connections", metavar="N", type=int, default=8,
                        help="wrk connections for A's reads (default 8)")
    parser.add_argument("--a-read-rate", metavar="R", type=float,
                        help=f"reads a second A offers; 0 is flat out (default {OVERDRIVE:g}x "
                        "its reads' requests_per_second, else flat out)")
    parser.add_argument("--a-query", metavar="Q", default=A_QUERY,
                        help=f"A's costly query; {REGEX_PLACEHOLDER} is replaced by the "
                        f"regular expression (default {A_QUERY})")
    parser.add_argument("--a-regex-bytes", metavar="N", type=int, default=60_000,
                        help="length of the regular expression in A's query, an alternation "
                        "of A's instances padded with names that match nothing (default "
                        "60000, near the 64 KiB the gateway takes)")
    parser.add_argument("--a-range", metavar="S", type=float, default=3600.0,
                        help="seconds A's query_range covers (default 3600)")
    parser.add_argument("--a-step", metavar="S", type=float, default=5.0,
                        help="step of A's query_range in seconds (default 5)")
    parser.add_argument("--health-interval", metavar="S", type=float, default=0.01,
                        help="seconds between two /health samples (default 0.01)")
    parser.add_argument("--gateway-config", default="{}", metavar="YAML",
                        help="a YAML mapping merged into sealgw's generated configuration, "
                        "such as '{upstreams: {prometheus: {max_connections: 4}}}'")
    parser.add_argument("--json", metavar="FILE", type=Path, help="also write the results to this file")
    parser.add_argument("--keep", action="store_true",
                        help="keep the run's directory (configs, logs) for inspection")
    args = parser.parse_args(argv)
    if args.duration < 2:
        parser.error("--duration must be at least 2")
    if min(args.series, args.points, args.a_push_connections, args.a_read_connections,
           args.a_push_batch) < 1:
        parser.error("--series, --points, --a-*-connections and --a-push-batch must be at "
                     "least 1")
    if args.series < JOBS:
        parser.error(f"--series must be at least {JOBS} (one per job)")
    if args.a_range <= 0 or args.a_step <= 0 or args.health_interval <= 0:
        parser.error("--a-range, --a-step and --health-interval must be positive")
    if args.a_regex_bytes < 0:
        parser.error("--a-regex-bytes cannot be negative")
    try:
        args.limits = parse_limits(args.a_limits)
    except ValueError as e:
        parser.error(f"--a-limits: {e}")
    try:
        args.gateway = parse_mapping(args.gateway_config)
    except ValueError as e:
        parser.error(f"--gateway-config: {e}")
    if REGEX_PLACEHOLDER in args.a_query:
        try:
            a_query(args.a_query, args.series, args.a_regex_bytes)
        except ValueError as e:
            parser.error(f"--a-regex-bytes: {e}")
    return args


def parse_mapping(text: str) -> dict[str, Any]:
    """
    A YAML mapping given on the command line (nothing is an empty one).
    """
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ValueError(f"not YAML: {e}") from None
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"must be a YAML mapping, such as {{key: value}}, not {text!r}")
    return value


def parse_limits(text: str) -> dict[str, Any]:
    """
    A's limits as given on the command line, a YAML mapping.  Only what
    the bench reads itself (the rates it offers twice of) is checked here;
    sealgw judges the rest when it loads the token file.
    """
    limits = parse_mapping(text)
    reads = limits.get("reads")
    if reads is not None and not isinstance(reads, dict):
        raise ValueError("reads must be a mapping, such as {max_concurrent: 4}")
    for where in (limits, reads or {}):
        rate = where.get("requests_per_second")
        if rate is not None and (
            isinstance(rate, bool) or not isinstance(rate, (int, float)) or rate <= 0
        ):
            raise ValueError(f"requests_per_second must be a positive number, not {rate!r}")
    return limits


def offered_rate(given: Optional[float], limits: Mapping[str, Any]) -> float:
    """
    The rate A offers (0 for flat out): C{given}, else L{OVERDRIVE} times
    the limit's C{requests_per_second}, else flat out.
    """
    if given is not None:
        return max(0.0, given)
    limit = limits.get("requests_per_second")
    return OVERDRIVE * float(limit) if limit else 0.0


def pause_ms(rate: float, connections: int) -> int:
    """
    How long each of C{connections} waits before each request so that
    together they offer at most C{rate} a second (0: no pause).
    """
    if rate <= 0:
        return 0
    return max(1, round(1000 * connections / rate))


# -- the run ---------------------------------------------------------------------------------


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    try:
        figures = with_servers(
            lambda workdir, cleanup: _run(args, workdir, cleanup),
            keep=args.keep, prefix="sealgw-bench-isolation-",
        )
    except Stopped as e:
        return e.status
    print(table(figures))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
        print(f"results written to {args.json}")
    invalid = figures["invalid"]
    if invalid:
        print(f"\n!!! {'; '.join(invalid)} !!!", file=sys.stderr)
        return 1
    return 0


@attr.frozen
class Setup:
    """
    What the stages ask, and of whom.
    """

    url: str
    admin: str
    tokens: Mapping[str, str]
    b_path: str
    a_form: bytes
    a_form_path: str
    push_body: str
    servers: Mapping[str, processes.Server]


def _run(args: argparse.Namespace, workdir: Path, cleanup: ExitStack) -> dict[str, Any]:
    setup = _start(args, workdir, cleanup)
    print(f"{os.cpu_count()} CPUs; {args.series} series of {args.points} points per "
          f"tenant; A's limits {json.dumps(args.limits)}; {args.duration:g}s per stage",
          flush=True)
    stages: dict[str, Any] = {}
    print("stage 1/3: quiet (B alone)", flush=True)
    stages["quiet"] = _quiet(args, setup)
    print("stage 2/3: A floods", flush=True)
    stages["flood"] = _flood(args, setup)
    print("stage 3/3: /health during A's costly query", flush=True)
    stages["health"] = _health(args, setup)
    return report(settings(args, setup), stages)


def _start(args: argparse.Namespace, workdir: Path, cleanup: ExitStack) -> Setup:
    """
    Prometheus with both tenants' data, sealgw in front, and every kind
    of request sent once and answered as it must be before anything is
    measured.
    """
    processes.check_twistd_plugin()
    prometheus, write_url = processes.start_prometheus(workdir, cleanup)
    end_ms = int(time.time()) * 1000
    load_data(write_url, args.series, args.points, end_ms)
    # After the data: the push bodies' timestamp is now, newer than it.
    push_body = payloads.write_bodies(str(workdir), (args.a_push_batch,))[args.a_push_batch]

    tokens = {TENANT_A: secrets.token_hex(16), TENANT_B: secrets.token_hex(16)}
    token_path = workdir / "tokens.yaml"
    token_path.write_text(token_file(tokens, args.limits))
    port, admin = processes.free_port(), processes.free_port()
    base = write_url.removesuffix("/api/v1/write")
    sealgw = processes.run_sealgw(
        workdir, cleanup, "sealgw",
        sealgw_config(port, admin, base, token_path, args.gateway), admin,
    )
    url = f"http://127.0.0.1:{port}"
    end_s = end_ms / 1000
    b_path = "/api/v1/query_range?" + urlencode(range_form(B_QUERY, end_s, B_RANGE_S, B_STEP_S))
    a_form = urlencode(range_form(
        a_query(args.a_query, args.series, args.a_regex_bytes), end_s, args.a_range, args.a_step
    )).encode()
    a_form_path = workdir / "a-query.form"
    a_form_path.write_bytes(a_form)
    setup = Setup(
        url=url, admin=f"http://127.0.0.1:{admin}", tokens=tokens, b_path=b_path,
        a_form=a_form, a_form_path=str(a_form_path), push_body=push_body,
        servers={"sealgw": sealgw, "prometheus": prometheus},
    )
    _check(args, setup)
    return setup


def _check(args: argparse.Namespace, setup: Setup) -> None:
    """
    B's query answers its L{JOBS} series; A's costly query is admitted (a
    gateway whose bounds refuse it is measured with a cheaper one, which
    the options set); A's push is taken; C{/health} answers.
    """
    b = Client(setup.url, setup.tokens[TENANT_B])
    status, body = b.ask("GET", setup.b_path)
    b.close()
    if status != 200:
        raise BenchError(f"B's query was answered {status}: {body[:300]!r}")
    found = len(json.loads(body)["data"]["result"])
    if found != JOBS:
        raise BenchError(f"B's query answered {found} series, not {JOBS}: was the data "
                         "written?")
    a = Client(setup.url, setup.tokens[TENANT_A])
    began = time.perf_counter()
    status, body = a.ask("POST", "/api/v1/query_range", setup.a_form)
    took = time.perf_counter() - began
    a.close()
    if status != 200:
        raise BenchError(
            f"A's costly query ({len(setup.a_form):,} bytes of form) was answered {status}: "
            f"{body[:300]!r}; give a query this gateway admits (--a-query, --a-regex-bytes, "
            "--a-range, --a-step)"
        )
    print(f"A's costly query: {len(setup.a_form):,} bytes of form, answered in "
          f"{took * 1000:.0f} ms on its own", flush=True)
    try:
        preflight(f"{setup.url}/api/v1/push", setup.push_body, setup.tokens[TENANT_A])
    except LoadError as e:
        raise BenchError(f"A's push: {e}") from None
    health = Client(setup.admin, None)
    status, body = health.ask("GET", "/health")
    health.close()
    if status != 200:
        raise BenchError(f"/health answered {status}: {body[:300]!r}")


def _b_reads(setup: Setup, seconds: float) -> Latencies:
    client = Client(setup.url, setup.tokens[TENANT_B])
    try:
        return measure(lambda: client.ask("GET", setup.b_path)[0], seconds)
    finally:
        client.close()


def _cpu(setup: Setup) -> dict[str, float]:
    """
    CPU seconds used so far by sealgw, Prometheus, the finished wrk runs,
    this script (B's client, the /health sampler) and the whole machine.
    """
    used = cpu_snapshot(dict(setup.servers))
    own = resource.getrusage(resource.RUSAGE_SELF)
    used["bench"] = own.ru_utime + own.ru_stime
    return used


def _stage_cpu(setup: Setup, before: dict[str, float], seconds: float) -> dict[str, float]:
    """
    Cores busy over a stage: sealgw, Prometheus, wrk, this script, and
    everything else on the machine ("other": other people's work).
    """
    after = _cpu(setup)
    used = {name: after[name] - before[name] for name in after}
    machine = used.pop("machine")
    used["other"] = max(0.0, machine - sum(used.values()))
    return {name: round(value / seconds, 3) for name, value in used.items()}


def _quiet(args: argparse.Namespace, setup: Setup) -> dict[str, Any]:
    before, began = _cpu(setup), time.monotonic()
    b = _b_reads(setup, args.duration)
    return {"b": b, "cpu": _stage_cpu(setup, before, time.monotonic() - began)}


def _flood(args: argparse.Namespace, setup: Setup) -> dict[str, Any]:
    """
    A's pushes and reads under wrk for the whole stage, B measured in the
    middle of it (after a second for the flood to build up).
    """
    limits = args.limits
    push_rate = offered_rate(args.a_push_rate, limits)
    read_rate = offered_rate(args.a_read_rate, limits.get("reads") or {})
    wrk_seconds = math.ceil(args.duration) + 2
    before, began = _cpu(setup), time.monotonic()
    pushes = start_wrk(
        f"{setup.url}/api/v1/push", setup.push_body, setup.tokens[TENANT_A],
        duration=wrk_seconds, connections=args.a_push_connections, threads=1, watch={},
        count_statuses=True, delay_ms=pause_ms(push_rate, args.a_push_connections),
    )
    try:
        reads = start_wrk(
            f"{setup.url}/api/v1/query_range", setup.a_form_path, setup.tokens[TENANT_A],
            duration=wrk_seconds, connections=args.a_read_connections, threads=1, watch={},
            headers=FORM_HEADERS, count_statuses=True,
            delay_ms=pause_ms(read_rate, args.a_read_connections),
        )
    except LoadError:
        pushes.stop()
        raise
    try:
        time.sleep(1)
        b = _b_reads(setup, args.duration)
        a_pushes, a_reads = pushes.result(), reads.result()
    finally:
        pushes.stop()
        reads.stop()
    return {
        "b": b,
        "a_pushes": a_pushes,
        "a_reads": a_reads,
        "offered": {"pushes_per_second": push_rate, "reads_per_second": read_rate},
        "cpu": _stage_cpu(setup, before, time.monotonic() - began),
    }


def _health(args: argparse.Namespace, setup: Setup) -> dict[str, Any]:
    """
    C{/health} every --health-interval: for a quarter of the stage alone,
    then while A's costly query runs back to back on one connection (no
    faster than A's reads' C{requests_per_second}, so that the gateway
    runs the query rather than refusing it).
    """
    health = Client(setup.admin, None)
    read_rate = (args.limits.get("reads") or {}).get("requests_per_second")
    a_interval = 1 / read_rate if read_rate else 0.0

    def sample(seconds: float, stop: Optional[threading.Event] = None) -> Latencies:
        return measure(lambda: health.ask("GET", "/health")[0], seconds,
                       args.health_interval, stop)

    try:
        alone = sample(args.duration / 4)
        a = Client(setup.url, setup.tokens[TENANT_A])
        stop = threading.Event()
        seconds = args.duration * 3 / 4
        queries = in_background(lambda: measure(
            lambda: a.ask("POST", "/api/v1/query_range", setup.a_form)[0], seconds,
            a_interval, stop,
        ))
        try:
            during = sample(seconds)
        finally:
            stop.set()
            a_queries = queries()
            a.close()
    finally:
        health.close()
    return {"alone": alone, "during": during, "a_queries": a_queries}


def settings(args: argparse.Namespace, setup: Setup) -> dict[str, Any]:
    """
    What the run was asked to do, for the report.
    """
    return {
        "duration_s": args.duration,
        "series_per_tenant": args.series,
        "points_per_series": args.points,
        "b_query": B_QUERY,
        "b_range_s": B_RANGE_S,
        "b_step_s": B_STEP_S,
        "a_limits": args.limits,
        "a_query_form_bytes": len(setup.a_form),
        "a_query": args.a_query,
        "a_regex_bytes": args.a_regex_bytes,
        "a_range_s": args.a_range,
        "a_step_s": args.a_step,
        "a_push_batch": args.a_push_batch,
        "health_interval_s": args.health_interval,
        "gateway_config": args.gateway,
    }


if __name__ == "__main__":
    sys.exit(main())
