"""
A worker process of a gateway run with C{workers: N}.  The main process
starts it as C{python -m sealgw.daemon.worker --index=N}, with its setup
on standard input and the listening sockets as inherited descriptors
(see L{sealgw.daemon._handoff}); it is not meant to be run by hand.

It runs the same gateway as a single process does, on the adopted
sockets, and stops the same way: SIGTERM drains, SIGHUP reloads.  It also
stops (draining) when the main process goes away.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Optional

from twisted.internet.defer import gatherResults
from twisted.internet.error import ReactorNotRunning
from twisted.logger import Logger, globalLogBeginner

from sealgw.daemon._handoff import (
    FROM_MAIN,
    OUTBOUND_TOKENS,
    SERVING,
    TO_MAIN,
    read_setup,
)
from sealgw.daemon._leases import LeaseClient
from sealgw.daemon._logging import WorkerTag, make_observer
from sealgw.daemon._service import CannotListen
from sealgw.daemon._view import ControlChannel, DaemonView, Worker

log = Logger(namespace="sealgw.daemon.worker")


def main(argv: Optional[list[str]] = None) -> int:
    """
    Run one worker until it is stopped; the exit status is 0 after a
    drain, 1 when it could not start or could not go on (as a single
    gateway's would be), 2 without a setup to start from.
    """
    try:
        setup = read_setup(FROM_MAIN)
    except (EOFError, OSError, ValueError, TypeError) as e:
        sys.stderr.write(
            f"sealgw worker: no setup on standard input ({e}); workers are started "
            "by the main process (workers: in the configuration), not by hand\n"
        )
        return 2

    from twisted.internet import reactor

    from sealgw.build import build_gateway
    from sealgw.config import ConfigError
    from sealgw.daemon._memory import freeze_startup_objects
    from sealgw.daemon._supervisor import FAILED_TO_START
    from sealgw.tap import ExitAfterStop

    pid = os.getpid()
    view = DaemonView(setup.index, pid)
    # Each identity's limits are the main process's, asked over the pipe
    # that says "serving" first.
    leases = LeaseClient(TO_MAIN)
    observer = make_observer(sys.stdout, setup.config.log.format, setup.config.log.level)
    globalLogBeginner.beginLoggingTo(
        [WorkerTag(observer, setup.index, pid)], redirectStandardIO=False
    )
    try:
        # A failure the gateway cannot go on from ends this worker with its
        # own status: before any worker has served, the main process then
        # ends the daemon with status 1, as a single gateway ends; later it
        # restarts this worker, with backoff, while the others serve.
        service = build_gateway(
            setup.config,
            reactor,
            worker=Worker(setup, view, leases),
            on_fatal=ExitAfterStop(reactor, status=FAILED_TO_START),
        )
    except ConfigError as e:
        # The main process built the same configuration; a file that broke
        # since (a token file, a certificate) is what this says.
        log.critical("cannot start: {problems}", problems="; ".join(e.problems))
        return 1
    # Its outbound tokens come from the main process, which runs the
    # refreshers: each one as it is had, and the current ones right after
    # the setup; so do the answers to its requests for limit decisions.
    credentials: Any = service.getServiceNamed("credentials")
    reactor.addReader(ControlChannel(
        FROM_MAIN, view.update, lambda: _stop(reactor), leases.answer,
        handlers={OUTBOUND_TOKENS: credentials.update},
    ))
    # Serving once it listens and its outbound credentials have their
    # first tokens: until then, a worker that fails to start (status
    # FAILED_TO_START) ends the daemon rather than being restarted.
    gatherResults([service.when_listening(), credentials.when_started()]).addCallback(
        _say_serving
    )
    try:
        service.privilegedStartService()
    except CannotListen:
        return 1
    service.startService()
    reactor.addSystemEventTrigger("before", "shutdown", service.stopService)
    reactor.callWhenRunning(freeze_startup_objects)
    reactor.run()
    return 0


def _say_serving(_: object) -> None:
    # A few bytes to a pipe the main process reads: this does not block.
    # The pipe stays open for the limits' requests.
    os.write(TO_MAIN, SERVING)


def _stop(reactor: Any) -> None:
    try:
        reactor.stop()
    except ReactorNotRunning:
        pass  # already stopping


if __name__ == "__main__":
    sys.exit(main())
