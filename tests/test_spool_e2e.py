"""
The spool in a running gateway (twistd, a real process): a real
Prometheus stopped and started under steady pushes, and the gateway
killed with SIGKILL mid-load and restarted, with a record torn on purpose.
In both, every sample answered 2xx arrives (duplicates allowed).  Dead
letters replayed with C{sealgw spool replay-dead-letters} into a running
gateway under steady pushes: every replayed record arrives, and no push
is refused.  And what a client sees over HTTP when the spool is full.
"""

from __future__ import annotations

import json
import os
import textwrap
import urllib.parse
from collections import Counter
from typing import Any, Optional

from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from sealgw.signals import snappy_decompress
from sealgw.signals.proto.remote_pb2 import WriteRequest
from sealgw.spool._format import RECORD_MAGIC
from tests.e2e_support import (
    REMOTE_WRITE_HEADERS,
    _Output,
    bearer,
    http_client,
    now_ms,
    prometheus_query,
    reactor,
    remote_write_body,
    require_prometheus,
    serve,
    start_gateway,
    wait_until,
    with_timeout,
    write_request,
)
from tests.subprocesses import Child, free_port, healthy, spawn, stop, twistd, wait_for

TOKEN = "spool-token-0123456789"


class Receiver(Resource):
    """
    A remote-write upstream that answers after C{delay} seconds and counts
    the samples it got, by their C{n} label; a body that is not a
    remote-write request is counted as garbage.
    """

    isLeaf = True

    def __init__(self, delay: float = 0.0) -> None:
        super().__init__()
        self.delay = delay
        self.samples: Counter[str] = Counter()
        self.garbage = 0
        self.pending: set[Any] = set()
        #: Samples (by their C{n} label) answered 400, as over a limit.
        self.refuse: set[str] = set()

    def render_POST(self, request: Request) -> Any:
        assert request.content is not None
        try:
            write = WriteRequest.FromString(snappy_decompress(request.content.read(), 1 << 26))
            got = Counter[str]()
            for series in write.timeseries:
                labels = {label.name: label.value for label in series.labels}
                got[labels["n"]] += len(series.samples)
            if set(got) & self.refuse:
                request.setResponseCode(400)
                return b"series limit exceeded"
            self.samples.update(got)
        except Exception:
            self.garbage += 1
            request.setResponseCode(400)
            return b"not a remote-write request"
        request.setResponseCode(204)
        if not self.delay:
            return b""

        def finish() -> None:
            self.pending.discard(call)
            request.finish()

        call = reactor.callLater(self.delay, finish)
        self.pending.add(call)

        def gone(_: object) -> None:
            # The gateway went away (killed, or stopped at the end).
            if call.active():
                call.cancel()
            self.pending.discard(call)

        request.notifyFinish().addErrback(gone)
        return NOT_DONE_YET

    def cancel_pending(self) -> None:
        """
        Answers still waiting when the test ends are not sent: the
        gateway that asked has been stopped.
        """
        for call in list(self.pending):
            if call.active():
                call.cancel()
        self.pending.clear()


class Prometheus:
    """
    A Prometheus on a port and folder chosen before it runs, so that it can
    be stopped and started again behind a gateway that points at it.
    """

    def __init__(self, test: TestCase, port: int) -> None:
        self.binary = require_prometheus()
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.directory = os.path.abspath(test.mktemp())
        os.makedirs(self.directory)
        with open(os.path.join(self.directory, "prometheus.yml"), "w") as f:
            f.write("global: {scrape_interval: 1h}\n")
        self.process: Optional[_Output] = None
        self.transport: Any = None
        test.addCleanup(lambda: Deferred.fromCoroutine(self.stop()))

    def api(self, path: str, **params: str) -> str:
        return f"{self.url}{path}?{urllib.parse.urlencode(params)}"

    async def start(self, test: TestCase) -> None:
        self.process = _Output()
        self.transport = reactor.spawnProcess(
            self.process,
            self.binary,
            [
                self.binary,
                "--config.file=prometheus.yml",
                f"--web.listen-address=127.0.0.1:{self.port}",
                f"--storage.tsdb.path={self.directory}/tsdb",
                "--web.enable-remote-write-receiver",
                "--log.level=warn",
            ],
            env={"PATH": os.environ.get("PATH", "/usr/bin")},
            path=self.directory,
        )
        http = http_client(test)

        async def ready() -> Optional[bool]:
            assert self.process is not None
            if self.process.exited:
                raise AssertionError(f"Prometheus exited:\n{self.process.tail()}")
            response = await http.get(self.url + "/-/ready", timeout=2)
            await response.content()
            return True if response.code == 200 else None

        await wait_until(ready, what="Prometheus to be ready")

    async def stop(self) -> None:
        if self.process is None or self.process.exited:
            return
        self.transport.signalProcess("TERM")
        await with_timeout(self.process.ended, 20, "Prometheus stopping")


class SpoolFullOverHTTPTests(TestCase):
    timeout = 60

    async def test_full_spool_answers_503_with_retry_after(self) -> None:
        """
        With its upstream down (nothing listens on its port), the spool
        fills; the client is then told 503, why, and when to come back.
        """
        gateway = await start_gateway(
            self,
            {
                "upstreams": {
                    "prom": {
                        "url": f"http://127.0.0.1:{free_port()}/api/v1/write",
                        "retry": {"attempts": 1, "initial_backoff": "1s", "max_backoff": "7s"},
                        "spool": {
                            "directory": os.path.abspath(self.mktemp()),
                            "max_size": "64KiB",
                        },
                    }
                },
                "push": {"remote_write": {"upstream": "prom"}},
            },
            [{"name": "node-1", "token": TOKEN}],
        )
        http = http_client(self)
        body = remote_write_body(
            write_request(
                [({"__name__": "spool_e2e", "pad": os.urandom(3000).hex()}, [(1.0, now_ms())])]
            )
        )
        accepted = 0
        for _ in range(100):
            response = await http.post(
                gateway.url + "/api/v1/push",
                data=body,
                headers={**REMOTE_WRITE_HEADERS, **bearer(TOKEN)},
                timeout=10,
            )
            text = await response.text()
            if response.code != 204:
                break
            accepted += 1
        self.assertGreater(accepted, 3)
        self.assertEqual(response.code, 503, text)
        self.assertIn("spool is full", text)
        self.assertEqual(response.headers.getRawHeaders(b"retry-after"), [b"7"])


class SpoolGatewayTests(TestCase):
    timeout = 180

    def setUp(self) -> None:
        self.http = http_client(self)
        self.folder = os.path.abspath(self.mktemp())
        os.makedirs(self.folder)
        self.spool = os.path.join(self.folder, "spool")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"

    def config(self, upstream_url: str, path: str, spool: str = "") -> str:
        tokens = os.path.join(self.folder, "tokens.yaml")
        with open(tokens, "w") as f:
            f.write(f"- name: node-1\n  token: {TOKEN}\n")
        config = os.path.join(self.folder, "sealgw.yaml")
        with open(config, "w") as f:
            f.write(textwrap.dedent(f"""\
                listeners:
                  - endpoint: tcp:{self.port}:interface=127.0.0.1
                    ops: true
                upstreams:
                  prom:
                    url: {upstream_url}
                    retry: {{attempts: 2, initial_backoff: 50ms, max_backoff: 500ms,
                             deadline: 5s}}
                    timeouts: {{connect: 1s, response: 5s}}
                    spool:
                      directory: {self.spool}
                      fsync: always
                      {spool}
                push:
                  remote_write: {{upstream: prom, path: {path}}}
                auth:
                  token_file: {{path: {tokens}}}
                drain_grace: 5s
                log: {{access: false}}
                """))
        return config

    async def gateway(self, config: str) -> Child:
        child = twistd("sealgw", "--config", config)

        async def cleanup() -> None:
            if not child.ended.called:
                await stop(child)

        self.addCleanup(lambda: Deferred.fromCoroutine(cleanup()))
        await wait_for(lambda: Deferred.fromCoroutine(healthy(self.url)), timeout=60)
        return child

    async def push(self, n: int, pad: int = 0) -> int:
        labels = {"__name__": "spool_e2e", "n": str(n)}
        if pad:
            labels["pad"] = "x" * pad
        body = remote_write_body(write_request([(labels, [(1.0, now_ms())])]))
        response = await self.http.post(
            self.url + "/api/v1/push",
            data=body,
            headers={**REMOTE_WRITE_HEADERS, "Authorization": [f"Bearer {TOKEN}"]},
            timeout=10,
        )
        await response.content()
        return int(response.code)

    async def health(self) -> Any:
        response = await self.http.get(self.url + "/health", timeout=5)
        return json.loads(await response.content())

    async def test_prometheus_down_then_up(self) -> None:
        """
        Pushes are answered 204 while Prometheus is down, stopped under
        steady pushes, and started again; every sample answered arrives.
        """
        prometheus = Prometheus(self, free_port())
        child = await self.gateway(self.config(prometheus.url, "/api/v1/write"))
        for n in range(20):
            self.assertEqual(await self.push(n), 204)
        spool = (await self.health())["components"]["upstreams"]["prom"]["spool"]
        self.assertEqual(spool["records"], 20)
        self.assertIn(spool["state"], ("forwarding", "retrying"))
        await prometheus.start(self)

        async def count(expected: int) -> Optional[bool]:
            result = await prometheus_query(
                self.http, prometheus, "count(spool_e2e)"  # type: ignore[arg-type]
            )
            return True if result and int(result[0]["value"][1]) == expected else None

        await wait_until(lambda: count(20), what="20 series in Prometheus", timeout=60)
        for n in range(20, 30):
            self.assertEqual(await self.push(n), 204)
        await prometheus.stop()
        for n in range(30, 40):
            self.assertEqual(await self.push(n), 204)
        await prometheus.start(self)
        await wait_until(lambda: count(40), what="40 series in Prometheus", timeout=60)
        response = await self.http.get(self.url + "/metrics", timeout=5)
        metrics = (await response.content()).decode()
        self.assertIn('sealgw_spool_forwarded_total{upstream="prom"} 40.0', metrics)
        await stop(child)
        self.assertEqual(child.exit_code, 0)

    async def test_kill_9_mid_load_and_a_torn_record(self) -> None:
        """
        SIGKILL while clients push and the upstream lags: after a restart,
        every sample answered 204 arrives; a record torn on purpose is
        reported and skipped, and no garbage is ever forwarded.
        """
        receiver = Receiver(delay=0.05)
        self.addCleanup(receiver.cancel_pending)
        upstream = serve(self, receiver)
        config = self.config(upstream.url, "/api/v1/write")
        child = await self.gateway(config)
        acked: set[str] = set()
        numbers = iter(range(1_000_000))
        pushing = [True]

        async def client() -> None:
            while pushing[0]:
                n = next(numbers)
                try:
                    if await self.push(n) == 204:
                        acked.add(str(n))
                except Exception:
                    # The gateway died under this request: not answered.
                    await deferLater(reactor, 0.05, lambda: None)

        clients = [Deferred.fromCoroutine(client()) for _ in range(6)]
        await deferLater(reactor, 1.0, lambda: None)
        child.signal("KILL")
        await child.ended
        pushing[0] = False
        await DeferredList(clients)
        self.assertGreater(len(acked), 50)
        self.assertLess(len(set(receiver.samples) & acked), len(acked), "no backlog to recover")

        folder = os.path.join(self.spool, "worker-0")
        last = max(n for n in os.listdir(folder) if n.endswith(".seg"))
        with open(os.path.join(folder, last), "ab") as f:
            f.write(RECORD_MAGIC + b"\x00\x00\x40\x00" + b"\x00\x00\x00\x00" + b"half a record")

        restarted = await self.gateway(config)

        async def arrived() -> Optional[bool]:
            return True if acked <= set(receiver.samples) else None

        await wait_until(arrived, what="every acknowledged sample upstream", timeout=90)
        self.assertEqual(receiver.garbage, 0)
        output = restarted.out + restarted.err
        self.assertIn(b"torn record", output)
        self.assertIn(b"skipped, never forwarded", output)
        duplicates = sum(c - 1 for c in receiver.samples.values() if c > 1)
        self.assertLessEqual(duplicates, len(acked))
        await stop(restarted)
        self.assertEqual(restarted.exit_code, 0)

    async def test_replay_dead_letters_under_steady_pushes(self) -> None:
        """
        Pushes the upstream refused are dead-lettered; once it takes them,
        C{sealgw spool replay-dead-letters} re-queues them into the running
        gateway while clients push steadily: every replayed record
        arrives, and no push is refused, for max_age and more after the
        takeover (the lock-up of issue 19 answered 503 from then on).
        """
        receiver = Receiver()
        # Enough, and large enough, that taking them over takes a while
        # (the race needs a push written meanwhile).
        replayed = 200
        receiver.refuse = {str(n) for n in range(replayed)}
        upstream = serve(self, receiver)
        max_age = 4.0
        child = await self.gateway(
            self.config(upstream.url, "/api/v1/write", f"max_age: {max_age:g}s")
        )
        for n in range(replayed):
            self.assertEqual(await self.push(n, pad=20_000), 204)

        async def dead_lettered() -> Optional[bool]:
            spool = (await self.health())["components"]["upstreams"]["prom"]["spool"]
            return True if spool["dead_lettered"] == replayed else None

        await wait_until(dead_lettered, what="the dead letters", timeout=30)
        receiver.refuse.clear()

        codes: Counter[int] = Counter()
        acked: set[str] = set()
        numbers = iter(range(1000, 1_000_000))
        pushing = [True]

        async def client() -> None:
            while pushing[0]:
                n = next(numbers)
                code = await self.push(n)
                codes[code] += 1
                if code == 204:
                    acked.add(str(n))
                await deferLater(reactor, 0.01, lambda: None)

        clients = [Deferred.fromCoroutine(client()) for _ in range(3)]
        try:
            replay = spawn(["-m", "sealgw", "spool", "replay-dead-letters", self.spool])
            await replay.ended
            self.assertEqual(replay.exit_code, 0, replay.err)
            self.assertIn(f"{replayed} dead letter(s) re-queued".encode(), replay.out)

            async def taken_over() -> Optional[bool]:
                names = os.listdir(self.spool)
                return None if any(n.startswith("replay-") for n in names) else True

            # Housekeeping looks every 30 s.
            await wait_until(taken_over, what="the replay taken over", timeout=45)
            await deferLater(reactor, 2 * max_age, lambda: None)
        finally:
            pushing[0] = False
            await DeferredList(clients)
        self.assertEqual(set(codes), {204}, codes)
        self.assertGreater(codes[204], 30)

        async def arrived() -> Optional[bool]:
            expected = acked | {str(n) for n in range(replayed)}
            return True if expected <= set(receiver.samples) else None

        await wait_until(arrived, what="every replayed and acknowledged sample", timeout=30)
        await stop(child)
        self.assertEqual(child.exit_code, 0)
