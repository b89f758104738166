"""
L{sealgw.http.Backends} on a clock with a scripted resolver: least-loaded
balancing, backends set aside and tried again, names resolved to every
address and again later; and L{sealgw.http.HTTPClient} telling it how
each request went.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Optional

from prometheus_client import CollectorRegistry
from twisted.internet import error as ierror
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IHostnameResolver, IResolutionReceiver
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from sealgw.config import HTTPUpstreamConfig
from sealgw.http import Backend, Backends, HTTPClient, backend_metrics


@implementer(IHostnameResolver)
class ScriptedResolver:
    """
    Answers each name with the addresses set for it, at once, or holds
    the answer when C{hold} is set.
    """

    def __init__(self) -> None:
        self.answers: dict[str, list[str]] = {}
        self.asked: list[str] = []
        self.hold = False
        self.held: list[tuple[IResolutionReceiver, str]] = []

    def resolveHostName(
        self, resolutionReceiver: IResolutionReceiver, hostName: str, portNumber: int = 0,
        addressTypes: Any = None, transportSemantics: str = "TCP",
    ) -> Any:
        self.asked.append(hostName)
        resolutionReceiver.resolutionBegan(None)  # type: ignore[arg-type]
        if self.hold:
            self.held.append((resolutionReceiver, hostName))
            return None
        self.answer(resolutionReceiver, hostName, portNumber)
        return None

    def answer(self, receiver: IResolutionReceiver, host: str, port: int = 0) -> None:
        for address in self.answers.get(host, []):
            kind = IPv6Address if ":" in address else IPv4Address
            receiver.addressResolved(kind("TCP", address, port))
        receiver.resolutionComplete()


def labels(backends: list[Backend]) -> list[str]:
    return [b.label for b in backends]


class BalancingTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.backends = Backends(
            "mimir", ["http://10.0.0.1:8080/api", "http://10.0.0.2:8080/api"], self.clock
        )

    def test_addresses_need_no_resolution(self) -> None:
        self.assertEqual(labels(self.backends.backends), ["10.0.0.1:8080", "10.0.0.2:8080"])
        first = self.backends.backends[0]
        self.assertEqual((first.host, first.address, first.host_header), (
            "10.0.0.1", "10.0.0.1", b"10.0.0.1:8080"))

    def test_least_loaded(self) -> None:
        """
        Each request goes to the backend with the fewest in flight.
        """
        a = self.backends.pick()
        b = self.backends.pick()
        self.assertNotEqual(a, b)
        self.backends.finished(a, True)
        # b still busy: the next two go to a, then one each.
        self.assertEqual(self.backends.pick(), a)
        self.assertEqual(self.backends.pick(), b)
        self.assertEqual(self.backends.pick(), a)
        report = {r["backend"]: r["in_flight"] for r in self.backends.report()}
        self.assertEqual(report, {a.label: 2, b.label: 2})

    def test_turns_among_equals(self) -> None:
        """
        One request at a time still spreads: equals take turns.
        """
        seen: Counter[str] = Counter()
        for _ in range(10):
            backend = self.backends.pick()
            seen[backend.label] += 1
            self.backends.finished(backend, True)
        self.assertEqual(seen, Counter({"10.0.0.1:8080": 5, "10.0.0.2:8080": 5}))

    def test_retry_goes_elsewhere(self) -> None:
        """
        A backend that has just failed is picked only when the others have
        failed too, however busy they are: the retry of a request goes to
        another backend.
        """
        a, b = self.backends.backends
        busy = [self.backends.pick() for _ in range(6)]
        self.backends.finished(a, False)
        for _ in range(3):
            self.assertEqual(self.backends.pick(), b)
        # Once its failure is old, it is the least loaded again.
        self.clock.advance(5)
        self.assertEqual(self.backends.pick(), a)
        # With both failed just now, the least loaded of them (a).
        self.backends.finished(b, False)
        self.backends.finished(a, False)
        report = {r["backend"]: r["in_flight"] for r in self.backends.report()}
        self.assertEqual(report, {a.label: 2, b.label: 5})
        self.assertEqual(self.backends.pick(), a)
        del busy

    def test_set_aside_and_back(self) -> None:
        """
        Three failures in a row set a backend aside: nothing goes to it
        until its time is over; then one trial request, and a success
        brings it back.
        """
        a, b = self.backends.backends
        for _ in range(3):
            self.backends.finished(self._pick(a), False)
        self.assertEqual(self.backends.report()[0]["status"], "set_aside")
        self.assertFalse(self.backends.healthy())
        for _ in range(5):
            chosen = self.backends.pick()
            self.assertEqual(chosen, b)
            self.backends.finished(chosen, True)
        self.clock.advance(5)
        trial = self.backends.pick()
        self.assertEqual(trial, a)
        # One trial at a time: the others still go to b meanwhile.
        self.assertEqual(self.backends.pick(), b)
        self.backends.finished(trial, True)
        self.assertTrue(self.backends.healthy())
        self.assertEqual(self.backends.pick(), a)

    def test_failed_trial_waits_longer(self) -> None:
        a, b = self.backends.backends
        for _ in range(3):
            self.backends.finished(self._pick(a), False)
        self.clock.advance(5)
        trial = self.backends.pick()
        self.assertEqual(trial, a)
        self.backends.finished(trial, False)
        self.assertEqual(self.backends.report()[0]["set_aside_for"], 10.0)
        self.clock.advance(9)
        self.assertEqual(self.backends.pick(), b)
        self.clock.advance(1)
        self.assertEqual(self.backends.pick(), a)

    def test_cancelled_says_nothing(self) -> None:
        """
        A request its sender gave up neither fails nor clears a backend.
        """
        a, _ = self.backends.backends
        for _ in range(2):
            self.backends.finished(self._pick(a), False)
        self.backends.finished(self._pick(a), None)
        self.backends.finished(self._pick(a), False)
        self.assertEqual(self.backends.report()[0]["status"], "set_aside")

    def test_all_set_aside(self) -> None:
        """
        With every backend set aside, requests still go somewhere (the one
        that comes back first), so the client hears the upstream's error.
        """
        a, b = self.backends.backends
        for _ in range(3):
            self.backends.finished(self._pick(a), False)
        self.clock.advance(1)
        for _ in range(3):
            self.backends.finished(self._pick(b), False)
        self.assertEqual(self.backends.pick(), a)

    def test_metrics(self) -> None:
        registry = CollectorRegistry()
        backends = Backends(
            "mimir", ["http://10.0.0.1:8080"], self.clock,
            metrics=backend_metrics(registry).for_upstream("mimir", "pushes"),
            failures_to_set_aside=1,
        )
        labels = {"upstream": "mimir", "kind": "pushes", "backend": "10.0.0.1:8080"}
        self.assertEqual(registry.get_sample_value("sealgw_upstream_backend_up", labels), 1)
        backend = backends.pick()
        self.assertEqual(
            registry.get_sample_value("sealgw_upstream_backend_in_flight", labels), 1
        )
        backends.finished(backend, False)
        self.assertEqual(registry.get_sample_value("sealgw_upstream_backend_up", labels), 0)
        self.assertEqual(
            registry.get_sample_value("sealgw_upstream_backend_failures_total", labels), 1
        )

    def _pick(self, wanted: Backend) -> Backend:
        """
        Pick until C{wanted} comes, finishing the others well, once any
        failure of C{wanted} is old enough not to keep it from being
        picked.
        """
        self.clock.advance(5)
        for _ in range(10):
            backend = self.backends.pick()
            if backend == wanted:
                return backend
            self.backends.finished(backend, True)
        raise AssertionError(f"{wanted} never picked")


class ResolutionTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.resolver = ScriptedResolver()
        self.removed: list[Backend] = []
        self.backends = Backends(
            "mimir", ["https://mimir.example:8443/api"], self.clock, resolver=self.resolver,
            removed=self.removed.append,
        )

    def test_by_name_until_resolved(self) -> None:
        self.resolver.hold = True
        self.backends.start()
        (only,) = self.backends.backends
        self.assertEqual((only.host, only.address), ("mimir.example", None))
        self.assertEqual(only.label, "mimir.example:8443")

    def test_every_address(self) -> None:
        """
        A name is a backend per address, each keeping the name for its
        Host header and TLS.
        """
        self.resolver.answers["mimir.example"] = ["10.1.0.2", "10.1.0.1", "10.1.0.3"]
        self.backends.start()
        self.assertEqual(
            labels(self.backends.backends),
            ["10.1.0.1:8443", "10.1.0.2:8443", "10.1.0.3:8443"],
        )
        for backend in self.backends.backends:
            self.assertEqual(backend.host, "mimir.example")
            self.assertEqual(backend.host_header, b"mimir.example:8443")
        picked = {self.backends.pick().label for _ in range(3)}
        self.assertEqual(len(picked), 3)

    def test_resolved_again(self) -> None:
        """
        Every interval the name is resolved again: a new address gets
        traffic, one gone is forgotten (its owner told), the state of the
        others is kept.
        """
        self.resolver.answers["mimir.example"] = ["10.1.0.1", "10.1.0.2"]
        self.backends.start()
        first, second = self.backends.backends
        # The name, connected to by name until it resolved, is gone.
        self.assertEqual([(b.host, b.address) for b in self.removed], [("mimir.example", None)])
        self.removed.clear()
        self.backends.finished(self.backends.pick(), False)
        self.resolver.answers["mimir.example"] = ["10.1.0.2", "10.1.0.3"]
        self.clock.advance(30)
        self.assertEqual(self.resolver.asked, ["mimir.example", "mimir.example"])
        self.assertEqual(labels(self.backends.backends), ["10.1.0.2:8443", "10.1.0.3:8443"])
        self.assertEqual(self.removed, [first])
        # The request in flight to the address gone ends quietly.
        self.backends.finished(first, True)
        self.assertEqual(self.backends.report()[0]["consecutive_failures"], 0)

    def test_nothing_resolved_keeps_backends(self) -> None:
        """
        A failed lookup (no address) keeps what worked: a DNS outage does
        not take the upstream away.
        """
        self.resolver.answers["mimir.example"] = ["10.1.0.1"]
        self.backends.start()
        self.removed.clear()
        self.resolver.answers["mimir.example"] = []
        self.clock.advance(30)
        self.assertEqual(labels(self.backends.backends), ["10.1.0.1:8443"])
        self.assertEqual(self.removed, [])

    def test_resolver_raises(self) -> None:
        """
        A resolver that raises is logged, and the timer goes on: the next
        lookup that works is taken.
        """
        self.resolver.answers["mimir.example"] = ["10.1.0.1"]
        original = self.resolver.resolveHostName
        calls = [0]

        def flaky(*args: Any, **kwargs: Any) -> Any:
            calls[0] += 1
            if calls[0] == 1:
                raise OSError("resolver broken")
            return original(*args, **kwargs)

        self.resolver.resolveHostName = flaky  # type: ignore[method-assign]
        self.backends.start()
        self.assertEqual(len(self.flushLoggedErrors()), 0)
        self.assertEqual(labels(self.backends.backends), ["mimir.example:8443"])
        self.clock.advance(30)
        self.assertEqual(labels(self.backends.backends), ["10.1.0.1:8443"])

    def test_ipv4_preferred(self) -> None:
        self.resolver.answers["mimir.example"] = ["::1", "127.0.0.1"]
        self.backends.start()
        self.assertEqual(labels(self.backends.backends), ["127.0.0.1:8443"])
        self.resolver.answers["mimir.example"] = ["fd00::1"]
        self.clock.advance(30)
        self.assertEqual(labels(self.backends.backends), ["[fd00::1]:8443"])

    def test_stop(self) -> None:
        self.resolver.answers["mimir.example"] = ["10.1.0.1"]
        self.backends.start()
        self.backends.stop()
        self.clock.advance(300)
        self.assertEqual(self.resolver.asked, ["mimir.example"])

    def test_addresses_only_no_timer(self) -> None:
        backends = Backends("m", ["http://10.0.0.1"], self.clock, resolver=self.resolver)
        backends.start()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(self.resolver.asked, [])


class FakeResponse:
    def __init__(self, code: int) -> None:
        from twisted.web.http_headers import Headers

        self.code = code
        self.headers = Headers()
        self.length = 0


class ScriptedTreq:
    """
    Answers each request with the next of C{results}: a status, an
    exception, or L{None} to never answer.
    """

    def __init__(self, *results: Any) -> None:
        self.results = list(results)
        self.pending: list[Deferred[Any]] = []

    def request(self, method: str, url: Any, **kwargs: Any) -> Deferred[Any]:
        result = self.results.pop(0)
        if isinstance(result, int):
            d: Deferred[Any] = Deferred()
            d.callback(FakeResponse(result))
            return d
        if isinstance(result, Exception):
            d = Deferred()
            d.errback(result)
            return d
        d = Deferred()
        self.pending.append(d)
        return d


class ClientOutcomeTests(SynchronousTestCase):
    """
    What the client tells its backends of each request.
    """

    def client(self, treq: ScriptedTreq) -> tuple[HTTPClient, Backends, Clock]:
        clock = Clock()
        backends = Backends("m", ["http://10.0.0.1", "http://10.0.0.2"], clock,
                            failures_to_set_aside=1)
        return (
            HTTPClient(clock, name="m", treq=treq, backends=backends),  # type: ignore[arg-type]
            backends,
            clock,
        )

    def statuses(self, backends: Backends) -> list[Optional[str]]:
        return [r["status"] for r in backends.report()]

    def test_answered(self) -> None:
        client, backends, _ = self.client(ScriptedTreq(204, 400, 429, 500))
        for _ in range(4):
            self.successResultOf(client.request("POST", "http://10.0.0.1/x"))
        self.assertEqual(self.statuses(backends), ["ok", "ok"])
        self.assertEqual([r["in_flight"] for r in backends.report()], [0, 0])

    def test_unavailable(self) -> None:
        for status in (502, 503, 504):
            client, backends, _ = self.client(ScriptedTreq(status))
            self.successResultOf(client.request("POST", "http://10.0.0.1/x"))
            self.assertEqual(sorted(self.statuses(backends)), ["ok", "set_aside"])

    def test_connection_failed(self) -> None:
        client, backends, _ = self.client(ScriptedTreq(ierror.ConnectionRefusedError()))
        self.failureResultOf(client.request("POST", "http://10.0.0.1/x"))
        self.assertEqual(sorted(self.statuses(backends)), ["ok", "set_aside"])

    def test_timed_out(self) -> None:
        client, backends, clock = self.client(ScriptedTreq(None))
        d = client.request("POST", "http://10.0.0.1/x")
        clock.advance(client.timeouts.response)
        self.failureResultOf(d)
        self.assertEqual(sorted(self.statuses(backends)), ["ok", "set_aside"])

    def test_cancelled(self) -> None:
        client, backends, _ = self.client(ScriptedTreq(None))
        d = client.request("POST", "http://10.0.0.1/x")
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assertEqual(self.statuses(backends), ["ok", "ok"])
        self.assertEqual([r["in_flight"] for r in backends.report()], [0, 0])


class ForUpstreamTests(SynchronousTestCase):
    def test_backends_from_urls(self) -> None:
        clock = Clock()
        config = HTTPUpstreamConfig(
            name="mimir", urls=("http://10.0.0.1:9009/api", "http://10.0.0.2:9009/api")
        )
        client = HTTPClient.for_upstream(config, clock)
        assert client.backends is not None
        self.assertEqual(
            labels(client.backends.backends), ["10.0.0.1:9009", "10.0.0.2:9009"]
        )
        self.successResultOf(client.close())

    def test_names_resolved_off_the_request_path(self) -> None:
        """
        The reactor's resolver is asked from the client's first request on
        (a client made only to check a configuration leaves nothing
        running) and every interval after, and no more once it is closed.
        """
        clock = Clock()
        resolver = ScriptedResolver()
        resolver.answers["mimir"] = ["10.0.0.7"]
        clock.nameResolver = resolver  # type: ignore[attr-defined]
        client = HTTPClient.for_upstream(HTTPUpstreamConfig(name="m", url="http://mimir"), clock)
        assert client.backends is not None
        self.assertEqual(resolver.asked, [])
        self.assertEqual(clock.getDelayedCalls(), [])
        # The Clock cannot connect: the request fails, after resolving.
        client.request("GET", "http://mimir/api/v1/query").addErrback(lambda _: None)
        self.assertEqual(labels(client.backends.backends), ["10.0.0.7:80"])
        self.assertEqual(client.backends.backends[0].host_header, b"mimir")
        self.successResultOf(client.close())
        clock.advance(60)
        self.assertEqual(resolver.asked, ["mimir"])
