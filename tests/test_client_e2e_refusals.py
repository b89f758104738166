"""
The client library refused by a real gateway, over real sockets: a wrong
token is told once and paused on, the library's own and Twisted's lines
bridged into the handler's logger are never shipped, and the handler
recovers when the gateway's token file is fixed.  In child processes:
the documented snippet works as copied (and ships none of Twisted's
lines); with a refused token it exits promptly, saying so in two lines;
an application that forgot C{start_in_thread()} is told what it lost.
"""

from __future__ import annotations

import io
import json
import logging
import os
import sys
import textwrap
from typing import Any

from twisted.logger import (
    FilteringLogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    PredicateResult,
    STDLibLogObserver,
    globalLogPublisher,
)
from twisted.trial.unittest import TestCase

from sealgw.client import Backoff, LokiHandler
from tests.e2e_support import (
    TEST_TIMEOUT,
    Gateway,
    ScriptedUpstream,
    reactor,
    serve,
    start_gateway,
    wait_until,
    with_timeout,
    write_tokens,
)
from tests.subprocesses import ROOT, Child, child_env
from tests.test_client_fakes import Seen

TOKENS: list[dict[str, Any]] = [{"name": "app-1", "token": "tok-app", "tenants": ["team-a"]}]
LATE = {"name": "late", "token": "tok-late", "tenants": ["team-a"]}
LIBRARY = ("twisted", "treq", "sealgw.client")


class RefusedHandlerTests(TestCase):
    timeout = TEST_TIMEOUT

    async def start(self) -> Gateway:
        self.upstream = ScriptedUpstream()
        server = serve(self, self.upstream)
        return await start_gateway(
            self,
            {
                "upstreams": {"loki": {"url": server.url}},
                "push": {"loki": {"upstream": "loki", "path": "/loki/api/v1/push"}},
            },
            TOKENS,
        )

    def bridge(self, logger: logging.Logger) -> None:
        """
        Send Twisted's events about the library and Twisted itself (not
        the gateway's, which runs in this process too) to C{logger}, as
        C{STDLibLogObserver} does for a Twisted application.
        """

        def library(event: dict[str, Any]) -> PredicateResult:
            namespace = event.get("log_namespace", "")
            if namespace.startswith(LIBRARY):
                return PredicateResult.maybe
            return PredicateResult.no

        observer = FilteringLogObserver(
            STDLibLogObserver(name=logger.name),
            [library, LogLevelFilterPredicate(LogLevel.debug)],  # type: ignore[list-item]
        )
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)

    def lines(self) -> list[str]:
        out = []
        for received in self.upstream.received:
            headers = {"content-encoding": received.header("Content-Encoding") or ""}
            doc = Seen(received.method, received.path, headers, received.body).loki()
            out += [v[1] for s in doc["streams"] for v in s["values"]]
        return out

    async def test_wrong_token_then_fixed(self) -> None:
        """
        A token the gateway does not know: one line on standard error,
        refusals spaced by the pauses, and none of the library's or
        Twisted's own records shipped.  Once the gateway's token file
        knows the token, the waiting records arrive, and that is told.
        """
        gateway = await self.start()
        stderr = io.StringIO()
        handler = LokiHandler(
            gateway.url,
            token="tok-late",
            labels={"service_name": "shop"},
            flush_interval=0.05,
            batch_size=2,
            backoff=Backoff(initial=0.1, maximum=0.2),
            refusal_backoff=Backoff(initial=0.2, maximum=0.4),
            report_to=stderr,
        )
        logger = logging.getLogger(f"e2e.{self.id()}")
        logger.propagate = False
        logger.setLevel(logging.DEBUG)
        logger.addHandler(handler)
        self.addCleanup(logger.removeHandler, handler)
        self.addCleanup(handler.stop)
        self.bridge(logger)
        for i in range(20):
            logger.info("line %d", i)

        async def refused_thrice() -> bool | None:
            return True if handler.counters.rejected >= 3 else None

        await wait_until(refused_thrice, what="three refused batches", timeout=30)
        [line] = stderr.getvalue().splitlines()
        self.assertIn(f"a log batch to {gateway.url}/loki/api/v1/push: 401", line)
        self.assertNotIn("tok-late", stderr.getvalue())
        self.assertEqual(self.upstream.received, [])
        self.assertGreater(handler.counters.skipped, 0)

        write_tokens(gateway.directory, [*TOKENS, LATE])
        gateway.service.reload()
        refused = handler.counters.items_rejected

        async def all_arrived() -> bool | None:
            return True if len(self.lines()) == 20 - refused else None

        await wait_until(all_arrived, what="the records that waited", timeout=30)
        self.assertEqual(self.lines(), [f"line {i}" for i in range(refused, 20)])
        lines = stderr.getvalue().splitlines()
        self.assertEqual(len(lines), 2)
        self.assertIn("log batches to", lines[1])
        self.assertIn(f"delivered again, after {handler.counters.rejected} refused", lines[1])


REFUSED_APP = textwrap.dedent(
    """
    import atexit, json, logging, sys, time

    from sealgw.client import LokiHandler, start_in_thread

    url, token = sys.argv[1], sys.argv[2]

    def counters():
        c = handler.counters
        print(json.dumps({"rejected": c.rejected, "skipped": c.skipped}), flush=True)

    atexit.register(counters)  # runs after crochet has stopped the reactor
    # The snippet of docs/clients.rst, with a token the gateway refuses.
    start_in_thread()
    handler = LokiHandler(url, token=token, labels={"service_name": "refused-app"})
    logging.getLogger().addHandler(handler)
    logging.getLogger().setLevel(logging.DEBUG)

    log = logging.getLogger("app")
    deadline = time.monotonic() + 30
    i = 0
    while handler.counters.rejected == 0 and time.monotonic() < deadline:
        log.info("working on %d", i)  # an application at work, until refused once
        i += 1
        time.sleep(0.01)
    for j in range(300):
        log.info("more work %d", j)
    """
)

FORGETFUL_APP = textwrap.dedent(
    """
    import logging, sys

    from sealgw.client import LokiHandler

    url, token = sys.argv[1], sys.argv[2]
    logging.getLogger().addHandler(LokiHandler(url, token=token, labels={"service_name": "x"}))
    for i in range(3):
        logging.getLogger("app").warning("line %d", i)
    """
)


def documented_snippet() -> str:
    """
    The first code block of C{docs/clients.rst}: the library without a
    reactor.
    """
    with open(os.path.join(ROOT, "docs", "clients.rst"), encoding="utf-8") as f:
        text = f.read()
    block = text.split("Metrics and logs, without a reactor", 1)[1].split("::\n\n", 1)[1]
    lines = []
    for line in block.splitlines():
        if line and not line.startswith("    "):
            break
        lines.append(line)
    return textwrap.dedent("\n".join(lines))


class ApplicationTests(TestCase):
    """
    Applications that run no reactor, in child processes.
    """

    timeout = TEST_TIMEOUT

    async def run_app(self, source: str, url: str, token: str, **env: str) -> Child:
        script = os.path.abspath(self.mktemp()) + ".py"
        with open(script, "w") as f:
            f.write(source)
        child = Child()
        reactor.spawnProcess(
            child,
            sys.executable,
            [sys.executable, script, url, token],
            env=child_env(**env),
            path=ROOT,
        )
        started = reactor.seconds()
        code = await with_timeout(child.ended, 60, "the application to exit")
        self.elapsed = reactor.seconds() - started
        self.assertEqual(code, 0, child.err.decode("utf-8", "replace"))
        return child

    async def test_documented_snippet(self) -> None:
        """
        The snippet of C{docs/clients.rst} works as copied (with the
        gateway's URL): its log line and its metrics arrive, and nothing
        is said on standard error.
        """
        upstream = ScriptedUpstream()
        server = serve(self, upstream)
        gateway = await start_gateway(
            self,
            {
                "upstreams": {"up": {"url": server.url}},
                "push": {
                    "loki": {"upstream": "up", "path": "/loki/api/v1/push"},
                    "remote_write": {"upstream": "up", "path": "/api/v1/push"},
                },
            },
            TOKENS,
        )
        snippet = documented_snippet().replace("https://gateway.example.com", gateway.url)
        child = await self.run_app(snippet, "", "", SEALGW_TOKEN="tok-app")
        self.assertEqual(child.err.decode("utf-8", "replace"), "")
        logs = [r for r in upstream.received if r.path == b"/loki/api/v1/push"]
        lines = []
        for received in logs:
            doc = Seen(received.method, received.path, {"content-encoding": "gzip"}, received.body)
            for stream in doc.loki()["streams"]:
                lines += [(stream["stream"], v[1]) for v in stream["values"]]
        self.assertEqual(
            lines, [({"service_name": "shop", "level": "INFO", "logger": "shop"}, "started")]
        )
        self.assertTrue([r for r in upstream.received if r.path == b"/api/v1/push"])

    async def test_refused_at_exit(self) -> None:
        """
        With a refused token, an application's exit makes one more
        attempt and says what it lost, in one line: two report lines in
        all, none of them shipped, no traceback.
        """
        upstream = ScriptedUpstream()
        server = serve(self, upstream)
        gateway = await start_gateway(
            self,
            {
                "upstreams": {"loki": {"url": server.url}},
                "push": {"loki": {"upstream": "loki", "path": "/loki/api/v1/push"}},
            },
            TOKENS,
        )
        child = await self.run_app(REFUSED_APP, gateway.url, "tok-wrong")
        err = child.err.decode("utf-8", "replace")
        reports = [line for line in err.splitlines() if line.startswith("sealgw client: ")]
        self.assertEqual(len(reports), 2, err)
        self.assertIn("the gateway refused a log batch to", reports[0])
        self.assertIn("401", reports[0])
        self.assertRegex(
            reports[1], r"^sealgw client: \d+ log line\(s\) for .* not sent at shutdown"
        )
        self.assertNotIn("Traceback", err)
        self.assertNotIn("tok-wrong", err)
        counters = json.loads(child.out.decode().strip().splitlines()[-1])
        self.assertEqual(counters["rejected"], 2)  # the one at work, the one at exit
        self.assertEqual(upstream.received, [])
        self.assertLess(self.elapsed, 30)

    async def test_forgot_start_in_thread(self) -> None:
        """
        An application that forgot C{start_in_thread()} exits at once,
        and standard error says what was never sent and why.
        """
        child = await self.run_app(FORGETFUL_APP, "http://127.0.0.1:9", "tok")
        err = child.err.decode("utf-8", "replace")
        self.assertIn(
            "sealgw client: 3 log records for http://127.0.0.1:9/loki/api/v1/push were never "
            "sent: Twisted's reactor did not run (an application that does not run it calls "
            "sealgw.client.start_in_thread() first)",
            err,
        )
        self.assertLess(self.elapsed, 30)
