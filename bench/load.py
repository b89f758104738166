"""
The load generator: one wrk run against one URL, and its figures.

Before wrk, one request is sent by hand and must be answered 2xx: a
target that refuses the body would otherwise be measured at the speed it
says no, which is usually flattering.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import attr

from bench.processes import ROOT, Server

SCRIPT = ROOT / "bench" / "post.lua"
MARKER = "BENCH-RESULT "


class LoadError(Exception):
    """
    The load could not be run or its output could not be read.
    """


@attr.frozen
class Result:
    """
    What one wrk run measured.

    @ivar non_2xx: answers wrk counted as failures (status 400 and above).
    @ivar socket_errors: connect, read, write errors and timeouts.
    @ivar cpu: CPU seconds per second of the run used by the proxy, the
        upstream and wrk itself (1.0 is one core busy): on a small machine
        they compete for the same cores.
    """

    connections: int
    duration: float
    requests: int
    non_2xx: int
    socket_errors: int
    p50_ms: float
    p99_ms: float
    mean_ms: float
    cpu: dict[str, float]

    @property
    def requests_per_second(self) -> float:
        return self.requests / self.duration if self.duration else 0.0

    @property
    def failed(self) -> int:
        return self.non_2xx + self.socket_errors

    def as_json(self, samples_per_request: int) -> dict[str, Any]:
        return {
            **attr.asdict(self),
            "requests_per_second": round(self.requests_per_second, 1),
            "samples_per_second": round(self.requests_per_second * samples_per_request),
        }


def preflight(url: str, body_path: str, token: str) -> int:
    """
    Send the body once; answer the status, raising unless it is 2xx.
    """
    request = urllib.request.Request(
        url,
        data=Path(body_path).read_bytes(),
        method="POST",
        headers={
            "Content-Type": "application/x-protobuf",
            "Content-Encoding": "snappy",
            "X-Prometheus-Remote-Write-Version": "0.1.0",
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
) -> Result:
    """
    Run wrk for C{duration} seconds and read the JSON line of post.lua.

    @param watch: servers whose CPU time is measured over the run.
    """
    threads = max(1, min(threads, connections))
    argv = [
        "wrk",
        f"--threads={threads}",
        f"--connections={connections}",
        f"--duration={duration}s",
        "--timeout=10s",
        "--latency",
        f"--script={SCRIPT}",
        url,
    ]
    env = {**os.environ, "BENCH_BODY": body_path, "BENCH_TOKEN": token}
    before = {name: server.cpu_seconds() for name, server in watch.items()}
    before["wrk"] = _children_cpu()
    try:
        done = subprocess.run(
            argv,
            env=env,
            capture_output=True,
            text=True,
            timeout=duration + 30,
            # Ctrl-C is for this script, which stops wrk itself.
            start_new_session=True,
        )
    except subprocess.TimeoutExpired:
        raise LoadError(f"wrk against {url} did not finish in {duration + 30}s") from None
    after = {name: server.cpu_seconds() for name, server in watch.items()}
    after["wrk"] = _children_cpu()
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith(MARKER)), None)
    if done.returncode != 0 or line is None:
        raise LoadError(f"wrk failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    data = json.loads(line[len(MARKER) :])
    seconds = data["duration_us"] / 1e6
    errors = data["errors"]
    latency = data["latency_us"]
    return Result(
        connections=connections,
        duration=seconds,
        requests=data["requests"],
        non_2xx=errors["status"],
        socket_errors=errors["connect"] + errors["read"] + errors["write"] + errors["timeout"],
        p50_ms=latency["p50"] / 1000,
        p99_ms=latency["p99"] / 1000,
        mean_ms=latency["mean"] / 1000,
        cpu={name: round((after[name] - before[name]) / seconds, 2) for name in after},
    )


def _children_cpu() -> float:
    # Children that have been waited for: the finished wrk runs (the
    # servers are still running and not counted).
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime
