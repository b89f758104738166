"""
The C{sealgw} command: C{run}, C{check-config}, C{hash-token} and
C{version}.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import IO, Optional

from sealgw import generator
from sealgw._version import __version__


def check_config(path: str, bearer_tokens_path: Optional[str], out: IO[str], err: IO[str]) -> int:
    """
    Build everything a start would build, without listening: YAML, keys,
    values, TLS files, endpoint strings and the token file are all checked.
    """
    from twisted.internet import reactor

    from sealgw.build import build_gateway
    from sealgw.config import ConfigError, load

    try:
        config = load(path, bearer_tokens_path)
        build_gateway(config, reactor, install_signal_handlers=False, check_only=True)
    except ConfigError as e:
        for problem in e.problems:
            err.write(problem + "\n")
        err.write(f"{path}: {len(e.problems)} problem(s)\n")
        return 1
    for warning in config.warnings:
        err.write(f"warning: {warning}\n")
    out.write(
        f"{path}: ok ({len(config.listeners)} listener(s), "
        f"{len(config.upstreams)} upstream(s))\n"
    )
    return 0


def run(args: Sequence[str]) -> int:
    """
    C{sealgw run ...} is C{twistd --nodaemon sealgw ...}, for service
    managers and containers that want one process in the foreground.
    """
    from twisted.scripts.twistd import run as twistd_run

    sys.argv = ["twistd", "--nodaemon", "--pidfile=", "sealgw", *args]
    twistd_run()
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="sealgw", description="A secure, multi-tenant gateway for observability data."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p_check = sub.add_parser("check-config", help="validate a configuration file and exit")
    p_check.add_argument("file")
    p_check.add_argument("--bearer-tokens-path", default=None)
    sub.add_parser("hash-token", help="print the sha256 of a token read from standard input")
    sub.add_parser("version", help="print the version")
    p_spool = sub.add_parser("spool", help="show a spool, or re-queue its dead letters (offline)")
    p_spool.add_argument("action", choices=["stats", "replay-dead-letters"])
    p_spool.add_argument("directory", help="a spool's directory, or one worker's folder in it")
    p_spool.add_argument("--json", action="store_true", help="stats as JSON")
    p_run = sub.add_parser("run", help="run the gateway in the foreground (twistd -n sealgw)")
    p_run.add_argument("args", nargs=argparse.REMAINDER)
    p_generate = sub.add_parser("generate", help="push sample metrics to a gateway")
    generator.add_arguments(p_generate)
    ns = parser.parse_args(argv)

    if ns.command == "version":
        print(f"sealgw {__version__}")
        return 0
    if ns.command == "check-config":
        return check_config(ns.file, ns.bearer_tokens_path, sys.stdout, sys.stderr)
    if ns.command == "generate":
        return generator.run(ns)
    if ns.command == "spool":
        from sealgw.spool._cli import spool_command

        return spool_command(ns.action, ns.directory, ns.json, sys.stdout, sys.stderr)
    if ns.command == "hash-token":
        from sealgw.auth import hash_token_main

        return hash_token_main(sys.stdin, sys.stdout)
    return run(ns.args)


if __name__ == "__main__":
    raise SystemExit(main())
