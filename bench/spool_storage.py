"""
The spool's storage alone, in this process: its own segment format
(sealgw.spool._disk) against stdlib sqlite3 (WAL, synchronous=FULL, one
transaction per group commit, dead letters as a table), both fsyncing
for real, measured as CPU time per push (user + system, what the gateway
pays on its worker threads) and wall time per group.

    .venv/bin/python bench/spool.py --storage [--rounds 5] [--groups 400]
        [--group-size 4] [--batch 500] [--spool-dir DIR]

Each round runs both, alternately (the machine may be busy), on fresh
folders; the figures are the medians, and the ratio is sqlite's over the
segment format's.  A push's whole stay is counted: its write and fsync,
and its removal once delivered (a segment file deleted as a whole; rows
deleted in a transaction once a second's worth of groups is delivered,
as the cursor is saved).  Reading back is left out for both: while the
upstream keeps up, the forwarder takes a record from the write that
stored it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from sealgw.signals.push import Push
from sealgw.spool._disk import SpoolDirectory
from sealgw.spool._format import new_salt

#: Segments are closed at this size (as a 1 GiB spool's are).
SEGMENT_SIZE = 64 * 1024 * 1024


def pushes(body: bytes, count: int) -> list[Push]:
    return [
        Push(
            signal="remote_write",
            tenant="bench",
            body=body,
            content_type="application/x-protobuf",
            content_encoding="snappy",
            path="/api/v1/push",
            extra_headers={"X-Prometheus-Remote-Write-Version": "0.1.0"},
            received_at=time.time(),
        )
        for _ in range(count)
    ]


def run_segments(folder: Path, groups: list[list[Push]]) -> tuple[float, float]:
    """
    CPU and wall seconds to write every group (each with its fsync) and
    delete the segments once done.
    """
    spool = SpoolDirectory(str(folder))
    spool.lock()
    cpu, wall = time.process_time(), time.perf_counter()
    seq, salt, size, create = 1, new_salt(), 0, True
    done: list[int] = []
    for group in groups:
        if size >= SEGMENT_SIZE:
            done.append(seq)
            seq, salt, create = seq + 1, new_salt(), True
        size, _, _ = spool.append(seq, salt, group, create)
        create = False
    for finished in [*done, seq]:
        spool.delete(finished)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    spool.unlock()
    return cpu, wall


SCHEMA = """
CREATE TABLE IF NOT EXISTS records (seq INTEGER PRIMARY KEY, received_at REAL, push BLOB);
CREATE TABLE IF NOT EXISTS dead_letters (
    id INTEGER PRIMARY KEY, at TEXT, status INTEGER, reason TEXT, push BLOB
);
"""


def run_sqlite(folder: Path, groups: list[list[Push]], deletes_every: int) -> tuple[float, float]:
    """
    The same with sqlite3: one transaction per group (committed: WAL
    fsynced, synchronous=FULL), delivered rows deleted every
    C{deletes_every} groups.
    """
    folder.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(str(folder / "spool.sqlite"), isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.executescript(SCHEMA)
    cpu, wall = time.process_time(), time.perf_counter()
    delivered = 0
    for index, group in enumerate(groups, 1):
        db.execute("BEGIN")
        cursor = db.executemany(
            "INSERT INTO records (received_at, push) VALUES (?, ?)",
            [(p.received_at, p.to_bytes()) for p in group],
        )
        db.execute("COMMIT")
        delivered += len(group)
        if index % deletes_every == 0:
            db.execute("BEGIN")
            db.execute("DELETE FROM records WHERE seq <= ?", (delivered,))
            db.execute("COMMIT")
        del cursor
    db.execute("BEGIN")
    db.execute("DELETE FROM records")
    db.execute("COMMIT")
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    db.close()
    return cpu, wall


def measure(args: argparse.Namespace, body: bytes) -> dict[str, Any]:
    base = Path(tempfile.mkdtemp(prefix="spool-storage-", dir=args.spool_dir))
    # Groups of the same pushes for both; a second's worth of groups
    # between sqlite's deletes, at the measured group rate of ~1 ms.
    groups = [pushes(body, args.group_size) for _ in range(args.groups)]
    results: dict[str, list[tuple[float, float]]] = {"segments": [], "sqlite": []}
    try:
        for r in range(args.rounds):
            order = ["segments", "sqlite"] if r % 2 == 0 else ["sqlite", "segments"]
            for name in order:
                folder = base / f"{name}-{r}"
                if name == "segments":
                    results[name].append(run_segments(folder, groups))
                else:
                    results[name].append(run_sqlite(folder, groups, args.deletes_every))
                shutil.rmtree(folder, ignore_errors=True)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    count = args.groups * args.group_size
    report: dict[str, Any] = {
        "batch": args.batch,
        "body_bytes": len(body),
        "groups": args.groups,
        "group_size": args.group_size,
        "rounds": args.rounds,
        "filesystem_of": str(args.spool_dir or tempfile.gettempdir()),
    }
    for name, runs in results.items():
        report[name] = {
            "cpu_us_per_push": round(statistics.median(c for c, _ in runs) / count * 1e6, 1),
            "wall_ms_per_group": round(statistics.median(w for _, w in runs) / args.groups * 1e3, 3),
            "cpu_us_per_push_each_round": [round(c / count * 1e6, 1) for c, _ in runs],
        }
    report["cpu_ratio_sqlite_over_segments"] = round(
        report["sqlite"]["cpu_us_per_push"] / report["segments"]["cpu_us_per_push"], 3
    )
    report["per_round_ratios"] = [
        round(s[0] / g[0], 3) for s, g in zip(results["sqlite"], results["segments"], strict=True)
    ]
    return report


def print_report(report: dict[str, Any]) -> None:
    print(
        f"{report['groups']} groups of {report['group_size']} pushes "
        f"({report['body_bytes']} bytes each, {report['batch']} samples), "
        f"{report['rounds']} rounds, alternating"
    )
    print(f"{'storage':<12}{'CPU us/push':>13}{'wall ms/group':>15}  each round (CPU us/push)")
    for name in ("segments", "sqlite"):
        entry = report[name]
        print(
            f"{name:<12}{entry['cpu_us_per_push']:>13.1f}{entry['wall_ms_per_group']:>15.3f}  "
            f"{entry['cpu_us_per_push_each_round']}"
        )
    print(
        f"sqlite / segments, CPU per push: {report['cpu_ratio_sqlite_over_segments']:.2f} "
        f"(per round: {report['per_round_ratios']})"
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--storage", action="store_true",
                        help="measure the storage alone: segments against sqlite3")
    parser.add_argument("--groups", type=int, default=400,
                        help="with --storage: group commits per run")
    parser.add_argument("--group-size", type=int, default=4,
                        help="with --storage: pushes per group commit")
    parser.add_argument("--deletes-every", type=int, default=200,
                        help="with --storage: groups between sqlite's deletes")


def main(args: argparse.Namespace, body_path: str) -> int:
    with open(body_path, "rb") as f:
        body = f.read()
    os.sync()
    report = measure(args, body)
    print_report(report)
    return 0
