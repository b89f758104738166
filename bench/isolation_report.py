"""
The figures of bench/isolation.py: tenant B's latency while A floods over
its quiet figure and the goal it is judged against, A's answers by class,
C{/health}'s, and the tables a person reads.
"""

from __future__ import annotations

import json
import os
import platform
from typing import Any, Optional

from bench.clients import Latencies
from bench.load import Result
from bench.query import percentile

#: The goal: B's latency under A's flood within this factor of quiet.
GOAL_RATIO = 2.0


def ratios(quiet: Latencies, flooded: Latencies) -> dict[str, Optional[float]]:
    """
    B's latency under the flood over its quiet figure, per quantile.
    """
    out: dict[str, Optional[float]] = {}
    for p in (50, 90, 99):
        if not quiet.ms or not flooded.ms:
            out[f"p{p}"] = None
            continue
        base = percentile(list(quiet.ms), p)
        out[f"p{p}"] = round(percentile(list(flooded.ms), p) / base, 3) if base else None
    return out


def answered(result: Result) -> dict[str, int]:
    """
    A wrk run's answers in the classes the isolation work speaks of.
    """
    counts = {"2xx": 0, "400": 0, "429": 0, "5xx": 0, "other": 0}
    for status, n in result.statuses.items():
        if status // 100 == 2:
            counts["2xx"] += n
        elif status in (400, 429):
            counts[str(status)] += n
        elif status // 100 == 5:
            counts["5xx"] += n
        else:
            counts["other"] += n
    counts["socket_errors"] = result.socket_errors
    return counts


def report(settings: dict[str, Any], stages: dict[str, Any]) -> dict[str, Any]:
    """
    Every figure of a run, as printed by L{table} and written as JSON:
    C{settings} (what was asked) and the C{stages}' measurements, with
    what keeps the figures from standing listed under C{invalid}.
    """
    quiet, flood, health = stages["quiet"], stages["flood"], stages["health"]
    b_ratios = ratios(quiet["b"], flood["b"])
    invalid = []
    if quiet["b"].failed or flood["b"].failed:
        invalid.append(f"B's reads failed ({quiet['b'].failed} quiet, "
                       f"{flood['b'].failed} during the flood)")
    if health["alone"].failed or health["during"].failed:
        invalid.append("/health did not answer 200 every time")
    if not health["a_queries"].statuses.get(200):
        invalid.append("A's costly query was never answered 200 in the health stage")

    def load_json(result: Result, offered: float) -> dict[str, Any]:
        counts = answered(result)
        return {
            "connections": result.connections,
            "offered_per_second": offered or "flat out",
            "requests": result.requests,
            "requests_per_second": round(result.requests_per_second, 1),
            "answered": counts,
            "2xx_per_second": (
                round(counts["2xx"] / result.duration, 1) if result.duration else 0.0
            ),
        }

    return {
        "settings": settings,
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "load_average": [round(x, 2) for x in os.getloadavg()],
        },
        "b_reads": {
            "quiet": {**quiet["b"].summary(), "cpu_cores_busy": quiet["cpu"]},
            "a_floods": {**flood["b"].summary(), "cpu_cores_busy": flood["cpu"]},
            "ratio_to_quiet": b_ratios,
            "goal_ratio": GOAL_RATIO,
            "goal_met": {p: (r is not None and r <= GOAL_RATIO) for p, r in b_ratios.items()},
        },
        "a_flood": {
            "pushes": load_json(flood["a_pushes"], flood["offered"]["pushes_per_second"]),
            "reads": load_json(flood["a_reads"], flood["offered"]["reads_per_second"]),
        },
        "health": {
            "alone": health["alone"].summary(),
            "during_a_query": health["during"].summary(),
            "a_query": health["a_queries"].summary(),
        },
        "invalid": invalid,
    }


def table(report: dict[str, Any]) -> str:
    """
    The report as the tables a person reads.
    """
    s = report["settings"]
    b = report["b_reads"]
    lines = [
        "",
        f"== tenant B: {s['b_query']} over {s['b_range_s'] // 60} min, step "
        f"{s['b_step_s']}s, one at a time ==",
        f"{'stage':10} {'requests':>8} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} "
        f"{'max ms':>8} {'failed':>6}  cores sealgw/prom/wrk/bench/other",
    ]
    for name, key in (("quiet", "quiet"), ("A floods", "a_floods")):
        row = b[key]
        failed = sum(v for k, v in row["statuses"].items() if not k.startswith("2"))
        cpu = row["cpu_cores_busy"]
        lines.append(
            f"{name:10} {row['requests']:>8} {row.get('p50_ms', 0):8.2f} "
            f"{row.get('p90_ms', 0):8.2f} {row.get('p99_ms', 0):8.2f} "
            f"{row.get('max_ms', 0):8.2f} {failed:>6}  "
            + "/".join(f"{cpu.get(k, 0):.2f}"
                       for k in ("sealgw", "prometheus", "wrk", "bench", "other"))
        )
    lines.append(
        f"x quiet    {'':>8} "
        + " ".join(_ratio(b["ratio_to_quiet"][p]) for p in ("p50", "p90", "p99"))
    )
    met = [p for p, ok in b["goal_met"].items() if ok]
    missed = [p for p, ok in b["goal_met"].items() if not ok]
    lines.append(
        f"goal (within {b['goal_ratio']:g}x quiet): "
        + (f"met at {', '.join(met)}" if met else "")
        + ("; " if met and missed else "")
        + (f"NOT met at {', '.join(missed)}" if missed else "")
    )
    lines += [
        "",
        f"== tenant A during the flood, limits {json.dumps(s['a_limits'])} ==",
        f"{'load':7} {'conn.':>5} {'offered/s':>9} {'sent':>7} {'sent/s':>7} {'2xx':>6} "
        f"{'2xx/s':>6} {'400':>6} {'429':>6} {'5xx':>5} {'other':>5} {'sock.err':>8}",
    ]
    for name, row in report["a_flood"].items():
        offered = row["offered_per_second"]
        offered = offered if isinstance(offered, str) else f"{offered:g}"
        a = row["answered"]
        lines.append(
            f"{name:7} {row['connections']:>5} {offered:>9} {row['requests']:>7} "
            f"{row['requests_per_second']:>7.1f} {a['2xx']:>6} {row['2xx_per_second']:>6.1f} "
            f"{a['400']:>6} {a['429']:>6} {a['5xx']:>5} {a['other']:>5} "
            f"{a['socket_errors']:>8}"
        )
    h = report["health"]
    lines += [
        "",
        f"== /health on the admin listener, every {s['health_interval_s'] * 1000:g} ms ==",
        f"{'while':22} {'samples':>8} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}",
    ]
    for name, key in (("nothing else runs", "alone"), ("A's costly query runs", "during_a_query")):
        row = h[key]
        lines.append(f"{name:22} {row['requests']:>8} {row.get('p50_ms', 0):8.2f} "
                     f"{row.get('p99_ms', 0):8.2f} {row.get('max_ms', 0):8.2f}")
    q = h["a_query"]
    lines.append(
        f"A's costly query ({s['a_query_form_bytes']:,} bytes of form, {s['a_range_s']:g}s "
        f"range, step {s['a_step_s']:g}s): {q['requests']} asked back to back, p50 "
        f"{q.get('p50_ms', 0):.0f} ms, max {q.get('max_ms', 0):.0f} ms, answers "
        f"{q['statuses']}"
    )
    return "\n".join(lines)


def _ratio(value: Optional[float]) -> str:
    return f"{value:7.2f}x" if value is not None else f"{'n/a':>8}"
