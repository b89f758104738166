"""
Every push figure in one run, one stage after the other, each with its
own servers (stopped before the next stage starts), all against the nginx
sink:

1. bench/run.py's tables: sealgw vs nginx vs direct vs the floor, 500-
   and 2,000-sample batches, pass-through and with a label added;
2. 1 vs 2 workers: sealgw and sealgw+labels at 2,000 samples, each with
   ``workers: 1`` and ``workers: 2``, and the ratios;
3. bench/seal.py's table: seal pushes per metric type, next to the
   remote-write pass-through on the same sealgw;
4. bench/soak.py: half of sealgw's most for ``--soak-minutes``, its RSS
   over time and its growth;

then a summary of the headline figures.

    .venv/bin/python bench/all.py [--duration 10] [--latency-duration 4]
        [--rounds 2] [--soak-minutes 2] [--skip STAGE] [--json FILE] [--keep]

About 7 minutes with the defaults; ``--soak-minutes 10`` for the
documented soak.  See docs/benchmarks.rst.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import sys
from pathlib import Path
from typing import Any, Optional

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    # Run as a script: the checkout's bench and sealgw packages.
    sys.path.insert(0, str(ROOT))

from bench import payloads, processes, run, seal, soak  # noqa: E402
from bench.load import Result, add_load_options, check_load_options  # noqa: E402
from bench.run import Stopped, Target, measure, warn_failed, with_servers  # noqa: E402

STAGES = ("main", "workers", "seal", "soak")
WORKERS_BATCH = 2000


def parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_load_options(parser, duration_help="seconds of load per target (and batch size, and "
                     "metric type) in stages 1 to 3 (default 10)")
    parser.add_argument("--latency-duration", type=int, default=4,
                        help="seconds of one-request-at-a-time per target in stages 1 and 2 "
                        "(default 4; 0 skips it)")
    parser.add_argument("--soak-minutes", type=float, default=2.0,
                        help="length of the soak (default 2; 10 for the documented figures)")
    parser.add_argument("--skip", action="append", default=[], choices=STAGES,
                        help="leave a stage out; repeat for several")
    args = parser.parse_args(argv)
    check_load_options(parser, args)
    if args.latency_duration < 0 or args.soak_minutes <= 0:
        parser.error("--latency-duration must be 0 or more and --soak-minutes more than 0")
    return args


def _common(args: argparse.Namespace) -> list[str]:
    return [
        "--duration", str(args.duration), "--rounds", str(args.rounds),
        "--connections", str(args.connections), "--threads", str(args.threads),
    ]


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    token = secrets.token_hex(16)
    report: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
    }
    stages = [stage for stage in STAGES if stage not in args.skip]
    try:
        for number, stage in enumerate(stages, 1):
            print(f"\n######## {number}/{len(stages)}: {TITLES[stage]} ########", flush=True)
            report[stage] = STAGE_RUNS[stage](args, token)
    except Stopped as e:
        return e.status
    summary_lines = summary(report)
    print("\n######## summary ########\n" + "\n".join(summary_lines))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"results written to {args.json}")
    failed = sum(
        report[stage]["failed_requests"] for stage in ("main", "workers", "seal")
        if stage in report
    )
    soak_failed = report["soak"]["failed"] if "soak" in report else 0
    if failed or soak_failed:
        warn_failed(failed + abs(soak_failed))
        return 1
    return 0


# -- the stages --------------------------------------------------------------


def main_tables(args: argparse.Namespace, token: str) -> dict[str, Any]:
    """
    bench/run.py against the sink, both batch sizes.
    """
    run_args = run.parse_args(
        ["--upstream", "sink", "--latency-duration", str(args.latency_duration),
         *_common(args)]
    )
    batches = tuple(payloads.BATCH_SIZES)
    results = with_servers(
        lambda workdir, cleanup: run._run(run_args, batches, workdir, cleanup, token),
        keep=args.keep,
    )
    return run._report(run_args, batches, results)


#: Stage 2's targets: (name, the tenant label added, workers).
WORKER_TARGETS = (
    ("sealgw w1", None, 1),
    ("sealgw w2", None, 2),
    ("sealgw+labels w1", run.TENANT_LABEL, 1),
    ("sealgw+labels w2", run.TENANT_LABEL, 2),
)


def workers(args: argparse.Namespace, token: str) -> dict[str, Any]:
    """
    sealgw and sealgw+labels with one and with two workers, 2,000-sample
    batches, interleaved like bench/run.py's targets.
    """
    run_args = run.parse_args(["--latency-duration", str(args.latency_duration), *_common(args)])

    def go(workdir: Path, cleanup: Any) -> dict[str, dict[str, Result]]:
        processes.check_twistd_plugin()
        run.say_relabel_implementation()
        body = payloads.write_bodies(str(workdir), (WORKERS_BATCH,))[WORKERS_BATCH]
        upstream, upstream_url = processes.start_sink(workdir, cleanup)
        targets = {}
        for name, tenant_label, count in WORKER_TARGETS:
            server, url = processes.start_sealgw(
                workdir, cleanup, upstream_url, token, name=name.replace(" ", "-"),
                tenant_label=tenant_label, workers=count,
            )
            targets[name] = Target(url, {"proxy": server}, body)
        print(f"upstream: sink; {os.cpu_count()} CPUs; {run.plan(run_args)}", flush=True)
        return measure(targets, token, run_args, upstream, f"{WORKERS_BATCH} samples")

    results = with_servers(go, keep=args.keep)
    report = {
        "samples_per_request": WORKERS_BATCH,
        "targets": {
            name: {
                **{phase: r.as_json(WORKERS_BATCH) for phase, r in runs.items()},
                "samples_per_proxy_cpu_second": seal.per_cpu_second(WORKERS_BATCH, runs["load"]),
            }
            for name, runs in results.items()
        },
        "two_workers_over_one": {
            base: _rps_ratio(results, f"{base} w2", f"{base} w1")
            for base in ("sealgw", "sealgw+labels")
        },
        "failed_requests": sum(r.failed for runs in results.values() for r in runs.values()),
    }
    print(_workers_table(results, args))
    return report


def _rps_ratio(results: dict[str, dict[str, Result]], a: str, b: str) -> float:
    over = results[b]["load"].requests_per_second
    return round(results[a]["load"].requests_per_second / over, 3) if over else 0.0


def _workers_table(results: dict[str, dict[str, Result]], args: argparse.Namespace) -> str:
    alone = args.latency_duration > 0
    lines = [
        "",
        f"== 1 vs 2 workers, {WORKERS_BATCH} samples per request, upstream sink ==",
        f"{'target':17} {'req/s':>8} {'samples/s':>10} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'failed':>6} {'CPU sealgw':>10} {'samples/CPU-s':>13}"
        + (f" {'alone p50':>9}" if alone else ""),
    ]
    for name, runs in results.items():
        load = runs["load"]
        line = (
            f"{name:17} {load.requests_per_second:8.1f} "
            f"{load.requests_per_second * WORKERS_BATCH:10.0f} {load.p50_ms:7.2f} "
            f"{load.p99_ms:7.2f} {load.failed:6d} {load.cpu.get('proxy', 0.0):10.2f} "
            f"{seal.per_cpu_second(WORKERS_BATCH, load) / 1e6:12.2f}M"
        )
        if alone:
            line += f" {runs['alone'].p50_ms:9.2f}"
        lines.append(line)
    lines += [
        "",
        "2 workers / 1 worker, req/s:  "
        + "   ".join(f"{base} {_rps_ratio(results, f'{base} w2', f'{base} w1'):.2f}x"
                     for base in ("sealgw", "sealgw+labels")),
    ]
    return "\n".join(lines)


def seal_pushes(args: argparse.Namespace, token: str) -> dict[str, Any]:
    """
    bench/seal.py: every metric type.
    """
    seal_args = seal.parse_args(_common(args))
    return with_servers(
        lambda workdir, cleanup: seal.run(seal_args, workdir, cleanup, token),
        keep=args.keep,
    )


def soak_run(args: argparse.Namespace, token: str) -> dict[str, Any]:
    """
    bench/soak.py: 2,000-sample batches, one process.
    """
    soak_args = soak.parse_args(
        ["--minutes", str(args.soak_minutes), "--connections", str(args.connections),
         # Eight or more RSS readings however short the soak.
         "--every", str(min(15.0, args.soak_minutes * 60 / 8))]
    )
    report: dict[str, Any] = with_servers(
        lambda workdir, cleanup: soak.run(soak_args, workdir, cleanup, token),
        keep=args.keep, prefix="sealgw-soak-",
    )
    report["minutes"] = args.soak_minutes
    return report


TITLES = {
    "main": "sealgw vs nginx vs direct vs floor (bench/run.py --upstream sink)",
    "workers": f"1 vs 2 workers, {WORKERS_BATCH} samples",
    "seal": "seal pushes per metric type (bench/seal.py)",
    "soak": "soak: sealgw's RSS over time (bench/soak.py)",
}
STAGE_RUNS = {"main": main_tables, "workers": workers, "seal": seal_pushes, "soak": soak_run}


# -- the summary -------------------------------------------------------------


def summary(report: dict[str, Any]) -> list[str]:
    """
    The headline figures of every stage that ran, one line each.
    """
    lines = []
    if "main" in report:
        for size, batch in report["main"]["batches"].items():
            per_cpu = batch["samples_per_proxy_cpu_second"]
            ratios = batch["ratios"]["throughput"]
            lines.append(
                f"{size:>4} samples, per proxy CPU-second: "
                + ", ".join(f"{name} {value / 1e6:.2f}M" for name, value in per_cpu.items())
                + f"; sealgw/nginx {ratios['sealgw/nginx']:.3g}x, "
                f"sealgw/floor {ratios['sealgw/floor']:.3g}x"
            )
            added = batch["ratios"]["added_latency_ms"].get("p50 alone")
            if added:
                lines.append(f"{'':4}  added p50, one request alone: "
                             + ", ".join(f"{k} {v:+.2f} ms" for k, v in added.items()))
    if "workers" in report:
        ratios = report["workers"]["two_workers_over_one"]
        lines.append(f"2 workers / 1, {WORKERS_BATCH} samples: "
                     + ", ".join(f"{k} {v:.2f}x" for k, v in ratios.items()))
    if "seal" in report:
        seal_report = report["seal"]
        rw = seal_report["remote_write_pass_through"]["samples_per_sealgw_cpu_second"]
        lines.append(
            "seal pushes, samples per sealgw CPU-second: "
            + ", ".join(f"{kind} {t['samples_per_sealgw_cpu_second'] / 1e6:.3f}M"
                        for kind, t in seal_report["types"].items())
            + f" (remote-write pass-through {rw / 1e6:.2f}M)"
        )
    if "soak" in report:
        s = report["soak"]
        after = "after the first minute" if s["minutes"] > 1 else "over the soak"
        lines.append(
            f"soak, {s['minutes']:g} min at {s['soak_requests_per_second']:.0f} req/s: largest "
            f"process RSS {s['max_rss_mib']:.1f} MiB, growth {after} "
            f"{s['growth_after_first_minute_mib']:+.1f} MiB, failed {s['failed']}"
        )
    return lines


if __name__ == "__main__":
    sys.exit(main())
