"""
Measure sealgw's remote-write push throughput and added latency against a
direct connection to the same upstream and against nginx doing the same
bearer-token proxying, all in one run on this machine, and print the
ratios.  Absolute figures depend on the machine; the ratios are the point.

    /tmp/venv/bin/python bench/run.py [--duration 10] [--connections 8]
        [--threads 2] [--upstream prometheus|sink] [--json results.json]

See docs/benchmarks.rst for what is measured and how to read it.
"""

from __future__ import annotations

import argparse
import os
import platform
import secrets
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Optional, TypeVar

import attr

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    # Run as a script: the checkout's bench and sealgw packages.
    sys.path.insert(0, str(ROOT))

from bench import payloads, processes, profile  # noqa: E402
from bench.load import (  # noqa: E402
    LoadError,
    Result,
    add_load_options,
    check_load_options,
    merge,
    preflight,
    run_wrk,
)

TARGETS = ("direct", "nginx", "floor", "sealgw", "sealgw+labels")

#: The label the C{sealgw+labels} target adds to every series: its
#: upstream keeps tenants apart by it (C{tenancy: {label: tenant}}), as a
#: Prometheus shared by tenants does, so the route also judges every
#: series against the sample limits (docs/limits.rst).
TENANT_LABEL = "tenant"

#: The targets that are a proxy in front of the upstream, whose CPU is
#: what the samples-per-CPU-second figures divide by.
PROXIES = ("nginx", "floor", "sealgw", "sealgw+labels")


def parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_load_options(parser, duration_help="seconds of load per target and batch size "
                     "(default 10)")
    parser.add_argument("--latency-duration", type=int, default=4,
                        help="seconds of one-request-at-a-time per target and batch "
                        "size, for latency without queueing (default 4; 0 skips it)")
    parser.add_argument("--upstream", choices=("prometheus", "sink"), default="prometheus",
                        help="a real Prometheus (default) or an nginx that answers 204")
    parser.add_argument("--batch", type=int, action="append", dest="batches",
                        help="samples per request; repeat for several "
                        f"(default {' and '.join(map(str, payloads.BATCH_SIZES))})")
    parser.add_argument("--access-log", action="store_true",
                        help="keep sealgw's access log on (off by default, as nginx's is)")
    parser.add_argument("--workers", type=int, default=1,
                        help="sealgw's workers: setting, its worker processes (default 1)")
    parser.add_argument("--profile", type=Path, metavar="DIR",
                        help="sample sealgw with py-spy during its load runs and write the "
                        "stacks to DIR (skews that run's figures)")
    args = parser.parse_args(argv)
    check_load_options(parser, args)
    if args.profile and profile.find_py_spy() is None:
        parser.error("--profile needs py-spy (pip install py-spy)")
    return args


def _interrupt(signum: int, frame: Any) -> None:
    # SIGTERM tears down like Ctrl-C does.
    raise KeyboardInterrupt


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    batches = tuple(args.batches or payloads.BATCH_SIZES)
    token = secrets.token_hex(16)
    try:
        results = with_servers(
            lambda workdir, cleanup: _run(args, batches, workdir, cleanup, token),
            keep=args.keep,
        )
    except Stopped as e:
        return e.status

    report = _report(args, batches, results)
    if args.json:
        args.json.write_text(_dumps(report))
        print(f"results written to {args.json}")
    failed = report["failed_requests"]
    if failed:
        warn_failed(failed)
        return 1
    return 0


class Stopped(Exception):
    """
    L{with_servers} stopped early; C{status} is the exit status to give:
    2 when a server or wrk could not be run, 130 when interrupted.
    """

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


_T = TypeVar("_T")


def with_servers(
    measure: Callable[[Path, ExitStack], _T], *, keep: bool = False,
    prefix: str = "sealgw-bench-",
) -> _T:
    """
    Call C{measure} with a new temporary directory and an C{ExitStack} on
    which the servers it starts put their stop, and answer what it
    answers.  Every server is stopped however it ends; the directory is
    removed unless C{keep}, or unless a server or wrk could not be run
    (its configs and logs then explain why, and their path is printed).
    Ctrl-C and C{SIGTERM} raise L{Stopped}(130), a server or wrk that
    cannot be run L{Stopped}(2).
    """
    signal.signal(signal.SIGTERM, _interrupt)
    workdir = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        with ExitStack() as cleanup:
            result = measure(workdir, cleanup)
    except KeyboardInterrupt:
        print("\ninterrupted; every server was stopped", file=sys.stderr)
        raise Stopped(130) from None
    except (processes.StartError, LoadError) as e:
        # The configs and server logs are what explains the failure.
        keep = True
        print(f"\nbench: {e}", file=sys.stderr)
        print(f"(configs and logs kept in {workdir})", file=sys.stderr)
        raise Stopped(2) from None
    finally:
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)
    if keep:
        print(f"run directory kept: {workdir}")
    return result


def warn_failed(failed: int) -> None:
    print(f"\n!!! {failed} REQUEST(S) FAILED (non-2xx or socket errors): the "
          "figures above are NOT a valid measurement !!!", file=sys.stderr)


def _run(
    args: argparse.Namespace,
    batches: tuple[int, ...],
    workdir: Path,
    cleanup: ExitStack,
    token: str,
) -> dict[int, dict[str, dict[str, Result]]]:
    """
    Start everything, then for each batch size measure each target under
    load and then one request at a time, in interleaved rounds that are
    merged at the end.
    """
    processes.check_twistd_plugin()
    bodies = payloads.write_bodies(str(workdir), batches)
    if args.upstream == "prometheus":
        upstream, upstream_url = processes.start_prometheus(workdir, cleanup)
    else:
        upstream, upstream_url = processes.start_sink(workdir, cleanup)
    nginx, nginx_url = processes.start_nginx_proxy(workdir, cleanup, upstream_url, token)
    floor, floor_url = processes.start_floor(workdir, cleanup, upstream_url, token)
    sealgw, sealgw_url = processes.start_sealgw(
        workdir, cleanup, upstream_url, token, access_log=args.access_log,
        workers=args.workers,
    )
    labelled, labelled_url = processes.start_sealgw(
        workdir, cleanup, upstream_url, token, access_log=args.access_log,
        name="sealgw-labels", tenant_label=TENANT_LABEL, workers=args.workers,
    )
    targets = {
        "direct": Target(upstream_url),
        "nginx": Target(nginx_url, {"proxy": nginx}),
        "floor": Target(floor_url, {"proxy": floor}),
        "sealgw": Target(sealgw_url, {"proxy": sealgw}),
        "sealgw+labels": Target(labelled_url, {"proxy": labelled}),
    }
    print(f"upstream: {args.upstream}; {os.cpu_count()} CPUs; {plan(args)}")
    say_relabel_implementation()

    results: dict[int, dict[str, dict[str, Result]]] = {}
    for size in batches:
        results[size] = measure(
            {name: attr.evolve(t, body=bodies[size]) for name, t in targets.items()},
            token, args, upstream, f"{size} samples",
            profile_target=sealgw if args.profile else None,
        )
        print(_table(size, os.path.getsize(bodies[size]), results[size], args))
    return results


@attr.frozen
class Target:
    """
    What one row of a table measures: a URL, the body posted to it (a
    file) and the headers sent with it (None: remote write's), and the
    servers whose CPU is watched, by role (C{proxy}: what the
    samples-per-CPU-second figures divide by).
    """

    url: str
    watch: dict[str, processes.Server] = attr.field(factory=dict)
    body: str = ""
    headers: Optional[dict[str, str]] = None


def plan(args: argparse.Namespace) -> str:
    """
    What L{measure} does per target, in words.
    """
    load_slice, alone_slice = _slices(args)
    return (f"per target and batch size, {args.rounds} round(s) of {load_slice}s under load "
            f"({args.connections} connections)"
            + (f" and {alone_slice}s alone (1 connection)" if args.latency_duration > 0 else ""))


def _slices(args: argparse.Namespace) -> tuple[int, int]:
    return (max(1, round(args.duration / args.rounds)),
            max(1, round(args.latency_duration / args.rounds)))


def measure(
    targets: dict[str, Target],
    token: str,
    args: argparse.Namespace,
    upstream: processes.Server,
    what: str,
    profile_target: Optional[processes.Server] = None,
) -> dict[str, dict[str, Result]]:
    """
    Send each target its body once by hand (it must answer 2xx), then
    measure each one under load and then one request at a time (unless
    C{args.latency_duration} is 0), in C{args.rounds} interleaved rounds
    that are merged at the end.  Answers, per target, its C{load} and
    C{alone} results.

    @param what: names the measurement in the progress lines.
    @param profile_target: the server to sample with py-spy into
        C{args.profile} during the C{sealgw} target's load runs.
    """
    load_slice, alone_slice = _slices(args)
    for target in targets.values():
        preflight(target.url, target.body, token, target.headers)
    runs: dict[str, dict[str, list[Result]]] = {
        name: {"load": [], "alone": []} for name in targets
    }
    stacks: list[Path] = []
    for r in range(args.rounds):
        # Interleaved, and each round in a rotated order, so that a
        # change in the machine's other load falls on every target.
        turn = r % len(targets)
        order = list(targets)[turn:] + list(targets)[:turn]
        print(f"  {what}, round {r + 1}/{args.rounds}: {', '.join(order)}", flush=True)
        for name in order:
            target = targets[name]
            watch = {**target.watch, "upstream": upstream}
            profiler = None
            if profile_target is not None and name == "sealgw":
                args.profile.mkdir(parents=True, exist_ok=True)
                slug = what.replace(" ", "-")
                stacks.append(args.profile / f"sealgw-{slug}-round{r + 1}.txt")
                profiler = profile.start(profile_target.pid, load_slice, stacks[-1])
            try:
                runs[name]["load"].append(run_wrk(
                    target.url, target.body, token, duration=load_slice,
                    connections=args.connections, threads=args.threads, watch=watch,
                    headers=target.headers,
                ))
                if profiler is not None:
                    _, err = profiler.communicate(timeout=60)
                    if profiler.returncode:
                        print(f"  py-spy failed: {err.decode(errors='replace')}",
                              file=sys.stderr)
            finally:
                # However the run ends, py-spy does not outlive it.
                if profiler is not None and profiler.poll() is None:
                    profiler.kill()
                    profiler.wait()
            if args.latency_duration > 0:
                runs[name]["alone"].append(run_wrk(
                    target.url, target.body, token, duration=alone_slice, connections=1,
                    threads=1, watch=watch, headers=target.headers,
                ))
    stacks = [path for path in stacks if path.exists()]
    if stacks:
        print(f"\nsealgw under load, {what} per request, sampled by py-spy "
              f"({', '.join(map(str, stacks))}):\n{profile.hotspots(stacks)}")
    return {
        name: {phase: merge(rs) for phase, rs in phases.items() if rs}
        for name, phases in runs.items()
    }


def say_relabel_implementation() -> None:
    """
    Say which relabelling loop the sealgw+labels figures are of; the
    Python one is a different measurement, and says so loudly.
    """
    which = processes.relabel_implementation()
    if which == "c":
        print("label actions: the C extension")
    else:
        print(f"!!! label actions: the {which} loop, not the C extension: build it in the "
              "checkout (python setup.py build_ext --inplace) to measure what an install runs",
              file=sys.stderr)


# -- the report ------------------------------------------------------------


def _table(
    size: int, body_bytes: int, by_target: dict[str, dict[str, Result]],
    args: argparse.Namespace,
) -> str:
    """
    One batch size: a row per target, then the ratios.
    """
    alone = args.latency_duration > 0
    lines = [
        "",
        f"== {size} samples per request ({body_bytes / 1024:.1f} KiB snappy), "
        f"upstream {args.upstream} ==",
        f"{'':13} {'under load (' + str(args.connections) + ' connections)':^61}"
        + (f" {'alone (1 conn.)':^17}" if alone else ""),
        f"{'target':13} {'req/s':>8} {'samples/s':>10} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'failed':>6} {'CPU prx/up/wrk/other':>20}"
        + (f" {'p50 ms':>8} {'p99 ms':>8}" if alone else ""),
    ]
    for name, runs in by_target.items():
        load = runs["load"]
        cpu = "/".join(
            f"{load.cpu[k]:.2f}" if k in load.cpu else "-" for k in ("proxy", "upstream", "wrk", "other")
        )
        line = (
            f"{name:13} {load.requests_per_second:8.1f} "
            f"{load.requests_per_second * size:10.0f} {load.p50_ms:7.2f} {load.p99_ms:7.2f} "
            f"{load.failed:6d} {cpu:>20}"
        )
        if alone:
            line += f" {runs['alone'].p50_ms:8.2f} {runs['alone'].p99_ms:8.2f}"
        lines.append(line)

    r = _ratios(by_target)
    per_cpu = _samples_per_cpu_second(size, by_target)
    lines += [
        "",
        f"throughput  sealgw/direct {r['throughput']['sealgw/direct']:.3g}x   "
        f"sealgw/nginx {r['throughput']['sealgw/nginx']:.3g}x   "
        f"sealgw/floor {r['throughput']['sealgw/floor']:.3g}x   "
        f"(nginx/direct {r['throughput']['nginx/direct']:.3g}x)",
        "samples per proxy CPU-second  "
        + "   ".join(f"{name} {value / 1e6:.2f}M" for name, value in per_cpu.items()),
        f"{'added latency over direct, ms':30} "
        + " ".join(f"{name:>13}" for name in PROXIES)
        + f" {'sealgw/nginx':>13}",
    ]
    for key, added in r["added_latency_ms"].items():
        lines.append(
            f"  {key:28} "
            + " ".join(f"{added[name]:+13.2f}" for name in PROXIES)
            + f" {_ratio_text(added['sealgw'], added['nginx']):>13}"
        )
    return "\n".join(lines)


def _ratio_text(a: float, b: float) -> str:
    return f"{a / b:.3g}x" if b > 0.005 else "n/a"


def _ratios(by_target: dict[str, dict[str, Result]]) -> dict[str, Any]:
    """
    Throughput as ratios; latency as milliseconds added to the direct
    connection's, which is what a client behind the proxy pays.
    """
    rps = {name: runs["load"].requests_per_second for name, runs in by_target.items()}

    def ratio(a: str, b: str) -> float:
        return round(rps[a] / rps[b], 4) if rps[b] else 0.0

    added: dict[str, dict[str, float]] = {}
    for phase in ("load", "alone"):
        if phase not in by_target["direct"]:
            continue
        for pct in ("p50", "p99"):
            direct = getattr(by_target["direct"][phase], f"{pct}_ms")
            added[f"{pct} {'under load' if phase == 'load' else 'alone'}"] = {
                name: round(getattr(by_target[name][phase], f"{pct}_ms") - direct, 3)
                for name in PROXIES
            }
    return {
        "throughput": {
            "sealgw/direct": ratio("sealgw", "direct"),
            "sealgw/nginx": ratio("sealgw", "nginx"),
            "sealgw/floor": ratio("sealgw", "floor"),
            "sealgw+labels/sealgw": ratio("sealgw+labels", "sealgw"),
            "nginx/direct": ratio("nginx", "direct"),
        },
        "added_latency_ms": added,
    }


def _samples_per_cpu_second(size: int, by_target: dict[str, dict[str, Result]]) -> dict[str, float]:
    """
    Samples relayed per second of the proxy's own CPU, under load: what
    decides how many cores a platform pays for, whatever else runs on the
    machine.
    """
    out = {}
    for name in PROXIES:
        load = by_target[name]["load"]
        cpu = load.cpu.get("proxy", 0.0)
        if cpu > 0:
            out[name] = load.requests_per_second * size / cpu
    return out


def _report(
    args: argparse.Namespace,
    batches: tuple[int, ...],
    results: dict[int, dict[str, dict[str, Result]]],
) -> dict[str, Any]:
    return {
        "settings": {
            "upstream": args.upstream,
            "duration_s": args.duration,
            "latency_duration_s": args.latency_duration,
            "rounds": args.rounds,
            "connections": args.connections,
            "threads": args.threads,
            "sealgw_access_log": args.access_log,
            "sealgw_workers": args.workers,
        },
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "batches": {
            str(size): {
                "samples_per_request": size,
                "targets": {
                    name: {phase: r.as_json(size) for phase, r in runs.items()}
                    for name, runs in results[size].items()
                },
                "ratios": _ratios(results[size]),
                "samples_per_proxy_cpu_second": _samples_per_cpu_second(size, results[size]),
            }
            for size in batches
        },
        "failed_requests": sum(
            r.failed
            for by_target in results.values()
            for runs in by_target.values()
            for r in runs.values()
        ),
    }


def _dumps(report: dict[str, Any]) -> str:
    import json

    return json.dumps(report, indent=2) + "\n"


if __name__ == "__main__":
    sys.exit(main())
