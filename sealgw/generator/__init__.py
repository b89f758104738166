"""
The sample generator: pushes made-up metrics to a gateway, as seal's
metrics generator does, for demos and smoke tests::

    python -m sealgw.generator --url http://127.0.0.1:8080 --token-file token

Only argument parsing lives here, so that C{sealgw generate} costs the
other commands nothing; the work is in L{sealgw.generator._run}.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Optional

DEFAULT_URL = "http://127.0.0.1:8080"
DEFAULT_INTERVAL = 5.0
DEFAULT_JOB = "sealgw-generator"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """
    The generator's options, on C{parser} (its own, or C{sealgw generate}).
    """
    parser.add_argument(
        "--url",
        default=os.environ.get("SEALGW_URL", DEFAULT_URL),
        help=f"the gateway (default: $SEALGW_URL or {DEFAULT_URL})",
    )
    token = parser.add_mutually_exclusive_group()
    token.add_argument(
        "--token", help="the bearer token (visible to other users in the process list)"
    )
    token.add_argument(
        "--token-file", help="a file holding the bearer token (default: $SEALGW_TOKEN)"
    )
    parser.add_argument(
        "--format",
        choices=("seal", "remote-write"),
        default="seal",
        help="seal-proxy's push to /publish/metrics (default), or remote write to /api/v1/push",
    )
    parser.add_argument(
        "--interval",
        type=_positive,
        default=DEFAULT_INTERVAL,
        help=f"seconds between pushes (default {DEFAULT_INTERVAL:g})",
    )
    parser.add_argument("--tenant", help="sent as X-Scope-OrgID (for multi-tenant tokens)")
    parser.add_argument(
        "--label",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help=f"a label on every series, repeatable (default: job={DEFAULT_JOB})",
    )
    parser.add_argument(
        "--count", type=_count, default=None, help="stop after N pushes have been delivered"
    )


def read_token(token: Optional[str], token_file: Optional[str]) -> str:
    """
    The token from C{--token}, C{--token-file} or C{$SEALGW_TOKEN}, in
    that order, without surrounding whitespace.

    @raise SystemExit: with a message when there is none or the file
        cannot be read.
    """
    if token is None and token_file is not None:
        try:
            with open(token_file, encoding="utf-8") as f:
                token = f.read()
        except OSError as e:
            raise SystemExit(f"sealgw generate: --token-file: {e.strerror}: {token_file}") from e
    if token is None:
        token = os.environ.get("SEALGW_TOKEN")
    if token is None or not token.strip():
        raise SystemExit("sealgw generate: no token: give --token-file, --token or $SEALGW_TOKEN")
    return token.strip()


def parse_labels(items: Sequence[str]) -> dict[str, str]:
    """
    C{NAME=VALUE} items over the default C{job} label.

    @raise SystemExit: naming an item without C{=}.
    """
    labels = {"job": DEFAULT_JOB}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise SystemExit(f"sealgw generate: --label {item!r}: expected NAME=VALUE")
        labels[name] = value
    return labels


def run(ns: argparse.Namespace) -> int:
    """
    Push until stopped (or C{--count} pushes), logging to standard error.
    """
    from sealgw.generator._run import main

    return main(ns)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sealgw.generator", description="Push sample metrics to a sealgw gateway."
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError("must be more than 0")
    return value


def _count(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
