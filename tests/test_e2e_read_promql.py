"""
End to end, over real sockets: no label-tenancy read holds the gateway.
A running gateway whose Prometheus upstream keeps tenants apart by label,
its admin listener's C{/health}, and the costliest query the default
bounds admit, parsed in the gateway's parser process.

That C{/health} answers while the query is being parsed is shown by
order, not by time: the parser process is held (SIGSTOP) with the query
in it, C{/health} is asked and answers, and only then is the process let
go and the query answered.  Had the query been parsed on the reactor
thread, it would have reached the upstream before C{/health} was even
read.
"""

from __future__ import annotations

import json
import os
import signal
from typing import Any, Optional
from urllib.parse import urlencode

from twisted.trial.unittest import TestCase

from sealgw.query import ReadClients
from sealgw.query._pool import ParserPool
from tests.e2e_support import (
    TEST_TIMEOUT,
    ScriptedUpstream,
    answer,
    bearer,
    http_client,
    serve,
    start_gateway,
    wait_until,
)

ALICE = "tok-alice-0123456789"
TOKENS = [{"name": "alice", "token": ALICE, "tenants": ["team-a"]}]

EMPTY = json.dumps({"status": "success", "data": {"resultType": "vector", "result": []}})

#: The costliest queries the default bounds admit (docs/query.rst has
#: their measured cost): a Unicode class repeated to the size bound, and
#: 64 of them.
COSTLIEST = [
    'up{a=~"\\\\w{64}"}',
    "up{" + ",".join(f'l{i}=~"\\\\w"' for i in range(64)) + "}",
]

#: The probe that held a gateway for 24 s.
HOSTILE = "up{" + ",".join(f'l{i}=~"\\\\w{{250}}"' for i in range(200)) + "}"


class NoReadHoldsTheGatewayTests(TestCase):
    timeout = TEST_TIMEOUT

    async def setUp(self) -> None:  # type: ignore[override]
        self.http = http_client(self)
        self.upstream = ScriptedUpstream(
            answer(200, EMPTY.encode(), {"Content-Type": "application/json"})
        )
        server = serve(self, self.upstream)
        self.gateway = await start_gateway(
            self,
            {
                "upstreams": {"prometheus": {"url": server.url, "tenancy": {"label": "tenant"}}},
                "query": {"prometheus": {"upstream": "prometheus", "timeout": "10s"}},
                "admin": {"endpoint": "tcp:0:interface=127.0.0.1"},
            },
            TOKENS,
        )
        admin = self.gateway.service.listeners[-1].port.getHost().port
        self.health_url = f"http://127.0.0.1:{admin}/health"
        [reads] = [s for s in self.gateway.service if isinstance(s, ReadClients)]
        assert isinstance(reads.parser, ParserPool)
        self.pool: ParserPool = reads.parser

    def query(self, query: str) -> Any:
        return self.http.get(
            f"{self.gateway.url}/api/v1/query?{urlencode({'query': query})}",
            headers=bearer(ALICE),
            timeout=30,
        )

    async def answered(self, query: str) -> tuple[int, bytes]:
        response = await self.query(query)
        return response.code, await response.content()

    def hold_parser(self) -> int:
        [child] = self.pool.children
        pid: int = child.transport.pid  # type: ignore[union-attr]
        os.kill(pid, signal.SIGSTOP)

        def release() -> None:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass

        self.addCleanup(release)
        return pid

    async def test_health_answers_while_the_costliest_query_is_parsed(self) -> None:
        for costliest in COSTLIEST:
            # A first query with a regex starts the parser process.
            code, _ = await self.answered('up{job=~"api|web"}')
            self.assertEqual(code, 200)
            before = len(self.upstream.received)
            pid = self.hold_parser()
            pending = self.query(costliest)
            answers: list[object] = []
            pending.addBoth(lambda result, seen=answers: seen.append(result) or result)

            async def in_the_parser() -> Optional[bool]:
                child = self.pool.children[0]
                return True if child.job is not None else None

            await wait_until(in_the_parser, what="the query in the parser", interval=0.01)
            health = await self.http.get(self.health_url, timeout=10)
            self.assertEqual(health.code, 200)
            self.assertEqual(json.loads(await health.content())["status"], "ok")
            # The query is still being parsed: not answered, not sent.
            self.assertEqual(answers, [])
            self.assertEqual(len(self.upstream.received), before)
            os.kill(pid, signal.SIGCONT)
            response = await pending
            self.assertEqual(response.code, 200, await response.content())
            self.assertEqual(len(self.upstream.received), before + 1)

    async def test_hostile_probe_refused(self) -> None:
        """
        The probe that held a gateway for 24 s is refused at once, naming
        the bound, by the scan in the parser process (the parser never
        sees it), and never reaches the upstream.
        """
        code, body = await self.answered(HOSTILE)
        self.assertEqual(code, 400)
        self.assertIn(b"query.promql.max_regex_matchers", body)
        code, body = await self.answered('up{a=~"\\\\w{250}"}')
        self.assertEqual(code, 400)
        self.assertIn(b"query.promql.max_regex_size", body)
        self.assertEqual(self.upstream.received, [])

    async def test_info_refused(self) -> None:
        code, body = await self.answered('info(up{job=~"api"})')
        self.assertEqual(code, 400)
        self.assertIn(b"the function info() is not allowed", body)
        self.assertEqual(self.upstream.received, [])
