"""
Limits owned by the main process and leased to its workers: the requests
a worker writes to the main process's pipe, the main process's answers
from one set of buckets, a worker's places freed when it ends, and
whatever cannot be read answered with an error, never a crash.
"""

from __future__ import annotations

import json
import os
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from sealgw.config import RateLimitConfig
from sealgw.daemon._leases import LeaseClient, LeaseServer, MainProcessGone
from sealgw.daemon._supervisor import Supervisor
from sealgw.daemon._view import ControlChannel
from sealgw.limits import LEASE_TTL, ISlot, LimitOwner, LocalLimiter, OverLimit, SharedLimiter
from tests.test_daemon_workers import FakeLauncher, serve

KEY = ("push", "token_file", "alice")


class Pipe:
    """
    A worker's pipe to the main process, read by the test, which answers
    as the main process would.
    """

    def __init__(self, test: SynchronousTestCase, server: LeaseServer) -> None:
        self.read_fd, write_fd = os.pipe()
        test.addCleanup(os.close, self.read_fd)
        test.addCleanup(os.close, write_fd)
        self.client = LeaseClient(write_fd)
        self.client.connect()
        self.server = server
        self.lines: list[bytes] = []

    def exchange(self) -> None:
        os.set_blocking(self.read_fd, False)
        try:
            data = os.read(self.read_fd, 1 << 20)
        except BlockingIOError:
            return
        for line in data.splitlines():
            self.lines.append(line)
            answer = self.server.handle(line)
            if answer is not None:
                self.client.answer(json.loads(answer))


class LeaseTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.owner = LimitOwner(self.clock)
        self.server = LeaseServer(self.owner)
        self.workers = [Pipe(self, self.server), Pipe(self, self.server)]

    def limiter(self, pipe: Pipe) -> SharedLimiter:
        limiter = SharedLimiter(pipe.client, LocalLimiter(self.clock, 2), self.clock, 0.05)
        limiter.startService()
        self.addCleanup(limiter.stopService)
        return limiter

    def decide(self, limiter: SharedLimiter, pipe: Pipe, limits: RateLimitConfig) -> Any:
        result = limiter.admit(KEY, limits, 10)
        assert isinstance(result, Deferred)
        pipe.exchange()
        return result

    def test_whole_limit_whichever_worker(self) -> None:
        """
        Each worker alone would have half the burst; asking the main
        process, the two together have the whole of it, and no more.
        """
        limiters = [self.limiter(p) for p in self.workers]
        limits = RateLimitConfig(requests_per_second=1, burst=4)
        for i in range(4):
            self.successResultOf(self.decide(limiters[i % 2], self.workers[i % 2], limits))
        for i in range(2):
            failure = self.failureResultOf(
                self.decide(limiters[i], self.workers[i], limits), OverLimit
            )
            self.assertEqual(failure.value.reason, "rate_limited")  # type: ignore[attr-defined]
        self.assertTrue(all(limiter.shared for limiter in limiters))

    def test_one_in_flight_stays_one(self) -> None:
        limiters = [self.limiter(p) for p in self.workers]
        one = RateLimitConfig(max_concurrent=1)
        slot: ISlot = self.successResultOf(self.decide(limiters[0], self.workers[0], one))
        failure = self.failureResultOf(self.decide(limiters[1], self.workers[1], one), OverLimit)
        self.assertEqual(failure.value.reason, "concurrency_limited")  # type: ignore[attr-defined]
        slot.release()
        self.workers[0].exchange()  # the release reaches the main process
        self.assertEqual(self.owner.in_flight(KEY), 0)
        self.successResultOf(self.decide(limiters[1], self.workers[1], one))

    def test_renewed_while_in_flight(self) -> None:
        limiter = self.limiter(self.workers[0])
        self.successResultOf(
            self.decide(limiter, self.workers[0], RateLimitConfig(max_concurrent=1))
        )
        for _ in range(9):
            self.clock.advance(LEASE_TTL / 3)
            self.workers[0].exchange()
        self.assertEqual(self.owner.in_flight(KEY), 1)

    def test_ended_worker_frees_its_places(self) -> None:
        """
        A worker that ends (killed, crashed) holding places: the main
        process frees every lease under its pid at once.
        """
        limiter = self.limiter(self.workers[0])
        for _ in range(2):
            self.successResultOf(
                self.decide(limiter, self.workers[0], RateLimitConfig(max_concurrent=3))
            )
        self.owner.decide(KEY, RateLimitConfig(max_concurrent=3), 0, "999999.x.1")
        self.assertEqual(self.owner.in_flight(KEY), 3)
        self.server.worker_ended(os.getpid())
        self.assertEqual(self.owner.in_flight(KEY), 1)

    def test_main_process_silent(self) -> None:
        """
        A main process that does not answer: the worker decides with its
        share after the timeout, and asks again once a ping is answered.
        """
        limiter = self.limiter(self.workers[0])
        limits = RateLimitConfig(requests_per_second=1, burst=4)
        result = limiter.admit(KEY, limits, 0)
        assert isinstance(result, Deferred)
        self.clock.advance(0.05)
        self.successResultOf(result)
        self.assertEqual(limiter.health()["mode"], "local")
        self.assertEqual(limiter.health()["store"], "the shared limits store")
        self.clock.advance(1)  # a ping, answered
        self.workers[0].exchange()
        self.assertTrue(limiter.shared)

    def test_full_pipe_is_a_failure(self) -> None:
        """
        A main process that stopped reading: writes fail at once rather
        than block the worker's reactor.
        """
        client = self.workers[0].client
        failure = None
        for _ in range(100_000):
            d = client.decide(KEY, RateLimitConfig(max_concurrent=1), 0, "x" * 2000)
            if d.called:
                failure = self.failureResultOf(d, MainProcessGone)
                break
        self.assertIsNotNone(failure)
        self.assertIn("cannot write to the main process", str(failure.value))  # type: ignore[union-attr]

    def test_bad_requests(self) -> None:
        for line, answered in [
            (b"not json", False),
            (b"[1]", False),
            (b'{"id": 3, "op": "steal"}', True),
            (b'{"id": 4, "op": "decide", "key": ["a"], "limits": [1,1,1,1,1], "body": 0}', True),
            (b'{"id": 5, "op": "decide", "key": ["a","b","c"], "limits": [1], "body": 0}', True),
            (b'{"id": 6, "op": "decide", "key": ["a","b","c"], "limits": '
             b'["x",null,null,null,null], "body": 0}', True),
            (b'{"id": 7, "op": "decide", "key": ["a","b","c"], "limits": '
             b'[null,null,null,null,null], "body": -1}', True),
            (b'{"op": "renew", "key": ["a","b","c"], "leases": 5}', False),
        ]:
            answer = self.server.handle(line)
            if answered:
                assert answer is not None
                self.assertIn("error", json.loads(answer), line)
            else:
                self.assertIsNone(answer, line)
        self.flushLoggedErrors()
        client = self.workers[0].client
        d = client.ping()
        client.answer({"reply": 1, "error": "unknown op"})
        self.failureResultOf(d, MainProcessGone)

    def test_stopping_fails_what_waits(self) -> None:
        client = self.workers[0].client
        d = client.ping()
        client.close()
        self.failureResultOf(d, MainProcessGone)
        self.failureResultOf(client.ping(), MainProcessGone)


class ChannelTests(SynchronousTestCase):
    def test_supervisor_answers_on_the_pipe(self) -> None:
        """
        The main process reads a worker's requests a line at a time, split
        anyhow, after (or before) its SERVING, and answers on its pipe.
        """
        launcher = FakeLauncher()
        clock = Clock()
        owner = LimitOwner(clock)
        supervisor = Supervisor(1, launcher, clock, 1.0, leases=LeaseServer(owner))
        supervisor.start()
        protocol, transport = launcher.latest(0)
        request = json.dumps({
            "id": 1, "op": "decide", "key": ["push", "c", "n"],
            "limits": [None, None, None, None, 1], "body": 0, "lease": f"{protocol.pid}.a.1",
        }).encode() + b"\n"
        protocol.childDataReceived(3, request[:10])
        protocol.childDataReceived(3, request[10:] + b"serv")
        protocol.childDataReceived(3, b"ing\n")
        self.assertTrue(protocol.serving)
        replies = [json.loads(data) for fd, data in transport.written if b"reply" in data]
        self.assertEqual(replies, [{"reply": 1, "refusal": None}])
        self.assertEqual(owner.in_flight(("push", "c", "n")), 1)
        from tests.test_daemon_workers import end

        end(protocol)
        self.assertEqual(owner.in_flight(("push", "c", "n")), 0)

    def test_serving_as_before(self) -> None:
        launcher = FakeLauncher()
        supervisor = Supervisor(1, launcher, Clock(), 1.0)
        supervisor.start()
        protocol, _ = launcher.latest(0)
        serve(protocol)
        self.assertTrue(protocol.serving)

    def test_worker_reads_replies_and_states(self) -> None:
        read_fd, write_fd = os.pipe()
        self.addCleanup(os.close, write_fd)
        states: list[dict[str, Any]] = []
        replies: list[dict[str, Any]] = []
        channel = ControlChannel(read_fd, states.append, lambda: None, replies.append)
        self.addCleanup(os.close, read_fd)
        os.write(write_fd, b'{"serving": 1}\n{"reply": 1, "refusal": null}\n{"serving": 2}\n'
                 b'{"reply": 2, "refusal": ["rate_limited", 0.5]}\n')
        channel.doRead()
        self.assertEqual(states, [{"serving": 2}])
        self.assertEqual([r["reply"] for r in replies], [1, 2])
