"""
The Entra ID refresher on a C{Clock}, its token requests answered in
memory (L{sealgw.testing.MemoryHTTPClient}): renewal on schedule and before
expiry, failures retried with backoff and jitter, a loop that survives
everything, one token request for a burst, the last good token until it
expires, and what C{/health}, C{/ready} and C{/metrics} say meanwhile.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Optional, cast

from prometheus_client import CollectorRegistry
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.logger import ILogObserver, LogEvent, formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from sealgw.config import Secret
from sealgw.credentials import ICredentials
from sealgw.credentials.azure import (
    EXPIRY_MARGIN,
    STARTUP_DEADLINE,
    AzureADCredentials,
    ClientSecretSource,
    NoToken,
    OutboundCredentials,
    TokenMetrics,
    TokenRefused,
    TokenRequest,
    TokenUnavailable,
    clock_duration,
    rfc3339,
)
from sealgw.credentials.azure._refresher import MAX_BACKOFF, backoff
from sealgw.daemon import Health
from sealgw.http import CredentialsUnavailable, HTTPClient
from sealgw.testing import MemoryHTTPClient, MemoryResponse, SentRequest

SECRET = "s3cret-never-shown"
START = 1_757_257_200.0  # 2025-09-07T15:00:00Z


def source() -> ClientSecretSource:
    return ClientSecretSource(
        "https://login.example", "tenant-1", "client-1", "https://monitor.azure.com/.default",
        secret=Secret(SECRET, "test"),
    )


def token_answer(value: str, expires_in: int = 3600, **more: Any) -> MemoryResponse:
    body = {"token_type": "Bearer", "expires_in": expires_in, "ext_expires_in": expires_in,
            "access_token": value, **more}
    return MemoryResponse(200, json.dumps(body).encode())


def refusal() -> MemoryResponse:
    return MemoryResponse(401, json.dumps({
        "error": "invalid_client",
        "error_description": "AADSTS7000215: Invalid client secret provided. Ensure ...",
    }).encode())


class Authority:
    """
    A token endpoint in memory: issues C{tok-1}, C{tok-2} ... unless told
    to fail or to hold its answers.
    """

    def __init__(self, lifetime: int = 3600) -> None:
        self.lifetime = lifetime
        self.issued = 0
        self.answer: Optional[Callable[[], Any]] = None
        self.held: list[Deferred[Any]] = []
        self.hold = False
        self.client = MemoryHTTPClient(self.handle)

    @property
    def requests(self) -> list[SentRequest]:
        return self.client.requests

    def handle(self, request: SentRequest) -> Any:
        if self.answer is not None:
            answer = self.answer()
        else:
            self.issued += 1
            answer = token_answer(f"tok-{self.issued}", self.lifetime)
        if self.hold:
            d: Deferred[Any] = Deferred()
            self.held.append(d)
            d.addCallback(lambda _: answer)
            return d
        return answer

    def release(self) -> None:
        held, self.held = self.held, []
        for d in held:
            d.callback(None)


class Jitter:
    def __init__(self, value: float = 0.0) -> None:
        self.value = value

    def __call__(self) -> float:
        return self.value


class RefresherTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(START)
        self.authority = Authority()
        self.registry = CollectorRegistry()
        self.jitter = Jitter(0.0)

    def credentials(self, **kwargs: Any) -> AzureADCredentials:
        self.registry = CollectorRegistry()
        credentials = AzureADCredentials(
            "azure", source(), self.authority.client, self.clock,
            metrics=TokenMetrics(self.registry), random=self.jitter, **kwargs,
        )
        return credentials

    def run_for(self, seconds: float, step: float = 0.25) -> None:
        """
        Let C{seconds} pass in small steps, so that timers set meanwhile
        run when they are due (C{Clock.advance} jumps).
        """
        self.clock.pump([step] * round(seconds / step))

    def started(self, **kwargs: Any) -> AzureADCredentials:
        credentials = self.credentials(**kwargs)
        credentials.startService()
        self.addCleanup(credentials.stopService)
        return credentials

    def bearer(self, credentials: AzureADCredentials) -> bytes:
        value = self.successResultOf(credentials.authorization())
        assert value is not None
        return value

    def metric(self, name: str) -> Optional[float]:
        return self.registry.get_sample_value(name, {"upstream": "azure"})

    def test_provides_credentials(self) -> None:
        self.assertTrue(ICredentials.providedBy(self.credentials()))

    def test_first_token_at_start(self) -> None:
        """
        The first token is asked for as the service starts, with the
        client credentials grant.
        """
        credentials = self.started()
        [request] = self.authority.requests
        self.assertEqual(request.method, "POST")
        self.assertEqual(request.url, "https://login.example/tenant-1/oauth2/v2.0/token")
        self.assertEqual(request.header("content-type"), "application/x-www-form-urlencoded")
        self.assertEqual(
            request.body,
            b"grant_type=client_credentials&client_id=client-1&scope="
            b"https%3A%2F%2Fmonitor.azure.com%2F.default&client_secret=s3cret-never-shown",
        )
        self.assertEqual(self.bearer(credentials), b"Bearer tok-1")
        self.assertIsNone(self.successResultOf(credentials.started))

    def test_refresh_every_interval(self) -> None:
        """
        A token that lives longer than twice the interval is renewed every
        C{refresh_interval}, by the loop.
        """
        self.authority.lifetime = 4 * 3600
        credentials = self.started(refresh_interval=1800)
        self.clock.advance(1799)
        self.assertEqual(len(self.authority.requests), 1)
        self.clock.advance(1)
        self.assertEqual(len(self.authority.requests), 2)
        self.assertEqual(self.bearer(credentials), b"Bearer tok-2")
        self.clock.advance(1800)
        self.assertEqual(len(self.authority.requests), 3)

    def test_refresh_before_expiry(self) -> None:
        """
        A token that would expire before the next round is renewed at half
        its lifetime, whatever the interval.
        """
        self.authority.lifetime = 600
        credentials = self.started(refresh_interval=1800)
        self.clock.advance(299)
        self.assertEqual(len(self.authority.requests), 1)
        self.clock.advance(1)
        self.assertEqual(len(self.authority.requests), 2)
        self.clock.advance(300)
        self.assertEqual(len(self.authority.requests), 3)
        self.assertEqual(self.bearer(credentials), b"Bearer tok-3")

    def test_refresh_in(self) -> None:
        """
        An authority's C{refresh_in} says when to renew.
        """
        self.authority.answer = lambda: token_answer("long", 86400, refresh_in=120)
        self.started()
        self.clock.advance(119)
        self.assertEqual(len(self.authority.requests), 1)
        self.clock.advance(1)
        self.assertEqual(len(self.authority.requests), 2)

    def test_backoff_with_jitter(self) -> None:
        """
        Failures are retried after a doubling step, half of it fixed and
        half random, capped at a minute.
        """
        self.authority.answer = lambda: MemoryResponse(503, b"{}")
        self.started()
        times = []
        for _ in range(10):
            before = len(self.authority.requests)
            waited = 0.0
            while len(self.authority.requests) == before:
                self.clock.advance(0.25)
                waited += 0.25
            times.append(waited)
        # Jitter 0: half of 1, 2, 4 ... 60 seconds.
        self.assertEqual(times, [0.5, 1, 2, 4, 8, 16, 30, 30, 30, 30])

    def test_backoff_function(self) -> None:
        self.assertEqual(backoff(1, MAX_BACKOFF, lambda: 0.0), 0.5)
        self.assertEqual(backoff(1, MAX_BACKOFF, lambda: 0.5), 0.75)
        self.assertEqual(backoff(3, MAX_BACKOFF, lambda: 0.999), 2 + 2 * 0.999)
        self.assertEqual(backoff(40, MAX_BACKOFF, lambda: 1.0), MAX_BACKOFF)
        self.assertEqual(backoff(40, 10.0, lambda: 0.0), 5.0)

    def test_jitter_spreads_retries(self) -> None:
        self.jitter.value = 0.5
        self.authority.answer = lambda: MemoryResponse(503, b"{}")
        self.started()
        self.clock.advance(0.74)
        self.assertEqual(len(self.authority.requests), 1)
        self.clock.advance(0.01)
        self.assertEqual(len(self.authority.requests), 2)

    def test_loop_survives_everything(self) -> None:
        """
        Connection failures, nonsense answers, a source that cannot make
        its request and an unexpected exception: the loop and the retries
        go on, and the next good answer is taken.
        """
        answers: list[Any] = [
            ConnectionError("refused"),
            MemoryResponse(200, b"not json"),
            MemoryResponse(200, b'{"token_type": "Bearer"}'),
            MemoryResponse(500, b"oops"),
        ]

        def next_answer() -> Any:
            if answers:
                return answers.pop(0)
            self.authority.answer = None
            return self.authority.handle(self.authority.requests[-1])

        self.authority.answer = next_answer
        credentials = self.started(refresh_interval=1800)
        self.run_for(60)
        self.assertEqual(self.bearer(credentials), b"Bearer tok-1")
        self.assertTrue(credentials._loop.running)

        original = credentials.source

        class Broken:
            kind = "client_secret"
            endpoint = "https://login.example/t"

            def describe(self) -> str:
                return "broken"

            def token_request(self, now: float) -> TokenRequest:
                raise RuntimeError("not foreseen")

        credentials.source = Broken()
        self.clock.advance(1800)
        errors = self.flushLoggedErrors(RuntimeError)
        self.assertEqual(len(errors), 1)
        self.assertEqual(credentials.last_error, "unexpected RuntimeError")
        self.assertTrue(credentials._loop.running)

        def explode() -> Deferred[None]:
            raise ValueError("even refresh itself")

        credentials.refresh = explode  # type: ignore[method-assign]
        self.clock.advance(1800)
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 2)
        self.assertTrue(credentials._loop.running)

        del credentials.refresh
        credentials.source = original
        self.clock.advance(1800)
        self.assertEqual(self.bearer(credentials), b"Bearer tok-2")

    def test_last_good_token_until_expiry(self) -> None:
        """
        While the authority fails, the last token is presented until it
        expires (less a margin); then requests fail without being sent,
        health turns down, and all is well again once a token comes.
        """
        credentials = self.started(refresh_interval=7200)
        self.authority.answer = lambda: MemoryResponse(503, b"{}")
        self.clock.advance(1800)  # the renewal at half its lifetime fails
        self.assertEqual(credentials.failures, 1)
        self.assertEqual(self.bearer(credentials), b"Bearer tok-1")
        self.assertEqual(credentials.health()["status"], "degraded")
        self.run_for(3600 - 1800 - EXPIRY_MARGIN - 1, step=0.5)
        self.assertGreater(credentials.failures, 10)
        self.assertEqual(self.bearer(credentials), b"Bearer tok-1")
        self.assertTrue(credentials.health()["token_valid"])
        self.clock.advance(1)
        failure = self.failureResultOf(credentials.authorization(), NoToken)
        self.assertGreaterEqual(failure.value.retry_after, 1.0)
        health = credentials.health()
        self.assertEqual(health["status"], "down")
        self.assertFalse(health["token_valid"])
        self.authority.answer = None
        self.run_for(MAX_BACKOFF)
        self.assertEqual(self.bearer(credentials), b"Bearer tok-2")
        self.assertEqual(credentials.health()["status"], "ok")

    def test_burst_shares_one_request(self) -> None:
        """
        Requests that find no token while one is being asked for wait for
        that one request, and all get its token.
        """
        self.authority.hold = True
        credentials = self.started()
        waiting = [credentials.authorization() for _ in range(20)]
        self.assertEqual(len(self.authority.requests), 1)
        for d in waiting:
            self.assertNoResult(d)
        self.authority.release()
        self.assertEqual({self.successResultOf(d) for d in waiting}, {b"Bearer tok-1"})
        self.assertEqual(len(self.authority.requests), 1)

    def test_burst_during_renewal_shares_one_request(self) -> None:
        credentials = self.started()
        self.authority.hold = True
        for _ in range(5):
            credentials.refresh()
        self.assertEqual(len(self.authority.requests), 2)
        self.authority.release()

    def test_cancelled_waiter_leaves_the_request(self) -> None:
        """
        One request giving up (its client went away) does not cancel the
        token request the others wait for.
        """
        self.authority.hold = True
        credentials = self.started()
        first, second = credentials.authorization(), credentials.authorization()
        first.cancel()
        self.failureResultOf(first)
        self.authority.release()
        self.assertEqual(self.successResultOf(second), b"Bearer tok-1")

    def test_no_token_fails_at_once_while_backing_off(self) -> None:
        """
        After a failure, requests are refused at once (no token request
        each), with the time until the next attempt, and counted.
        """
        self.authority.answer = lambda: MemoryResponse(503, b"{}")
        self.jitter.value = 0.0
        credentials = self.started()
        self.clock.advance(0.5)  # the first retry, failing too: next in 1s
        failure = self.failureResultOf(credentials.authorization(), NoToken)
        self.assertEqual(failure.value.retry_after, 1.0)
        self.failureResultOf(credentials.authorization(), NoToken)
        self.assertEqual(len(self.authority.requests), 2)
        self.assertEqual(self.metric("sealgw_outbound_requests_without_token_total"), 2)

    def test_failed_request_refuses_its_waiters(self) -> None:
        """
        Requests waiting for a token request that fails are refused, with
        the time until the next attempt.
        """
        self.authority.hold = True
        self.authority.answer = lambda: MemoryResponse(503, b"{}")
        credentials = self.started()
        waiting = [credentials.authorization() for _ in range(3)]
        self.authority.release()
        for d in waiting:
            self.assertEqual(self.failureResultOf(d, NoToken).value.retry_after, 1.0)
        self.assertEqual(len(self.authority.requests), 1)

    def test_http_client_refuses_with_retry_after(self) -> None:
        """
        Through the one HTTP client: no request is sent without a token,
        and the failure says when to try again.
        """
        self.authority.answer = lambda: MemoryResponse(503, b"{}")
        credentials = self.started()
        client = HTTPClient(self.clock, name="azure", credentials=credentials,
                            treq=_Unused())
        failure = self.failureResultOf(client.request("GET", "https://w/"),
                                       CredentialsUnavailable)
        self.assertEqual(failure.value.retry_after, 1.0)

    def test_refused_at_start(self) -> None:
        """
        An authority that refuses the settings decides start-up at once.
        """
        self.authority.answer = refusal
        credentials = self.started()
        error = self.successResultOf(credentials.started)
        assert isinstance(error, TokenRefused)
        self.assertEqual(
            str(error), "refused: 401 invalid_client: AADSTS7000215: Invalid client secret "
            "provided.",
        )
        self.assertEqual(
            credentials.cannot_start(error),
            "cannot get an Entra ID token for upstream 'azure': client secret (tenant "
            "tenant-1, client client-1, secret from test) at "
            "https://login.example/tenant-1/oauth2/v2.0/token: refused: 401 invalid_client: "
            "AADSTS7000215: Invalid client secret provided.",
        )
        # The loop goes on all the same (start_degraded lets it).
        self.clock.advance(0.5)
        self.assertEqual(len(self.authority.requests), 2)

    def test_transient_failures_at_start(self) -> None:
        """
        Failures that may pass are retried for a while before start-up is
        given up.
        """
        self.authority.answer = lambda: MemoryResponse(503, b"{}")
        credentials = self.started()
        self.run_for(STARTUP_DEADLINE - 1)
        self.assertEqual(len(self.authority.requests), 6)  # at 0, .5, 1.5, 3.5, 7.5, 15.5
        self.assertNoResult(credentials.started)
        self.run_for(MAX_BACKOFF)
        self.assertIsInstance(self.successResultOf(credentials.started), TokenUnavailable)

    def test_recovery_at_start(self) -> None:
        answers = [MemoryResponse(503, b"{}"), MemoryResponse(429, b"{}")]
        self.authority.answer = lambda: answers.pop(0) if answers else token_answer("t")
        credentials = self.started()
        self.run_for(10)
        self.assertIsNone(self.successResultOf(credentials.started))
        self.assertEqual(len(self.authority.requests), 3)

    def test_stop(self) -> None:
        """
        Stopping cancels the request in flight and every timer.
        """
        self.authority.hold = True
        credentials = self.credentials()
        credentials.startService()
        waiting = credentials.authorization()
        self.successResultOf(credentials.stopService())
        self.failureResultOf(waiting, NoToken)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.authority.answer = lambda: MemoryResponse(503, b"{}")
        credentials = self.credentials()
        credentials.startService()
        self.assertTrue(self.clock.getDelayedCalls())
        self.successResultOf(credentials.stopService())
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_health(self) -> None:
        credentials = self.started()
        self.clock.advance(15.123456)
        self.assertEqual(credentials.health(), {
            "status": "ok",
            "source": "client_secret",
            "token_valid": True,
            "expires_at": "2025-09-07T16:00:00Z",
            "time_to_expiry": "0:59:44.876544",
            "last_refresh": "2025-09-07T15:00:00Z",
            "last_error": None,
            "consecutive_failures": 0,
        })
        self.assertEqual(credentials.sidecar_fields(True), {
            "status": "healthy",
            "token_valid": True,
            "expires_at": "2025-09-07T16:00:00Z",
            "time_to_expiry": "0:59:44.876544",
            "timestamp": "2025-09-07T15:00:15Z",
        })

    def test_health_before_any_token(self) -> None:
        self.authority.answer = refusal
        credentials = self.started()
        self.assertEqual(credentials.health(), {
            "status": "down",
            "source": "client_secret",
            "token_valid": False,
            "expires_at": None,
            "time_to_expiry": None,
            "last_refresh": None,
            "last_error": "refused: 401 invalid_client: AADSTS7000215: Invalid client secret "
                          "provided.",
            "consecutive_failures": 1,
        })
        self.assertEqual(credentials.sidecar_fields(False)["status"], "unhealthy")

    def test_metrics(self) -> None:
        self.assertEqual(self.metric("sealgw_outbound_token_refreshes_total"), None)
        credentials = self.started()
        self.assertEqual(self.metric("sealgw_outbound_token_refreshes_total"), 1)
        self.assertEqual(
            self.metric("sealgw_outbound_token_expiry_timestamp_seconds"), START + 3600
        )
        self.assertEqual(self.metric("sealgw_outbound_token_refresh_failures_total"), 0)
        self.authority.answer = lambda: MemoryResponse(503, b"{}")
        self.clock.advance(1800)
        self.assertEqual(self.metric("sealgw_outbound_token_refresh_failures_total"), 1)
        self.assertEqual(self.metric("sealgw_outbound_requests_without_token_total"), 0)
        del credentials

    def test_token_and_secret_never_logged(self) -> None:
        """
        Neither the token nor the secret is in any log event, nor in what
        health or the start-up line say.
        """
        events: list[LogEvent] = []
        observer = cast(ILogObserver, events.append)
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        self.authority.answer = lambda: token_answer("tok-visible-nowhere", 600)
        credentials = self.started()
        self.authority.answer = refusal
        self.clock.advance(300)
        self.authority.answer = lambda: MemoryResponse(503, b"tok-visible-nowhere")
        self.clock.advance(60)
        text = "\n".join(
            [formatEvent(e) + repr(e) for e in events]
            + [repr(credentials.health()), repr(credentials.token), repr(credentials.source)]
        )
        self.assertIn("got an Entra ID token", text)
        self.assertIn("no Entra ID token", text)
        self.assertNotIn("tok-visible-nowhere", text)
        self.assertNotIn(SECRET, text)


class _Unused:
    def request(self, method: str, url: Any, **kwargs: Any) -> Deferred[Any]:
        raise AssertionError("nothing may be sent without a token")


class ServiceTests(SynchronousTestCase):
    """
    L{OutboundCredentials}: start-up decided per upstream, and what
    C{/health} and C{/ready} are told.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(START)
        self.fatal: list[str] = []
        self.events: list[LogEvent] = []
        observer = cast(ILogObserver, self.events.append)
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)

    def credential(self, name: str, answer: Callable[[], Any], **kwargs: Any) -> Any:
        client = MemoryHTTPClient(lambda r: answer())
        return AzureADCredentials(
            name, source(), client, self.clock, metrics=TokenMetrics(CollectorRegistry()),
            random=lambda: 0.0, **kwargs,
        )

    def service(self, **credentials: AzureADCredentials) -> OutboundCredentials:
        service = OutboundCredentials(credentials, self.fatal.append)
        service.startService()
        self.addCleanup(service.stopService)
        return service

    def lines(self, level: str) -> list[str]:
        return [formatEvent(e) for e in self.events if e["log_level"].name == level]

    def test_fatal_on_refusal(self) -> None:
        """
        One critical line naming the upstream and why, and the daemon is
        told to end.
        """
        self.service(azure=self.credential("azure", refusal))
        expected = (
            "cannot get an Entra ID token for upstream 'azure': client secret (tenant "
            "tenant-1, client client-1, secret from test) at "
            "https://login.example/tenant-1/oauth2/v2.0/token: refused: 401 invalid_client: "
            "AADSTS7000215: Invalid client secret provided."
        )
        self.assertEqual(self.fatal, [expected])
        self.assertEqual(self.lines("critical"), [expected])
        self.assertEqual(self.lines("warn"), [])

    def test_start_degraded(self) -> None:
        """
        With C{start_degraded} a warning instead, and it goes on trying.
        """
        self.service(azure=self.credential("azure", refusal, start_degraded=True))
        self.assertEqual(self.fatal, [])
        [line] = self.lines("warn")
        self.assertTrue(line.startswith("cannot get an Entra ID token for upstream 'azure'"))
        self.assertIn("(start_degraded)", line)

    def test_no_fatal_on_success(self) -> None:
        self.service(azure=self.credential("azure", lambda: token_answer("t")))
        self.assertEqual(self.fatal, [])

    def test_when_started(self) -> None:
        """
        C{when_started} fires once every credential has its first token,
        or has none and may run without: what lets a worker say it serves.
        """
        answers: list[Any] = []
        pending = self.credential(
            "pending", lambda: answers.pop(0) if answers else MemoryResponse(503, b"{}")
        )
        service = self.service(
            ok=self.credential("ok", lambda: token_answer("t")),
            degraded=self.credential("degraded", refusal, start_degraded=True),
            pending=pending,
        )
        started = service.when_started()
        self.assertNoResult(started)
        answers.append(token_answer("t"))
        self.clock.advance(MAX_BACKOFF)
        self.assertIsNone(self.successResultOf(started))
        # Asked again later, it has already happened.
        self.assertIsNone(self.successResultOf(service.when_started()))

    def test_never_started_when_fatal(self) -> None:
        service = self.service(azure=self.credential("azure", refusal))
        self.assertNoResult(service.when_started())
        self.assertEqual(len(self.fatal), 1)

    def test_health_and_ready(self) -> None:
        """
        C{/health} is 503 while a credential holds no valid token and 200
        again once it does; C{/ready} follows; with one credential the
        sidecar's fields are at the top.
        """
        answers: list[Any] = []
        credential = self.credential(
            "azure", lambda: answers.pop(0) if answers else MemoryResponse(503, b"{}"),
            start_degraded=True,
        )
        service = self.service(azure=credential)
        health = Health()
        health.register("credentials", lambda: {"status": _worst(service.health()),
                                                **service.health()})
        health.require_for_ready("credentials", service.ready)
        health.add_top_level(service.sidecar_fields)

        healthy, report = health.report()
        self.assertFalse(healthy)
        self.assertEqual(report["status"], "unhealthy")
        self.assertIs(report["token_valid"], False)
        self.assertEqual(health.readiness(), (False, {"credentials": False}))

        answers.append(token_answer("t", 600))
        self.clock.advance(MAX_BACKOFF)
        healthy, report = health.report()
        self.assertTrue(healthy)
        self.assertEqual(report["status"], "healthy")
        self.assertEqual(report["timestamp"], rfc3339(self.clock.seconds()))
        self.assertEqual(report["components"]["credentials"]["azure"]["status"], "ok")
        self.assertEqual(health.readiness(), (True, {"credentials": True}))

        self.clock.advance(600)  # renewals fail; the token expires
        healthy, report = health.report()
        self.assertFalse(healthy)
        self.assertEqual(report["status"], "unhealthy")
        self.assertEqual(report["time_to_expiry"], "0:00:00.000000")

    def test_two_credentials_no_sidecar_fields(self) -> None:
        service = self.service(
            a=self.credential("a", lambda: token_answer("t")),
            b=self.credential("b", lambda: token_answer("u")),
        )
        self.assertEqual(service.sidecar_fields(True), {})
        self.assertTrue(service.ready())
        self.assertEqual(sorted(service.health()), ["a", "b"])
        self.assertEqual(len(service), 2)


def _worst(states: dict[str, Any]) -> str:
    order = ["ok", "degraded", "down"]
    return max((s["status"] for s in states.values()), key=order.index, default="ok")


class FormatTests(SynchronousTestCase):
    def test_clock_duration(self) -> None:
        self.assertEqual(clock_duration(1785.123456), "0:29:45.123456")
        self.assertEqual(clock_duration(0), "0:00:00.000000")
        self.assertEqual(clock_duration(-5), "0:00:00.000000")
        self.assertEqual(clock_duration(90061.5), "25:01:01.500000")

    def test_rfc3339(self) -> None:
        self.assertEqual(rfc3339(1757259000.9), "2025-09-07T15:30:00Z")


class HealthTopLevelTests(SynchronousTestCase):
    def test_broken_fields_do_not_break_health(self) -> None:
        """
        Top-level fields that cannot be had make the report unhealthy, as
        a broken check does, rather than failing C{/health}.
        """
        health = Health()
        health.register("x", lambda: {"status": "ok"})

        def broken(healthy: bool) -> dict[str, Any]:
            raise RuntimeError("no")

        health.add_top_level(broken)
        healthy, report = health.report()
        self.assertFalse(healthy)
        self.assertEqual(report["status"], "down")

    def test_fields_over_own_keys(self) -> None:
        health = Health()
        health.add_top_level(lambda healthy: {"status": "healthy" if healthy else "no", "a": 1})
        self.assertEqual(health.report(), (True, {"status": "healthy", "a": 1,
                                                  "components": {}}))
