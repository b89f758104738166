"""
The C{twistd sealgw} command: options, and the service they make.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Optional

from twisted.python import usage

from sealgw._version import __version__


def _port_number(value: str) -> int:
    port = int(value)
    if not 0 <= port <= 65535:
        raise ValueError(f"not a TCP port: {value}")
    return port


class Options(usage.Options):
    synopsis = "[--config FILE] [--bearer-tokens-path FILE]"
    longdesc = (
        "Run the sealgw gateway.  Without --config it starts on a built-in "
        "development configuration: 127.0.0.1:8080 (--port to change it), "
        "a generated token printed once, and everything pushed written "
        "under ./sealgw-data."
    )
    optParameters = [
        ["config", "c", None, "The YAML configuration file (sealgw's or seal-proxy's)."],
        [
            "bearer-tokens-path",
            None,
            None,
            "A token file; overrides auth.token_file.path (seal-proxy's option).",
        ],
        ["data-dir", None, "sealgw-data", "Where the built-in default keeps what it accepts."],
        [
            "port",
            None,
            None,
            "The built-in default's port on 127.0.0.1 (default 8080; 0 for any free one).",
            _port_number,
        ],
    ]

    def postOptions(self) -> None:
        if self["port"] is not None and self["config"] is not None:
            raise usage.UsageError(
                "--port is for the built-in configuration; with --config, "
                "listeners are set in the file"
            )

    def opt_version(self) -> None:
        """
        Print the version and exit.
        """
        print(f"sealgw {__version__}")
        sys.exit(0)


def makeService(options: Options, reactor: Any = None) -> Any:
    """
    Read the configuration and build the gateway (with C{workers:} above
    1, the main process that runs the workers).  A configuration problem
    ends twistd here with every problem listed, before anything listens; a
    port that cannot be bound ends it when the service starts, in one line.
    """
    if reactor is None:
        from twisted.internet import reactor as default_reactor

        reactor = default_reactor

    from sealgw.build import build_daemon
    from sealgw.config import ConfigError, default_config, load

    config_path: Optional[str] = options["config"]
    try:
        if config_path is None:
            config = default_config(options["data-dir"], port=options["port"])
        else:
            config = load(config_path, options["bearer-tokens-path"], check_token_file=True)
        service = build_daemon(
            config, reactor, log_output=_log_output(options), on_fatal=ExitAfterStop(reactor)
        )
    except ConfigError as e:
        raise SystemExit(
            "sealgw: configuration problems:\n  " + "\n  ".join(e.problems)
        ) from None
    service.report_cannot_listen = _to_standard_error
    # Only once it listens: a port that cannot be had ends start-up with
    # one line, and no banner promising a gateway that is not there.
    if config.development_token is not None:
        service.when_listening().addCallback(
            lambda _: _announce_development_token(config, service)
        )
    else:
        service.when_listening().addCallback(lambda _: _log_summary(config, service))
    return service


def _to_standard_error(reason: str) -> None:
    """
    Write why start-up ends to the process's standard error, in one line:
    by now twistd has made C{sys.stderr} a file that logs what is written
    to it, to standard output and in the log's format.
    """
    err = sys.__stderr__ if sys.__stderr__ is not None else sys.stderr
    err.write(f"sealgw: {reason}\n")
    err.flush()


def _log_summary(config: Any, service: Any) -> None:
    from twisted.logger import Logger

    from sealgw.daemon._summary import bound_listeners, start_summary

    summary = start_summary(config, bound_listeners(service.listeners))
    # The text is the event's format (braces doubled), so that a JSON line
    # carries it once, as its message.
    Logger(namespace="sealgw").info(summary.replace("{", "{{").replace("}", "}}"))


class ExitAfterStop:
    """
    Ends the process with status 1 once the reactor has stopped, for a
    failure found after start-up began (an upstream's first Entra ID token
    could not be had; the reason is already logged in one line).  Once its
    reactor runs, twistd has no exit status of its own to give, so the
    process ends itself after the shutdown has run (listeners closed,
    requests drained, services stopped).
    """

    def __init__(self, reactor: Any, status: int = 1) -> None:
        """
        @param status: the exit status; a worker ends with
            L{sealgw.daemon.FAILED_TO_START}, which its main process reads
            as a failure of the whole daemon's start.
        """
        self._reactor = reactor
        self._status = status
        self.called = False

    def __call__(self, reason: str) -> None:
        if self.called:
            return
        self.called = True
        self._reactor.addSystemEventTrigger("after", "shutdown", _exit, self._status)
        self._reactor.stop()


def _exit(status: int) -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def _log_output(options: Options) -> Any:
    """
    Where sealgw writes its own logs: standard output, unless twistd was
    told where to log (--logfile, --syslog, --logger).
    """
    parent = getattr(options, "parent", None)
    if parent is not None and (
        parent.get("logfile") or parent.get("syslog") or parent.get("logger")
    ):
        return None
    return sys.stdout


def _announce_development_token(config: Any, service: Any) -> None:
    """
    Print the generated token once, to the terminal, never to the log.
    """
    token = config.development_token.value
    # The port bound, which --port 0 leaves to the system.
    port = service.listeners[0].port.getHost().port
    data_dir = config.upstreams["files"].directory
    # By now twistd has replaced sys.stdout with a file that logs what is
    # written to it (and --logfile sends the log to a file): the token
    # goes to the process's own standard output instead.
    terminal = sys.__stdout__ if sys.__stdout__ is not None else sys.stdout
    terminal.write(
        "\n"
        "sealgw is running on its built-in development configuration.\n"
        f"  development token (shown once, not logged): {token}\n"
        f"  everything pushed is written under {data_dir}\n"
        "\n"
        "Try it:\n"
        f"  curl -sS -i -H 'Authorization: Bearer {token}' "
        "-H 'Content-Type: application/json' \\\n"
        "    --data-binary '{\"streams\":[{\"stream\":{\"job\":\"demo\"},"
        "\"values\":[[\"'$(date +%s%N)'\",\"hello from curl\"]]}]}' \\\n"
        f"    http://127.0.0.1:{port}/loki/api/v1/push\n"
        f"  curl -sS http://127.0.0.1:{port}/health\n"
        "\n"
    )
    terminal.flush()
