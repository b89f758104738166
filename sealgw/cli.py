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
        config = load(path, bearer_tokens_path, check_token_file=True)
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
    C{sealgw run ...} is C{twistd --nodaemon --pidfile= sealgw ...}, for
    service managers and containers that want one process in the
    foreground (and no pid file, so that two can run in one folder).
    """
    from twisted.scripts.twistd import run as twistd_run

    sys.argv = ["twistd", "--nodaemon", "--pidfile=", "sealgw", *args]
    twistd_run()
    return 0


def run_arguments(argv: Sequence[str]) -> Optional[list[str]]:
    """
    The arguments for twistd's C{sealgw} when C{argv} is C{run ...},
    otherwise L{None}.

    They are taken as they are, before argparse sees them: argparse's
    C{REMAINDER} in a sub-command gives up on a remainder that begins with
    an option (C{run --config F} was "unrecognized arguments"), and the
    options are C{twistd sealgw}'s to judge, C{--help} included.  A
    leading C{--} is dropped, so C{run -- --config F} means the same.
    """
    if not argv or argv[0] != "run":
        return None
    args = list(argv[1:])
    if args[:1] == ["--"]:
        args = args[1:]
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    run_args = run_arguments(argv)
    if run_args is not None:
        return run(run_args)
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
    # Listed for --help; "run ..." is handled before parsing (run_arguments).
    sub.add_parser("run", help="run the gateway in the foreground (twistd -n sealgw ...)")
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
    return run([])


if __name__ == "__main__":
    raise SystemExit(main())
