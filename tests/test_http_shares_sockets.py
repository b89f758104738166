"""
Each tenant's share of an upstream, over real sockets: a real upstream
server that holds tenant A's requests open (until the test lets them go)
and answers tenant B's at once, the gateway's read routes (or the push
relay) in between, and real HTTP clients.  While A has 20 requests held
upstream and more waiting in the gateway, B is answered.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry
from twisted.internet.defer import Deferred, gatherResults
from twisted.trial.unittest import TestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from sealgw.config import HTTPUpstreamConfig, InFlightConfig, TimeoutsConfig
from sealgw.http import HTTPClient, SlotLimits, UpstreamSlots, slot_metrics
from sealgw.query import QuerySettings, ReadUpstream
from sealgw.relay import HTTPUpstream
from sealgw.signals.push import Push
from tests.e2e_support import TEST_TIMEOUT, bearer, http_client, reactor, serve, wait_until
from tests.test_query_e2e import GatewayToken, start_reads
from tests.test_query_support import SOLO, TRIO

#: Tenant A's requests the upstream holds at once: A's whole share.
HELD = 20


class HoldingUpstream(Resource):
    """
    Holds every request of tenant C{slow} open until L{let_go}; answers
    the others at once.  L{arrived} fires when C{count} held requests are
    in.
    """

    isLeaf = True

    def __init__(self, slow: bytes = b"team-a") -> None:
        super().__init__()
        self.slow = slow
        self.holding = True
        self.held: list[Request] = []
        self.answered: list[bytes] = []
        self._waiting: list[tuple[int, Deferred[None]]] = []

    def render(self, request: Request) -> Any:
        tenant = request.getHeader(b"x-scope-orgid") or b""
        if tenant == self.slow and self.holding:
            self.held.append(request)
            request.notifyFinish().addErrback(lambda _: None)
            for count, d in list(self._waiting):
                if len(self.held) >= count:
                    self._waiting.remove((count, d))
                    d.callback(None)
            return NOT_DONE_YET
        self.answered.append(tenant)
        request.setHeader(b"content-type", b"application/json")
        request.setResponseCode(204 if request.method == b"POST" else 200)
        return b"" if request.method == b"POST" else b'{"status":"success","data":[]}'

    def arrived(self, count: int) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        if len(self.held) >= count:
            d.callback(None)
        else:
            self._waiting.append((count, d))
        return d

    def let_go(self) -> None:
        """
        Answer every held request, and every later one at once.
        """
        self.holding = False
        for request in self.held:
            if not request.finished and not request._disconnected:
                request.setHeader(b"content-type", b"application/json")
                request.setResponseCode(204 if request.method == b"POST" else 200)
                if request.method != b"POST":
                    request.write(b'{"status":"success","data":[]}')
                request.finish()


class ReadSharesTests(TestCase):
    timeout = TEST_TIMEOUT

    async def start(self) -> tuple[HoldingUpstream, UpstreamSlots, str]:
        upstream = HoldingUpstream()
        server = serve(self, upstream)
        registry = CollectorRegistry()
        self.registry = registry
        slots = UpstreamSlots(
            "mimir", "reads",
            SlotLimits(in_flight=2 * HELD, tenant_share=0.5, tenant_queue=10, wait=60),
            reactor,
            slot_metrics(registry).for_slots("mimir", "reads", 2 * HELD),
        )
        client = HTTPClient(
            reactor, name="mimir", credentials=GatewayToken(), max_connections=2 * HELD
        )
        self.addCleanup(client.close)
        gateway = await start_reads(
            self, QuerySettings(prometheus=ReadUpstream(client, server.url, slots=slots))
        )
        # Let the held requests go before the servers stop.
        self.addCleanup(upstream.let_go)
        return upstream, slots, gateway

    async def test_slow_tenant_does_not_hold_up_another(self) -> None:
        """
        Tenant A has 20 reads held upstream (its share) and 5 more waiting
        in the gateway; tenant B's read is answered at once all the same.
        When A's reads are let go, all of them are answered, the waiting
        ones too, and every slot is given back.
        """
        upstream, slots, gateway = await self.start()
        http = http_client(self)
        url = f"{gateway}/api/v1/query?query=up"
        a_reads = [http.get(url, headers=bearer(SOLO)) for _ in range(HELD + 5)]
        a_done = _track(a_reads)
        await upstream.arrived(HELD)
        await wait_until(
            lambda: _ready(slots.waiting == 5), what="A's other 5 reads to wait for a slot"
        )
        self.assertEqual((slots.held("team-a"), slots.in_use), (HELD, HELD))

        response = await http.get(url, headers=bearer(TRIO, X_Scope_OrgID="team-b"))
        self.assertEqual(response.code, 200, await response.content())
        # A's reads were all still held or waiting when B was answered.
        self.assertEqual(a_done, [])
        self.assertEqual(len(upstream.held), HELD)
        self.assertEqual(upstream.answered, [b"team-b"])
        labels = {"upstream": "mimir", "kind": "reads"}
        self.assertEqual(
            self.registry.get_sample_value("sealgw_upstream_slots_waiting", labels), 5
        )

        upstream.let_go()
        responses = await gatherResults(a_reads)
        for r in responses:
            self.assertEqual(r.code, 200)
            await r.content()
        self.assertEqual(len(upstream.held) + upstream.answered.count(b"team-a"), HELD + 5)
        self.assertEqual((slots.in_use, slots.waiting), (0, 0))

    async def test_waiting_client_goes_away(self) -> None:
        """
        A read waiting for a slot whose client hangs up leaves the queue,
        and is never sent upstream; a held one whose client hangs up gives
        its slot back.
        """
        upstream, slots, gateway = await self.start()
        http = http_client(self)
        url = f"{gateway}/api/v1/query?query=up"
        held = [http.get(url, headers=bearer(SOLO)) for _ in range(HELD)]
        await upstream.arrived(HELD)
        waiting = http.get(url, headers=bearer(SOLO))
        await wait_until(lambda: _ready(slots.waiting == 1), what="a read to wait")
        waiting.addErrback(lambda _: None)
        waiting.cancel()
        await wait_until(lambda: _ready(slots.waiting == 0), what="the read to leave the queue")
        self.assertEqual(slots.in_use, HELD)

        for d in held[:5]:
            d.addErrback(lambda _: None)
            d.cancel()
        await wait_until(lambda: _ready(slots.in_use == HELD - 5), what="slots to come back")
        upstream.let_go()
        for response in await gatherResults(held[5:]):
            self.assertEqual(response.code, 200)
            await response.content()
        self.assertEqual(len(upstream.held), HELD)
        await wait_until(lambda: _ready(slots.in_use == 0), what="every slot back")


class PushSharesTests(TestCase):
    timeout = TEST_TIMEOUT

    async def test_slow_tenant_does_not_hold_up_another(self) -> None:
        """
        Tenant A has 20 pushes held upstream (its share) and more waiting;
        tenant B's push is delivered at once.
        """
        upstream = HoldingUpstream()
        server = serve(self, upstream)
        relay = HTTPUpstream(
            HTTPUpstreamConfig(
                name="mimir", url=server.url,
                timeouts=TimeoutsConfig(connect=5, response=60, body=10),
                in_flight=InFlightConfig(pushes=2 * HELD, tenant_share=0.5),
            ),
            reactor,
        )
        self.addCleanup(relay.close)
        self.addCleanup(upstream.let_go)

        def push(tenant: str) -> Deferred[Any]:
            return relay.deliver(Push(
                "remote_write", tenant, b"\x00", "application/x-protobuf", "snappy",
                "/api/v1/push", received_at=reactor.seconds(),
            ))

        a_pushes = [push("team-a") for _ in range(HELD + 3)]
        a_done = _track(a_pushes)
        await upstream.arrived(HELD)
        self.assertEqual((relay.slots.in_use, relay.slots.waiting), (HELD, 3))
        delivery = await push("team-b")
        self.assertEqual(delivery.status, 204)
        self.assertEqual(a_done, [])
        upstream.let_go()
        deliveries = await gatherResults(a_pushes)
        self.assertEqual({d.status for d in deliveries}, {204})
        self.assertEqual(relay.slots.in_use, 0)


def _track(requests: list[Deferred[Any]]) -> list[Any]:
    """
    A list that gets each of C{requests}' results as it arrives.
    """
    done: list[Any] = []

    def record(result: Any) -> Any:
        done.append(result)
        return result

    for d in requests:
        d.addBoth(record)
    return done


async def _ready(condition: bool) -> Any:
    return True if condition else None
