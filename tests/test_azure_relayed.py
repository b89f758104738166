"""
Entra ID tokens with workers, on a C{Clock}: a worker's relayed
credentials (token arrives, expires, is renewed; none yet is the 503 the
HTTP client gives for credentials unavailable; start-up decided as a
refresher's is), the main process's relay through the supervisor to
every worker (one token request per refresh however many workers), and
the control channel's messages, which never log their content.
"""

from __future__ import annotations

import json
import os
from typing import Any, Optional, cast

from prometheus_client import CollectorRegistry
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import ILogObserver, LogEvent, Logger, formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from sealgw.config import read
from sealgw.credentials import ICredentials
from sealgw.credentials.azure import (
    EXPIRY_MARGIN,
    RELAY_MARGIN,
    STARTUP_DEADLINE,
    AzureADCredentials,
    NoToken,
    OutboundCredentials,
    RelayedCredentials,
    RelayedTokens,
    TokenMetrics,
    TokenUnavailable,
    build_relayed_credentials,
    describe_for_workers,
    read_state,
    rfc3339,
)
from sealgw.credentials.azure._refresher import without_token_counter
from sealgw.daemon._handoff import FROM_MAIN, OUTBOUND_TOKENS, encode_message
from sealgw.daemon._supervisor import Supervisor
from sealgw.daemon._tokens import TokenRelay
from sealgw.daemon._view import ControlChannel
from sealgw.http import CredentialsUnavailable, HTTPClient
from sealgw.testing import MemoryResponse
from tests.test_credentials_azure import START, Authority, _Unused, source
from tests.test_daemon_workers import FakeLauncher, FakeProcess, end, serve

TOKEN = "tok-relayed-0123456789"


def entry(
    token: Optional[str] = TOKEN,
    expires_at: Optional[float] = START + 3600,
    **more: Any,
) -> dict[str, Any]:
    """
    One upstream's entry as the main process describes it.
    """
    described: dict[str, Any] = {
        "source": "client_secret",
        "token": token,
        "expires_at": expires_at if token is not None else None,
        "last_refresh": START,
        "last_error": None,
        "consecutive_failures": 0,
        "refreshes": 1,
        "failures": 0,
        "next_attempt": None,
        "start_failed": False,
    }
    described.update(more)
    return described


class RelayedCredentialsTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(START)
        self.registry = CollectorRegistry()
        self.counter = without_token_counter(self.registry)

    def relayed(self, **kwargs: Any) -> RelayedCredentials:
        credential = RelayedCredentials("azure", self.clock, self.counter, **kwargs)
        credential.startService()
        self.addCleanup(credential.stopService)
        return credential

    def bearer(self, credential: RelayedCredentials) -> Optional[bytes]:
        return self.successResultOf(credential.authorization())

    def without_token(self) -> Optional[float]:
        return self.registry.get_sample_value(
            "sealgw_outbound_requests_without_token_total", {"upstream": "azure"}
        )

    def test_provides_credentials(self) -> None:
        self.assertTrue(ICredentials.providedBy(self.relayed()))

    def test_no_token_yet(self) -> None:
        """
        Before the main process's first word: no request is sent, the HTTP
        client fails it as credentials unavailable (a 503) with a
        Retry-After, counted; /health says down, and why.
        """
        credential = self.relayed()
        client = HTTPClient(self.clock, name="azure", credentials=credential, treq=_Unused())
        failure = self.failureResultOf(client.request("GET", "https://w/"),
                                       CredentialsUnavailable)
        self.assertEqual(failure.value.retry_after, 1.0)
        self.assertEqual(self.without_token(), 1)
        health = credential.health()
        self.assertEqual(health["status"], "down")
        self.assertIs(health["token_valid"], False)
        self.assertEqual(health["last_error"], "no word from the main process yet")
        self.assertNoResult(credential.started)

    def test_token_arrives_expires_and_is_renewed(self) -> None:
        """
        The token handed over is presented while valid; once within
        EXPIRY_MARGIN of its expiry it is not, and requests fail at once
        with Retry-After the main process's next attempt; a renewed one is
        presented from the moment it arrives.
        """
        credential = self.relayed()
        credential.update(read_state(entry(expires_at=START + 600)))
        self.assertIsNone(self.successResultOf(credential.started))
        self.assertEqual(self.bearer(credential), b"Bearer " + TOKEN.encode())
        self.assertEqual(credential.health()["status"], "ok")
        self.assertEqual(credential.health()["expires_at"], rfc3339(START + 600))

        self.clock.advance(600 - EXPIRY_MARGIN - 1)
        self.assertEqual(self.bearer(credential), b"Bearer " + TOKEN.encode())
        self.clock.advance(1)
        self.assertEqual(self.without_token(), 0)
        # The main process failed to renew it; it tries again in 8s.
        credential.update(read_state(entry(
            expires_at=START + 600, last_error="answered 503", consecutive_failures=2,
            failures=2, next_attempt=self.clock.seconds() + 8,
        )))
        failure = self.failureResultOf(credential.authorization(), NoToken)
        self.assertEqual(failure.value.retry_after, 8)
        self.assertNotIn(TOKEN, str(failure.value))
        self.assertEqual(self.without_token(), 1)
        health = credential.health()
        self.assertEqual(health["status"], "down")
        self.assertEqual(health["last_error"], "answered 503")
        self.assertEqual(health["consecutive_failures"], 2)

        credential.update(read_state(entry(
            "tok-renewed", expires_at=self.clock.seconds() + 3600, refreshes=2, failures=2,
        )))
        self.assertEqual(self.bearer(credential), b"Bearer tok-renewed")
        self.assertEqual(credential.health()["status"], "ok")

    def test_retry_after_at_least_a_second(self) -> None:
        credential = self.relayed()
        credential.update(read_state(entry(None, next_attempt=START - 5)))
        self.assertEqual(self.failureResultOf(credential.authorization()).value.retry_after, 1)

    def test_expired_token_does_not_start(self) -> None:
        """
        A token handed over that is no longer valid does not make a worker
        serve.
        """
        credential = self.relayed()
        credential.update(read_state(entry(expires_at=START + EXPIRY_MARGIN)))
        self.assertNoResult(credential.started)
        self.assertEqual(credential.health()["status"], "down")

    def test_deadline(self) -> None:
        """
        No valid token within the main process's own start-up deadline and
        a margin: start-up ends, saying why, with the main process's last
        error.
        """
        credential = self.relayed()
        credential.update(read_state(entry(None, last_error="answered 503")))
        self.clock.advance(STARTUP_DEADLINE + RELAY_MARGIN - 0.5)
        self.assertNoResult(credential.started)
        self.clock.advance(0.5)
        error = self.successResultOf(credential.started)
        self.assertIsInstance(error, TokenUnavailable)
        self.assertEqual(
            credential.cannot_start(error),  # type: ignore[arg-type]
            "cannot get an Entra ID token for upstream 'azure': no valid token from the main "
            "process within 35s; its last error: answered 503",
        )

    def test_token_after_start_cancels_deadline(self) -> None:
        credential = self.relayed()
        credential.update(read_state(entry()))
        self.clock.advance(STARTUP_DEADLINE + RELAY_MARGIN)
        self.assertIsNone(self.successResultOf(credential.started))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_main_start_failed(self) -> None:
        """
        When the main process's start-up ended without a token: a worker
        for an upstream with start_degraded serves at once (degraded);
        one without waits (the main process is ending the daemon).
        """
        degraded = self.relayed(start_degraded=True)
        strict = self.relayed()
        failed = read_state(entry(None, last_error="answered 503", start_failed=True))
        degraded.update(failed)
        strict.update(failed)
        error = self.successResultOf(degraded.started)
        self.assertIsInstance(error, TokenUnavailable)
        self.assertIn("the main process has none: answered 503", str(error))
        self.assertNoResult(strict.started)

    def test_stop_cancels_deadline(self) -> None:
        credential = RelayedCredentials("azure", self.clock, self.counter)
        credential.startService()
        self.successResultOf(credential.stopService())
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_sidecar_fields(self) -> None:
        credential = self.relayed()
        credential.update(read_state(entry()))
        self.clock.advance(60)
        self.assertEqual(credential.sidecar_fields(True), {
            "status": "healthy",
            "token_valid": True,
            "expires_at": rfc3339(START + 3600),
            "time_to_expiry": "0:59:00.000000",
            "timestamp": rfc3339(START + 60),
        })


class ReadStateTests(SynchronousTestCase):
    def test_round_trip(self) -> None:
        state = read_state(json.loads(json.dumps(entry())))
        assert state.token is not None
        self.assertEqual((state.token.value, state.token.expires_at), (TOKEN, START + 3600))
        self.assertNotIn(TOKEN, repr(state))

    def test_refused(self) -> None:
        """
        Entries that are not one are refused, the reason never holding
        the token.
        """
        for bad in (
            [],
            entry(expires_at=None),
            entry(token=""),
            entry(token=7),
            entry(expires_at="soon"),
            entry(refreshes=-1),
            entry(consecutive_failures=True),
            entry(source=None),
            entry(last_error=3),
        ):
            with self.assertRaises(ValueError) as caught:
                read_state(bad)
            self.assertNotIn(TOKEN, str(caught.exception))


class RelayedTokensTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(START)
        self.fatal: list[str] = []
        self.events: list[LogEvent] = []
        observer = cast(ILogObserver, self.events.append)
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        self.registry = CollectorRegistry()

    def tokens(self, **upstreams: bool) -> RelayedTokens:
        """
        A worker's relayed credentials, for upstreams named with their
        start_degraded.
        """
        config = read({
            "listeners": [{"endpoint": "tcp:0"}],
            "upstreams": {
                name: {"url": "https://workspace.example", "azure_ad": {
                    "source": "managed_identity", "start_degraded": degraded,
                }}
                for name, degraded in upstreams.items()
            } | {"plain": {"url": "https://plain.example"}},
        })
        self.registry = CollectorRegistry()
        tokens = build_relayed_credentials(
            config.upstreams, self.clock, registry=self.registry, on_fatal=self.fatal.append
        )
        tokens.startService()
        self.addCleanup(tokens.stopService)
        return tokens

    def lines(self) -> str:
        return "\n".join(formatEvent(e) + repr(e) for e in self.events)

    def test_built_from_configuration(self) -> None:
        tokens = self.tokens(azure=False, other=True)
        self.assertEqual(sorted(tokens.credentials), ["azure", "other"])
        self.assertTrue(tokens.credentials["other"].start_degraded)
        self.assertEqual(sorted(tokens.by_upstream), ["azure", "other"])
        self.assertEqual(len(self.tokens()), 0)

    def test_update_and_when_started(self) -> None:
        """
        Each upstream takes its entry; a worker starts once every one has
        a token; entries of upstreams it does not know are ignored.
        """
        tokens = self.tokens(azure=False, other=False)
        started = tokens.when_started()
        tokens.update({"azure": entry(), "unknown": entry()})
        self.assertNoResult(started)
        self.assertFalse(tokens.ready())
        tokens.update({"azure": entry(), "other": entry("tok-other")})
        self.successResultOf(started)
        self.assertTrue(tokens.ready())
        self.assertEqual(self.successResultOf(tokens.credentials["other"].authorization()),
                         b"Bearer tok-other")
        self.assertEqual(tokens.health()["azure"]["status"], "ok")

    def test_unreadable_entry_logged_without_content(self) -> None:
        tokens = self.tokens(azure=False)
        tokens.update({"azure": entry()})
        tokens.update({"azure": entry(expires_at="tok-in-the-wrong-place-" + TOKEN)})
        # The state before stays.
        self.assertEqual(self.successResultOf(tokens.credentials["azure"].authorization()),
                         b"Bearer " + TOKEN.encode())
        text = self.lines()
        self.assertIn("unreadable token state from the main process: expires_at is not a "
                      "number", text)
        self.assertNotIn(TOKEN, text)

    def test_deadline_ends_start_up(self) -> None:
        """
        A worker with no token in time ends its start-up as today: one
        critical line and on_fatal (a worker's exit FAILED_TO_START); with
        start_degraded, a warning and it serves.
        """
        tokens = self.tokens(azure=False, other=True)
        started = tokens.when_started()
        tokens.update({"azure": entry()})
        self.clock.advance(STARTUP_DEADLINE + RELAY_MARGIN)
        self.assertEqual(self.fatal, [])
        self.successResultOf(started)
        self.assertIn("upstream 'other': no valid token from the main process within 35s",
                      self.lines())

        strict = self.tokens(azure=False)
        strict_started = strict.when_started()
        self.clock.advance(STARTUP_DEADLINE + RELAY_MARGIN)
        self.assertEqual(self.fatal, [
            "cannot get an Entra ID token for upstream 'azure': no valid token from the main "
            "process within 35s"
        ])
        self.assertNoResult(strict_started)

    def test_metrics_from_the_main_process(self) -> None:
        """
        The refreshers' series are the main process's counts (once for
        the daemon, whatever the workers); requests without a token are
        this worker's own.
        """
        tokens = self.tokens(azure=False)
        registry = CollectorRegistry()
        registry.register(tokens)
        self.assertEqual(registry.get_sample_value(
            "sealgw_outbound_token_refreshes_total", {"upstream": "azure"}), 0)
        self.assertIsNone(registry.get_sample_value(
            "sealgw_outbound_token_expiry_timestamp_seconds", {"upstream": "azure"}))
        tokens.update({"azure": entry(refreshes=3, failures=2)})
        samples = {
            (name, labels["upstream"]): value
            for family in registry.collect()
            for name, labels, value, *_ in family.samples
        }
        self.assertEqual(samples, {
            ("sealgw_outbound_token_expiry_timestamp_seconds", "azure"): START + 3600,
            ("sealgw_outbound_token_refreshes_total", "azure"): 3,
            ("sealgw_outbound_token_refresh_failures_total", "azure"): 2,
        })
        self.assertEqual(self.registry.get_sample_value(
            "sealgw_outbound_requests_without_token_total", {"upstream": "azure"}), 0)


class RelayTests(SynchronousTestCase):
    """
    The main process's refresher, its relay and supervisor, and two
    workers' relayed credentials fed what the supervisor wrote to their
    pipes: all on one Clock.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(START)
        self.authority = Authority(lifetime=600)
        self.refresher = AzureADCredentials(
            "azure", source(), self.authority.client, self.clock,
            metrics=TokenMetrics(CollectorRegistry()), random=lambda: 0.0,
        )
        self.main = OutboundCredentials({"azure": self.refresher})
        self.launcher = FakeLauncher()
        self.supervisor = Supervisor(2, self.launcher, self.clock, drain_grace=1.0)
        self.relay = TokenRelay(self.main, self.supervisor)
        self.registry = CollectorRegistry()
        self.counter = without_token_counter(self.registry)
        self.workers: dict[int, RelayedCredentials] = {}
        self.read: dict[int, int] = {}

    def worker(self, index: int) -> RelayedCredentials:
        """
        Worker C{index}'s credential, given every message written to its
        latest process since last asked.
        """
        credential = self.workers.get(index)
        if credential is None:
            credential = self.workers[index] = RelayedCredentials(
                "azure", self.clock, self.counter
            )
            credential.startService()
            self.addCleanup(credential.stopService)
        transport = self.launcher.latest(index)[1]
        for message in self.messages(transport)[self.read.get(id(transport), 0):]:
            credential.update(read_state(message["body"]["azure"]))
        self.read[id(transport)] = len(self.messages(transport))
        return credential

    def messages(self, transport: FakeProcess) -> list[dict[str, Any]]:
        written = [json.loads(data) for fd, data in transport.written if fd == FROM_MAIN]
        return [m for m in written if m.get("kind") == OUTBOUND_TOKENS]

    def start(self) -> None:
        self.main.startService()
        self.addCleanup(self.main.stopService)
        self.supervisor.startService()
        self.supervisor.start()

    def bearer(self, index: int) -> Optional[bytes]:
        return self.successResultOf(self.worker(index).authorization())

    def test_one_request_per_refresh_for_every_worker(self) -> None:
        """
        Two workers, one token request per refresh: each token reaches both
        as it is had, and both present it.
        """
        self.start()
        self.assertEqual(len(self.authority.requests), 1)
        self.assertEqual(self.bearer(0), b"Bearer tok-1")
        self.assertEqual(self.bearer(1), b"Bearer tok-1")
        # Renewed at half its lifetime.
        self.clock.advance(300)
        self.assertEqual(len(self.authority.requests), 2)
        self.assertEqual(self.bearer(0), b"Bearer tok-2")
        self.assertEqual(self.bearer(1), b"Bearer tok-2")
        self.clock.advance(300)
        self.assertEqual(len(self.authority.requests), 3)
        self.assertEqual(self.bearer(1), b"Bearer tok-3")
        self.assertEqual(self.worker(1).health()["status"], "ok")

    def test_worker_started_before_the_first_token(self) -> None:
        """
        Workers launched while the main process's first request is in
        flight are told nothing usable yet, then the token when it comes.
        """
        self.authority.hold = True
        self.start()
        self.assertNoResult(self.worker(0).started)
        self.authority.release()
        self.assertIsNone(self.successResultOf(self.worker(0).started))
        self.assertIsNone(self.successResultOf(self.worker(1).started))
        self.assertEqual(len(self.authority.requests), 1)

    def test_restarted_worker_is_given_the_current_token(self) -> None:
        """
        A worker started later gets the current token right after its
        setup, with no token request made for it.
        """
        self.start()
        self.clock.advance(300)
        process, transport = self.launcher.latest(0)
        serve(process)
        end(process)
        self.workers.pop(0, None)
        self.clock.advance(1)
        self.assertEqual(len(self.launcher.launched), 3)
        # The token message follows the setup; nothing else came first.
        new_transport = self.launcher.latest(0)[1]
        self.assertNotEqual(new_transport, transport)
        self.assertEqual(len(self.messages(new_transport)), 1)
        self.assertEqual(self.bearer(0), b"Bearer tok-2")
        self.assertEqual(len(self.authority.requests), 2)

    def test_failures_reported_to_workers(self) -> None:
        """
        A failed renewal reaches the workers' /health, with when the main
        process tries again as their Retry-After once the token lapses.
        """
        self.start()
        self.authority.answer = lambda: MemoryResponse(503, b"{}")
        self.clock.advance(300)
        health = self.worker(0).health()
        self.assertEqual(health["status"], "degraded")
        self.assertEqual(health["last_error"], "answered 503")
        self.assertEqual(health["consecutive_failures"], 1)
        self.clock.pump([1.0] * (300 - int(EXPIRY_MARGIN)))
        failure = self.failureResultOf(self.worker(1).authorization(), NoToken)
        next_attempt = self.refresher.next_attempt()
        assert next_attempt is not None
        self.assertEqual(failure.value.retry_after,
                         max(1.0, next_attempt - self.clock.seconds()))

    def test_nothing_for_a_stopped_refresher(self) -> None:
        """
        A refresher's request cancelled as it stops tells the workers
        nothing: each has only the greeting it was launched with.
        """
        self.authority.hold = True
        self.start()
        self.successResultOf(self.main.stopService())
        for _, _, transport in self.launcher.launched:
            [greeting] = self.messages(transport)
            self.assertIsNone(greeting["body"]["azure"]["token"])

    def test_describe_for_workers(self) -> None:
        self.start()
        [described] = describe_for_workers({"azure": self.refresher}).values()
        self.assertEqual(described["token"], "tok-1")
        self.assertEqual(described["expires_at"], START + 600)
        self.assertEqual(described["refreshes"], 1)
        self.assertEqual(described["next_attempt"], START + 300)
        self.assertIs(described["start_failed"], False)
        self.assertEqual(read_state(described).token.value, "tok-1")  # type: ignore[union-attr]


class ControlChannelMessagesTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.os = os
        self.read, self.write = os.pipe()
        self.addCleanup(os.close, self.read)
        self.addCleanup(os.close, self.write)
        self.states: list[dict[str, Any]] = []
        self.tokens: list[dict[str, Any]] = []
        self.events: list[LogEvent] = []
        self.channel = ControlChannel(
            self.read, self.states.append, lambda: None,
            handlers={OUTBOUND_TOKENS: self.tokens.append},
        )
        self.channel.log = Logger(observer=cast(ILogObserver, self.events.append))

    def send(self, data: bytes) -> None:
        self.os.write(self.write, data)
        self.assertIsNone(self.channel.doRead())

    def test_every_message_handled(self) -> None:
        """
        Messages of a kind go to its handler, every one in order; the
        daemon's state (no kind) is taken as before, the latest only.
        """
        self.send(
            encode_message(OUTBOUND_TOKENS, {"n": 1})
            + b'{"serving": 1}\n'
            + encode_message(OUTBOUND_TOKENS, {"n": 2})
            + b'{"serving": 2}\n'
        )
        self.assertEqual(self.tokens, [{"n": 1}, {"n": 2}])
        self.assertEqual(self.states, [{"serving": 2}])

    def test_nothing_logged_of_a_line(self) -> None:
        """
        A line that cannot be read, or of a kind not known, is logged
        without its content (it may hold a token); a handler that fails
        leaves the channel reading.
        """
        self.send(b'{"kind": "outbound_tokens", "body": {"azure": "' + TOKEN.encode() + b'"\n')
        self.send(b'{"kind": "mystery", "body": {"token": "' + TOKEN.encode() + b'"}}\n')
        self.channel._handlers[OUTBOUND_TOKENS] = lambda body: 1 / 0  # type: ignore[misc]
        self.send(encode_message(OUTBOUND_TOKENS, {"azure": TOKEN}))
        text = "\n".join(formatEvent(e) for e in self.events)
        self.assertIn("unreadable line", text)
        self.assertIn("unknown message from the main process: 'mystery'", text)
        self.assertIn("handling a outbound_tokens message from the main process failed", text)
        self.assertNotIn(TOKEN, text)
        self.channel._handlers[OUTBOUND_TOKENS] = self.tokens.append
        self.send(encode_message(OUTBOUND_TOKENS, {"n": 3}))
        self.assertEqual(self.tokens, [{"n": 3}])


class PrivateChannelTests(SynchronousTestCase):
    def test_pipe_made_for_the_worker(self) -> None:
        """
        The channel a worker's tokens cross is a pipe the main process
        makes for that one child (spawnProcess's "w"), not a socket or a
        path anyone else could open.
        """
        from sealgw.daemon._workers import ProcessLauncher

        spawned: list[dict[int, Any]] = []

        class Reactor:
            def spawnProcess(self, protocol: Any, executable: str, args: list[str],
                             env: dict[str, str], childFDs: dict[int, Any]) -> Any:
                spawned.append(childFDs)
                return FakeProcess(1)

        launcher = ProcessLauncher(Reactor(), read({"listeners": [{"endpoint": "tcp:0"}], "workers": 2}))
        launcher.metrics_dir = "/nonexistent"
        launcher.launch(0, cast(Any, None))
        [fds] = spawned
        self.assertEqual(fds[FROM_MAIN], "w")


class WiringTests(SynchronousTestCase):
    """
    How the daemon is put together: with workers the main process holds
    the refreshers and the relay, and a worker the relayed credentials;
    with C{workers: 1} the gateway keeps its refreshers as before.
    """

    def config(self, workers: int) -> Any:
        return read({
            "listeners": [{"endpoint": "tcp:0:interface=127.0.0.1"}],
            "upstreams": {"azure": {
                "url": "https://workspace.example",
                "azure_ad": {"source": "managed_identity"},
            }},
            "workers": workers,
        })

    def test_main_process_holds_the_refreshers(self) -> None:
        from sealgw.build import build_daemon
        from sealgw.daemon._workers import WorkersService

        main = build_daemon(self.config(2), MemoryReactorClock(), install_signal_handlers=False)
        assert isinstance(main, WorkersService)
        credentials = main.getServiceNamed("credentials")
        assert isinstance(credentials, OutboundCredentials)
        [refresher] = credentials.credentials.values()
        self.assertIsInstance(refresher, AzureADCredentials)
        [greeting] = main.supervisor.greetings
        message = json.loads(greeting())
        self.assertEqual(message["kind"], OUTBOUND_TOKENS)
        self.assertEqual(sorted(message["body"]), ["azure"])

    def test_single_gateway_unchanged(self) -> None:
        from sealgw.build import build_daemon

        gateway = build_daemon(self.config(1), MemoryReactorClock(), install_signal_handlers=False)
        credentials = gateway.getServiceNamed("credentials")
        assert isinstance(credentials, OutboundCredentials)
        self.assertNotIsInstance(credentials, RelayedTokens)
        [refresher] = credentials.credentials.values()
        self.assertIsInstance(refresher, AzureADCredentials)

    def test_worker_relays(self) -> None:
        from sealgw.build import build_gateway
        from sealgw.daemon._handoff import InheritedSocket, WorkerSetup
        from sealgw.daemon._view import DaemonView, Worker

        metrics_dir = self.mktemp()
        os.makedirs(metrics_dir)
        setup = WorkerSetup(
            self.config(2), 0, 2, (InheritedSocket("listeners[0]", 99, 2),), metrics_dir
        )
        gateway = build_gateway(
            setup.config, MemoryReactorClock(), worker=Worker(setup, DaemonView(0, 1)),
            install_signal_handlers=False, check_only=True,
        )
        credentials = gateway.getServiceNamed("credentials")
        assert isinstance(credentials, RelayedTokens)
        self.assertIsInstance(credentials.credentials["azure"], RelayedCredentials)
