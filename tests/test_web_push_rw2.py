"""
Remote write 2.0 on the remote-write routes, in memory: what reaches the
upstream for each C{remote_write_version}, and the written-count headers
the client is answered with, produced or passed on.
"""

from __future__ import annotations

import attr
from prometheus_client import CollectorRegistry
from treq.testing import StubTreq
from twisted.logger import capturedLogs, formatEvent

from sealgw.auth import build_gate
from sealgw.config import HTTPUpstreamConfig, RemoteWriteConfig
from sealgw.config._model import UpstreamTenancy
from sealgw.relay import Delivery, UpstreamRejected
from sealgw.signals import remote_write2, snappy_decompress
from sealgw.signals.proto import remote_pb2
from sealgw.web.push import PushRoutes
from tests import test_web_push_routes as routes
from tests.rw2_support import body_v2, request_v2

RW2 = {
    "Authorization": "Bearer node-token-0123456789",
    "Content-Type": remote_write2.CONTENT_TYPE,
    "Content-Encoding": "snappy",
    "X-Prometheus-Remote-Write-Version": "2.0.0",
}
NOW_MS = 1_700_000_000_000
WRITTEN = (
    "X-Prometheus-Remote-Write-Samples-Written",
    "X-Prometheus-Remote-Write-Histograms-Written",
    "X-Prometheus-Remote-Write-Exemplars-Written",
)


class RemoteWrite2Tests(routes.RoutesTestCase):
    def use(self, version: int, *, label: str | None = None, check: str = "headers") -> None:
        """
        The route's upstream reads C{version}; keeps tenants apart by
        C{label} when given.
        """
        upstream = HTTPUpstreamConfig(
            name="mimir",
            url="http://mimir.test",
            remote_write_version=version,
            tenancy=UpstreamTenancy(label=label),
        )
        push = self.config.push
        assert push.remote_write is not None
        self.config = attr.evolve(
            self.config,
            upstreams={"mimir": upstream},
            push=attr.evolve(
                push, remote_write=RemoteWriteConfig(route=push.remote_write.route, check=check)
            ),
        )
        gate = build_gate(self.config, self.clock, CollectorRegistry())
        self.routes = PushRoutes(
            self.config, gate, {"mimir": self.upstream}, self.clock, run_in_thread=self._inline
        )
        self.stub = StubTreq(self.routes.resource())

    def written(self, headers: object) -> list[str | None]:
        return [headers.getRawHeaders(name, [None])[0] for name in WRITTEN]  # type: ignore[attr-defined]

    def request(self) -> bytes:
        return body_v2(
            request_v2(
                [({"__name__": "up", "job": "a"}, [(1.0, NOW_MS), (2.0, NOW_MS + 1)])],
                histograms=[({"__name__": "h"}, NOW_MS)],
                exemplar=({"trace_id": "t"}, 1.0, NOW_MS),
            )
        )

    def test_converted_by_default(self) -> None:
        """
        With no C{remote_write_version} the upstream gets 1.0, and the
        client the counts sealgw relayed (a 1.0 upstream gives none).
        """
        code, body, headers = self.post("/api/v1/write", self.request(), RW2)
        self.assertEqual(code, 204, body)
        [push] = self.upstream.delivered
        self.assertEqual(push.content_type, "application/x-protobuf")
        self.assertEqual(push.extra_headers["X-Prometheus-Remote-Write-Version"], "0.1.0")
        write = remote_pb2.WriteRequest.FromString(snappy_decompress(push.body, 1 << 20))
        self.assertEqual(len(write.timeseries), 2)
        self.assertEqual(self.written(headers), ["2", "1", "1"])

    def test_relayed_and_counts_passed_on(self) -> None:
        """
        To a 2.0 upstream the body goes as it came, and the upstream's own
        counts reach the client, not sealgw's.
        """
        self.use(2)
        body = self.request()
        self.upstream.play(
            Delivery(
                status=204,
                body=b"",
                attempts=1,
                headers=remote_write2.Written(2, 0, 1).headers(),
            )
        )
        code, content, headers = self.post("/api/v1/write", body, RW2)
        self.assertEqual(code, 204, content)
        [push] = self.upstream.delivered
        self.assertEqual(push.body, body)
        self.assertEqual(push.content_type, remote_write2.CONTENT_TYPE)
        self.assertEqual(self.written(headers), ["2", "0", "1"])

    def test_relayed_upstream_gives_no_counts(self) -> None:
        """
        A 2.0 upstream that answers 2xx without counts may not read 2.0
        (a Prometheus 2.x answers 204 and keeps nothing): the client is
        told nothing was confirmed, even where sealgw knows what it
        relayed, and the operator is warned once.  A 1.0 request never
        gets counts.
        """
        for check in ("headers", "decode"):
            self.use(2, check=check)
            with capturedLogs() as events:
                code, _, headers = self.post("/api/v1/write", self.request(), RW2)
                self.post("/api/v1/write", self.request(), RW2)
            self.assertEqual(code, 204)
            self.assertEqual(self.written(headers), [None, None, None])
            warnings = [formatEvent(e) for e in events if "Written headers" in formatEvent(e)]
            self.assertEqual(len(warnings), 1, warnings)
            self.assertIn("upstream mimir answered a remote write 2.0 push 204", warnings[0])
        code, _, headers = self.post(
            "/api/v1/write",
            routes.remote_write_body(routes.write_request([({"__name__": "up"}, [(1.0, 1)])])),
            routes.RW,
        )
        self.assertEqual(code, 204)
        self.assertEqual(self.written(headers), [None, None, None])

    def test_spooled(self) -> None:
        """
        A push a spool took has reached no upstream yet: sealgw's own
        counts, when it decoded the push.
        """
        self.use(2, check="decode")
        self.upstream.play(Delivery(status=202, body=b"", attempts=0))
        code, _, headers = self.post("/api/v1/write", self.request(), RW2)
        self.assertEqual(code, 204)
        self.assertEqual(self.written(headers), ["2", "1", "1"])

    def test_label_tenancy(self) -> None:
        """
        The tenant's label on every series through the symbols table, the
        client's own value for it replaced; no tenant header.
        """
        self.use(2, label="tenant")
        body = body_v2(request_v2([({"__name__": "up", "tenant": "other"}, [(1.0, NOW_MS)])]))
        code, content, _ = self.post("/api/v1/write", body, RW2)
        self.assertEqual(code, 204, content)
        [push] = self.upstream.delivered
        self.assertIsNone(push.tenant)
        request = remote_write2.decode(snappy_decompress(push.body, 1 << 20))
        refs = list(request.timeseries[0].labels_refs)
        self.assertEqual(
            [request.symbols[ref] for ref in refs], ["__name__", "up", "tenant", "anonymous"]
        )

    def test_partly_refused(self) -> None:
        """
        A series over a sample limit is left out and said with a 400, the
        counts of what was written with it.
        """
        self.use(1, check="labels")
        body = body_v2(
            request_v2(
                [
                    ({"__name__": "ok"}, [(1.0, NOW_MS)]),
                    ({"__name__": "late"}, [(1.0, NOW_MS + 86_400_000)]),
                ]
            )
        )
        code, content, headers = self.post("/api/v1/write", body, RW2)
        self.assertEqual(code, 400, content)
        self.assertIn(b"1 of 2 series refused", content)
        self.assertEqual(self.written(headers), ["1", "0", "0"])
        self.assertEqual(len(self.upstream.delivered), 1)

    def test_refusals(self) -> None:
        """
        A wrong token, a foreign tenant, a bomb: refused, nothing relayed.
        """
        body = self.request()
        code, _, _ = self.post("/api/v1/write", body, {**RW2, "Authorization": "Bearer nope"})
        self.assertEqual(code, 401)
        code, _, _ = self.post("/api/v1/write", body, {**RW2, "X-Scope-OrgID": "team-b"})
        self.assertEqual(code, 403)
        bomb = request_v2([])
        bomb.symbols.extend(["__name__", "x" * 200_000])
        # 200 MB of labels from a body of kilobytes: past max_decompressed.
        for _ in range(1000):
            bomb.timeseries.add(labels_refs=[1, 2]).samples.add(value=1, timestamp=NOW_MS)
        code, content, _ = self.post("/api/v1/write", body_v2(bomb), RW2)
        self.assertEqual(code, 413, content)
        self.assertIn(b"the labels and metadata its references name come to more than", content)
        self.assertEqual(self.upstream.pushes, [])

    def test_upstream_refuses_2_0(self) -> None:
        """
        An upstream set to 2 that does not read it answers 415: the client
        gets the 415, and a Prometheus sender falls back to 1.0.
        """
        self.use(2)
        self.upstream.play(UpstreamRejected(415, "unsupported content type"))
        code, content, headers = self.post("/api/v1/write", self.request(), RW2)
        self.assertEqual(code, 415, content)
        self.assertEqual(self.written(headers), [None, None, None])
