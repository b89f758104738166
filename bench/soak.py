"""
A soak: sealgw relaying remote write to an nginx sink at half the rate it
can reach, for minutes, with its resident memory sampled as it goes, to
show that memory stays flat (no leak) and within bounds.

    .venv/bin/python bench/soak.py [--minutes 10] [--batch 2000] [--workers 1]

Traffic goes to 127.0.0.1 only and stops by itself.  See
docs/benchmarks.rst.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Optional

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import payloads, processes  # noqa: E402
from bench.load import MARKER, preflight, run_wrk  # noqa: E402
from bench.run import Stopped, with_servers  # noqa: E402

HERE = Path(__file__).resolve().parent


def rss_mib(pid: int) -> dict[int, float]:
    """
    VmRSS of C{pid} and of every process under it (workers), in MiB.
    """
    found: dict[int, float] = {}
    todo = [pid]
    while todo:
        current = todo.pop()
        try:
            with open(f"/proc/{current}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        found[current] = int(line.split()[1]) / 1024
            with open(f"/proc/{current}/task/{current}/children") as f:
                todo.extend(int(child) for child in f.read().split())
        except (FileNotFoundError, ProcessLookupError):
            continue
    return found


def parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--batch", type=int, default=2000)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--every", type=float, default=15.0, help="seconds between samples")
    parser.add_argument("--json", type=Path)
    return parser.parse_args(argv)


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    token = secrets.token_hex(16)
    try:
        report = with_servers(
            lambda workdir, cleanup: run(args, workdir, cleanup, token),
            prefix="sealgw-soak-",
        )
    except Stopped as e:
        return e.status
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0 if report["failed"] == 0 else 1


def run(args: argparse.Namespace, workdir: Path, cleanup: ExitStack, token: str) -> Any:
    """
    Start the sink and sealgw, find sealgw's most, soak at half of it for
    C{args.minutes} and print resident memory as it goes; answer the
    report (C{failed} is 0 for a clean soak).
    """
    processes.check_twistd_plugin()
    body = payloads.write_bodies(str(workdir), (args.batch,))[args.batch]
    _, upstream_url = processes.start_sink(workdir, cleanup)
    sealgw, url = processes.start_sealgw(
        workdir, cleanup, upstream_url, token, workers=args.workers
    )
    preflight(url, body, token)
    flat_out = run_wrk(
        url, body, token, duration=5, connections=args.connections, threads=2,
        watch={"proxy": sealgw},
    )
    most = flat_out.requests_per_second
    target = most / 2
    # Each connection: one request, then a pause, at target / connections
    # requests a second.
    delay_ms = max(0, int(1000 * args.connections / target - flat_out.p50_ms))
    seconds = int(args.minutes * 60)
    print(f"sealgw at most {most:.0f} req/s ({args.batch} samples); soaking at about "
          f"{target:.0f} req/s ({delay_ms} ms between requests per connection) for "
          f"{seconds}s", flush=True)
    env = {
        **os.environ,
        "BENCH_BODY": body,
        "BENCH_TOKEN": token,
        "BENCH_POST_LUA": str(HERE / "post.lua"),
        "BENCH_DELAY_MS": str(delay_ms),
    }
    wrk = subprocess.Popen(
        ["wrk", "--threads=2", f"--connections={args.connections}", f"--duration={seconds}s",
         "--timeout=10s", f"--script={HERE / 'paced.lua'}", url],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )

    def stop_wrk() -> None:
        if wrk.poll() is None:
            wrk.kill()
            wrk.wait()

    cleanup.callback(stop_wrk)
    samples: list[dict[str, Any]] = []
    started = time.monotonic()
    print(f"{'t (s)':>7} {'RSS MiB per process':>40}", flush=True)
    while wrk.poll() is None:
        elapsed = time.monotonic() - started
        rss = rss_mib(sealgw.pid)
        samples.append({"t": round(elapsed, 1), "rss_mib": {str(k): round(v, 1) for k, v in rss.items()}})
        print(f"{elapsed:7.0f} {' '.join(f'{v:6.1f}' for v in rss.values()):>40}", flush=True)
        time.sleep(args.every)
    out, err = wrk.communicate()
    line = next((ln for ln in out.splitlines() if ln.startswith(MARKER)), None)
    result = json.loads(line[len(MARKER):]) if line else {}
    errors = result.get("errors", {})
    failed = sum(errors.values()) if errors else -1
    served = [s for s in samples if s["rss_mib"]]
    per_process = [max(s["rss_mib"].values()) for s in served]
    first, last = (served[0], served[-1]) if served else ({}, {})
    # The first minute is warm-up (pools, caches); growth is judged after.
    settled = [s for s in served if s["t"] >= 60] or served
    growth = (max(settled[-1]["rss_mib"].values()) - max(settled[0]["rss_mib"].values())
              if settled else 0.0)
    rate = result.get("requests", 0) / (result.get("duration_us", 1) / 1e6)
    print(f"\nrequests {result.get('requests', 0)} at {rate:.0f} req/s, failed {failed}; "
          f"largest process RSS {max(per_process, default=0):.1f} MiB; growth after the "
          f"first minute {growth:+.1f} MiB", flush=True)
    return {
        "max_requests_per_second": most,
        "soak_requests_per_second": rate,
        "failed": failed,
        "samples": samples,
        "first": first,
        "last": last,
        "max_rss_mib": max(per_process, default=0),
        "growth_after_first_minute_mib": growth,
    }


if __name__ == "__main__":
    sys.exit(main())
