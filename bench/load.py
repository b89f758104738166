"""
The load generator: wrk runs against one URL, their figures, and rounds
merged into one result.

Before wrk, one request is sent by hand and must be answered 2xx: a
target that refuses the body would otherwise be measured at the speed it
says no, which is usually flattering.
"""

from __future__ import annotations

import argparse
import bisect
import json
import os
import resource
import subprocess
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Optional

import attr

from bench.processes import ROOT, Server

SCRIPT = ROOT / "bench" / "post.lua"
MARKER = "BENCH-RESULT "

#: post.lua's requests with every answer counted by status, and, with
#: C{BENCH_DELAY_MS}, paced as paced.lua paces them (see L{start_wrk}).
STATUS_SCRIPT = ROOT / "bench" / "statuses.lua"
STATUS_MARKER = "BENCH-STATUSES "

#: What a Prometheus remote-write sender sends with each body (besides
#: the bearer token, which every request gets): post.lua's default.
REMOTE_WRITE_HEADERS = {
    "Content-Type": "application/x-protobuf",
    "Content-Encoding": "snappy",
    "X-Prometheus-Remote-Write-Version": "0.1.0",
    "User-Agent": "sealgw-bench",
}
_BUSY_FIELDS = (0, 1, 2, 5, 6, 7)  # user nice system irq softirq steal


class LoadError(Exception):
    """
    The load could not be run or its output could not be read.
    """


@attr.frozen
class Result:
    """
    What one wrk run, or several merged, measured.

    @ivar non_2xx: answers wrk counted as failures (status 400 and above).
    @ivar socket_errors: connect, read, write errors and timeouts.
    @ivar cpu_seconds: CPU time used over the run by the proxy, the
        upstream, wrk, and everything else on the machine ("other": other
        people's work, which skews a run).
    @ivar quantiles_us: (latency at every 0.1 percent from 0 to 100,
        weight) for each run merged in, the weight being its request
        count.
    @ivar statuses: answers by HTTP status, when the run counted them
        (L{STATUS_SCRIPT}); empty otherwise.
    """

    connections: int
    duration: float
    requests: int
    non_2xx: int
    socket_errors: int
    cpu_seconds: dict[str, float]
    quantiles_us: tuple[tuple[tuple[float, ...], int], ...] = attr.field(repr=False)
    statuses: Mapping[int, int] = attr.field(factory=dict)

    @property
    def requests_per_second(self) -> float:
        return self.requests / self.duration if self.duration else 0.0

    @property
    def failed(self) -> int:
        return self.non_2xx + self.socket_errors

    @property
    def cpu(self) -> dict[str, float]:
        """
        CPU seconds per second of the run (1.0 is one core busy).
        """
        return {k: v / self.duration for k, v in self.cpu_seconds.items()}

    def percentile_ms(self, p: float) -> float:
        """
        The latency under which C{p} percent of the requests finished, over
        every merged run: each run's quantiles stand for equal shares of
        its requests.
        """
        points = sorted(
            (value, weight / len(quantiles))
            for quantiles, weight in self.quantiles_us
            for value in quantiles
        )
        if not points:
            return 0.0
        cumulative, total = [], 0.0
        for _, weight in points:
            total += weight
            cumulative.append(total)
        index = bisect.bisect_left(cumulative, total * p / 100)
        return points[min(index, len(points) - 1)][0] / 1000

    @property
    def p50_ms(self) -> float:
        return self.percentile_ms(50)

    @property
    def p99_ms(self) -> float:
        return self.percentile_ms(99)

    def as_json(self, samples_per_request: int) -> dict[str, Any]:
        return {
            "connections": self.connections,
            "duration_s": round(self.duration, 3),
            "requests": self.requests,
            "requests_per_second": round(self.requests_per_second, 1),
            "samples_per_second": round(self.requests_per_second * samples_per_request),
            "non_2xx": self.non_2xx,
            "socket_errors": self.socket_errors,
            "latency_ms": {
                "p50": round(self.p50_ms, 3),
                "p90": round(self.percentile_ms(90), 3),
                "p99": round(self.p99_ms, 3),
                "max": round(self.percentile_ms(100), 3),
            },
            "cpu_cores_busy": {k: round(v, 3) for k, v in self.cpu.items()},
        }


def merge(results: Sequence[Result]) -> Result:
    """
    Rounds of the same measurement as one: counts and times added up,
    latency distributions pooled.
    """
    names = {name for r in results for name in r.cpu_seconds}
    return Result(
        connections=results[0].connections,
        duration=sum(r.duration for r in results),
        requests=sum(r.requests for r in results),
        non_2xx=sum(r.non_2xx for r in results),
        socket_errors=sum(r.socket_errors for r in results),
        cpu_seconds={n: sum(r.cpu_seconds.get(n, 0.0) for r in results) for n in names},
        quantiles_us=tuple(q for r in results for q in r.quantiles_us),
        statuses={
            status: sum(r.statuses.get(status, 0) for r in results)
            for status in sorted({s for r in results for s in r.statuses})
        },
    )


def preflight(
    url: str, body_path: str, token: str, headers: Optional[Mapping[str, str]] = None
) -> int:
    """
    Send the body once, with C{headers} (by default L{REMOTE_WRITE_HEADERS})
    and the bearer token; answer the status, raising unless it is 2xx.
    """
    request = urllib.request.Request(
        url,
        data=Path(body_path).read_bytes(),
        method="POST",
        headers={
            **(REMOTE_WRITE_HEADERS if headers is None else headers),
            "Authorization": f"Bearer {token}",
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return int(response.status)
    except urllib.error.HTTPError as e:
        detail = e.read(500).decode("utf-8", "replace")
        raise LoadError(f"{url} answered {e.code} to the benchmark body: {detail}") from None
    except OSError as e:
        raise LoadError(f"{url} could not be reached: {e}") from None


def run_wrk(
    url: str,
    body_path: str,
    token: str,
    *,
    duration: int,
    connections: int,
    threads: int,
    watch: dict[str, Server],
    headers: Optional[Mapping[str, str]] = None,
) -> Result:
    """
    Run wrk for C{duration} seconds and read the JSON line of post.lua.

    @param watch: servers whose CPU time is measured over the run.
    @param headers: sent with every request besides the bearer token (and
        the C{Host} and C{Content-Length} wrk sends); by default
        L{REMOTE_WRITE_HEADERS}.
    """
    return start_wrk(
        url, body_path, token, duration=duration, connections=connections,
        threads=threads, watch=watch, headers=headers,
    ).result()


def start_wrk(
    url: str,
    body_path: str,
    token: str,
    *,
    duration: int,
    connections: int,
    threads: int,
    watch: dict[str, Server],
    headers: Optional[Mapping[str, str]] = None,
    count_statuses: bool = False,
    delay_ms: int = 0,
) -> RunningWrk:
    """
    Start wrk as L{run_wrk} runs it, without waiting for it: the caller
    measures something else meanwhile, then asks the L{RunningWrk} for
    its L{Result}.

    @param count_statuses: count every answer by status (L{STATUS_SCRIPT};
        its C{response} callback takes wrk off its fastest path, so the
        push benchmarks do without).
    @param delay_ms: with C{count_statuses}, each connection waits this
        long before each request, which caps its rate.
    """
    if delay_ms and not count_statuses:
        raise ValueError("delay_ms is only taken with count_statuses")
    threads = max(1, min(threads, connections))
    argv = [
        "wrk",
        f"--threads={threads}",
        f"--connections={connections}",
        f"--duration={duration}s",
        "--timeout=10s",
        f"--script={STATUS_SCRIPT if count_statuses else SCRIPT}",
        url,
    ]
    env = {
        **os.environ,
        "BENCH_BODY": body_path,
        "BENCH_TOKEN": token,
        "BENCH_HEADERS": wrk_headers(REMOTE_WRITE_HEADERS if headers is None else headers),
        "BENCH_POST_LUA": str(SCRIPT),
        "BENCH_DELAY_MS": str(delay_ms),
    }
    before = cpu_snapshot(watch)
    try:
        process = subprocess.Popen(
            argv,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            # Ctrl-C is for this script, which stops wrk itself.
            start_new_session=True,
        )
    except OSError as e:
        raise LoadError(f"wrk could not be run: {e}") from None
    return RunningWrk(process, url, duration, connections, watch, before)


@attr.frozen
class RunningWrk:
    """
    A wrk run under way (L{start_wrk}); L{result} waits for its end.
    """

    process: subprocess.Popen = attr.field(repr=False)
    url: str
    duration: int
    connections: int
    watch: dict[str, Server] = attr.field(repr=False)
    before: dict[str, float] = attr.field(repr=False)

    def result(self) -> Result:
        """
        Wait for wrk (at most its duration and 30 s more, after which it
        is killed) and read its figures.
        """
        limit = self.duration + 30
        try:
            stdout, stderr = self.process.communicate(timeout=limit)
        except subprocess.TimeoutExpired:
            self.stop()
            raise LoadError(f"wrk against {self.url} did not finish in {limit}s") from None
        after = cpu_snapshot(self.watch)
        line = next((ln for ln in stdout.splitlines() if ln.startswith(MARKER)), None)
        if self.process.returncode != 0 or line is None:
            raise LoadError(f"wrk failed ({self.process.returncode}):\n{stdout}\n{stderr}")
        data = json.loads(line[len(MARKER) :])
        errors = data["errors"]
        used = {name: after[name] - self.before[name] for name in after}
        machine = used.pop("machine")
        used["other"] = max(0.0, machine - sum(used.values()))
        return Result(
            connections=self.connections,
            duration=data["duration_us"] / 1e6,
            requests=data["requests"],
            non_2xx=errors["status"],
            socket_errors=(
                errors["connect"] + errors["read"] + errors["write"] + errors["timeout"]
            ),
            cpu_seconds=used,
            quantiles_us=((tuple(data["latency_us"]["quantiles"]), data["requests"]),),
            statuses=read_statuses(stdout),
        )

    def stop(self) -> None:
        """
        Kill wrk if it still runs (the run is being given up).
        """
        if self.process.poll() is None:
            self.process.kill()
            self.process.communicate()


def read_statuses(stdout: str) -> dict[int, int]:
    """
    The answers by status that L{STATUS_SCRIPT} printed, from wrk's
    output; empty when it printed none (post.lua does not count them).
    """
    line = next((ln for ln in stdout.splitlines() if ln.startswith(STATUS_MARKER)), None)
    if line is None:
        return {}
    try:
        counted = {int(k): int(v) for k, v in json.loads(line[len(STATUS_MARKER) :]).items()}
    except (ValueError, AttributeError) as e:
        raise LoadError(f"wrk's status counts cannot be read ({e}): {line[:200]}") from None
    return dict(sorted(counted.items()))


def wrk_headers(headers: Mapping[str, str]) -> str:
    """
    C{headers} as post.lua reads them from C{BENCH_HEADERS}: one
    C{Name: value} a line.
    """
    for name, value in headers.items():
        if "\n" in name + value or ":" in name:
            raise ValueError(f"header {name!r} cannot be passed to post.lua")
    return "".join(f"{name}: {value}\n" for name, value in headers.items())


def cpu_snapshot(watch: dict[str, Server]) -> dict[str, float]:
    """
    CPU seconds used so far by each watched server, by the finished wrk
    runs (children that have been waited for; the servers have not), and
    by the whole machine.
    """
    used = {name: server.cpu_seconds() for name, server in watch.items()}
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    used["wrk"] = children.ru_utime + children.ru_stime
    with open("/proc/stat") as f:
        fields = f.readline().split()[1:]
    ticks = os.sysconf("SC_CLK_TCK")
    used["machine"] = sum(int(fields[i]) for i in _BUSY_FIELDS) / ticks
    return used


def add_load_options(parser: argparse.ArgumentParser, *, duration_help: str) -> None:
    """
    The options every wrk-driven bench takes: C{--duration}, C{--rounds},
    C{--connections}, C{--threads}, C{--json} and C{--keep}.
    """
    parser.add_argument("--duration", type=int, default=10, help=duration_help)
    parser.add_argument("--rounds", type=int, default=2,
                        help="split each measurement into this many interleaved rounds "
                        "(default 2)")
    parser.add_argument("--connections", type=int, default=8,
                        help="wrk connections under load (default 8)")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads (default 2)")
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    parser.add_argument("--keep", action="store_true",
                        help="keep the run's directory (configs, logs) for inspection")


def check_load_options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """
    Refuse a duration, a round count or a wrk setting below 1.
    """
    if min(args.duration, args.connections, args.threads, args.rounds) < 1:
        parser.error("--duration, --connections, --threads and --rounds must be at least 1")
