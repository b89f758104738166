"""
Workers as users run them: C{twistd -n sealgw} with C{workers: 2} serves
one port from two worker processes, counts both in C{/metrics}, restarts
a killed worker while the port keeps serving, forwards SIGHUP, and
drains on SIGTERM; systemd's socket reaches the workers too.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sys
import textwrap
from typing import Any

import treq
from twisted.internet import reactor as _reactor
from twisted.internet.defer import Deferred
from twisted.trial.unittest import TestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site

from sealgw.signals import snappy_compress
from sealgw.signals.proto.remote_pb2 import WriteRequest
from tests.subprocesses import Child, child_env, free_port, stop, twistd, wait_for

reactor: Any = _reactor

TOKEN = "workers-token-0123456789"
LOKI = json.dumps(
    {"streams": [{"stream": {"job": "w"}, "values": [["1700000000000000000", "hello"]]}]}
).encode()


class _HeldUpstream(Resource):
    """
    A remote-write receiver that answers only when told to.
    """

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.arrived: Deferred[None] = Deferred()
        self.release: Deferred[None] = Deferred()

    def render_POST(self, request):  # type: ignore[no-untyped-def]
        self.arrived.callback(None)

        def answer(_: object) -> None:
            request.setResponseCode(204)
            request.finish()

        self.release.addCallback(answer)
        return NOT_DONE_YET


def _write_request() -> bytes:
    req = WriteRequest()
    series = req.timeseries.add()
    series.labels.add(name="__name__", value="up")
    series.samples.add(value=1.0, timestamp=1_700_000_000_000)
    return snappy_compress(req.SerializeToString())


def _headers(content_type: str) -> dict[str | bytes, str | bytes]:
    return {"Authorization": f"Bearer {TOKEN}", "Content-Type": content_type}


def _events(child: Child) -> list[dict[str, Any]]:
    return [
        json.loads(line)
        for line in child.out.decode(errors="replace").splitlines()
        if line.startswith("{")
    ]


def _access(child: Child, route: str) -> list[dict[str, Any]]:
    return [e for e in _events(child) if e.get("access") and e.get("route") == route]


async def _get(url: str) -> tuple[int, bytes]:
    response = await treq.get(url, persistent=False, timeout=5)
    return response.code, await response.content()


async def _push(url: str) -> int:
    response = await treq.post(
        url + "/loki/api/v1/push",
        data=LOKI,
        headers=_headers("application/json"),
        persistent=False,
        timeout=10,
    )
    await response.content()
    return int(response.code)


def _requests_total(text: str, route: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith("sealgw_http_requests_total{") and f'route="{route}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


async def _ready(url: str) -> bool:
    code, _ = await _get(url + "/ready")
    return code == 200


async def _workers(url: str) -> dict[str, Any]:
    _, body = await _get(url + "/health")
    workers: dict[str, Any] = json.loads(body)["components"]["workers"]
    return workers


class WorkersTests(TestCase):
    timeout = 120

    def config(self, text: str) -> str:
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        with open(os.path.join(directory, "tokens.yaml"), "w") as f:
            f.write(f"- name: node-1\n  token: {TOKEN}\n  tenants: [team-a]\n")
        path = os.path.join(directory, "sealgw.yaml")
        with open(path, "w") as f:
            f.write(textwrap.dedent(text).replace("DIR", directory))
        return path

    async def test_workers(self) -> None:
        """
        Two workers serve one port; /metrics counts what both answered; a
        worker killed with SIGKILL is restarted while the port keeps
        serving; SIGHUP reaches every worker; SIGTERM (to every process,
        as systemd sends it) lets a push in flight finish and ends
        everything with status 0.
        """
        upstream = _HeldUpstream()
        upstream_port = reactor.listenTCP(0, Site(upstream), interface="127.0.0.1")
        self.addCleanup(upstream_port.stopListening)
        port = free_port()
        path = self.config(
            f"""
            listeners:
              - endpoint: tcp:{port}:interface=127.0.0.1
                ops: true
            upstreams:
              files: {{type: file, directory: DIR/data}}
              held:
                url: http://127.0.0.1:{upstream_port.getHost().port}
            push:
              loki: {{upstream: files}}
              remote_write: {{upstream: held, path: /api/v1/write}}
            auth:
              token_file: {{path: DIR/tokens.yaml}}
            log: {{format: json}}
            drain_grace: 20s
            workers: 2
            """
        )
        child = twistd("sealgw", "--config", path)
        self.addCleanup(stop, child)
        url = f"http://127.0.0.1:{port}"
        await wait_for(lambda: Deferred.fromCoroutine(_ready(url)))

        # Connections go to whichever worker accepts first: push until both
        # have answered.
        sent = 0
        while len({e["pid"] for e in _access(child, "loki")}) < 2 and sent < 300:
            self.assertEqual(await _push(url), 204)
            sent += 1
        served_by = {e["worker"]: e["pid"] for e in _access(child, "loki")}
        self.assertEqual(sorted(served_by), [0, 1])
        workers = await _workers(url)
        self.assertEqual(
            {w["index"]: w["pid"] for w in workers["workers"]}, served_by
        )
        self.assertEqual(workers["serving"], 2)
        # One writer per file: each worker its own.
        data = os.path.join(os.path.dirname(path), "data", "loki")
        self.assertEqual(sorted(os.listdir(data)), ["team-a.0.jsonl", "team-a.1.jsonl"])

        # Whichever worker answers /metrics, it counts both.
        for _ in range(4):
            code, body = await _get(url + "/metrics")
            self.assertEqual(code, 200)
            self.assertEqual(_requests_total(body.decode(), "loki"), sent)
        self.assertIn(b"sealgw_workers_serving 2.0", body)

        # Killed: the other worker goes on serving, and it comes back.
        os.kill(served_by[0], signal.SIGKILL)
        for _ in range(10):
            self.assertEqual(await _push(url), 204)
            sent += 1

        async def replaced() -> bool:
            state = await _workers(url)
            first = state["workers"][0]
            return bool(
                state["serving"] == 2 and first["pid"] not in (None, served_by[0])
            )

        await wait_for(lambda: Deferred.fromCoroutine(replaced()))
        workers = await _workers(url)
        self.assertEqual(workers["restarts"], 1)
        self.assertEqual(workers["workers"][0]["last_exit"], "was killed by signal 9 (SIGKILL)")
        self.assertIn(b"worker 0 (pid %d) was killed by signal 9" % served_by[0], child.out)
        await wait_for(lambda: Deferred.fromCoroutine(_ready(url)))
        pids = {w["pid"] for w in workers["workers"]}
        # The killed worker's counts stay in the daemon's.
        code, body = await _get(url + "/metrics")
        self.assertEqual(_requests_total(body.decode(), "loki"), sent)

        # SIGHUP: every worker reloads.
        child.signal("HUP")

        def reloaded() -> set[int]:
            return {
                e["pid"] for e in _events(child)
                if "SIGHUP: reloading" in e.get("message", "")
            }

        await wait_for(lambda: Deferred.fromCoroutine(_true(reloaded() == pids)))

        # SIGTERM while a push is in flight: it is answered, then all end.
        pending = treq.post(
            url + "/api/v1/push",
            data=_write_request(),
            headers={
                **_headers("application/x-protobuf"),
                "Content-Encoding": "snappy",
            },
            persistent=False,
        )
        await upstream.arrived
        # As systemd stops a unit: every process gets SIGTERM, and the main
        # process forwards its own too.
        child.signal("TERM")
        for pid in pids:
            os.kill(pid, signal.SIGTERM)
        await child.output_contains(b"draining: stopping 2 workers")
        # The worker holding the push is draining with it in flight.
        await child.output_contains(b'"in_flight": 1')
        self.assertIsNone(child.exit_code)
        upstream.release.callback(None)
        response = await pending
        self.assertEqual(response.code, 204)
        self.assertEqual(await child.ended, 0)
        for pid in pids:
            self.assertRaises(ProcessLookupError, os.kill, pid, 0)
        self.assertNotIn(b"Traceback", child.out + child.err)
        self.assertNotIn(TOKEN.encode(), child.out + child.err)

    async def test_main_process_killed(self) -> None:
        """
        Workers whose main process was killed (nothing forwards SIGTERM
        any more) stop by themselves rather than serve on unsupervised.
        """
        port = free_port()
        path = self.config(
            f"""
            listeners: [{{endpoint: "tcp:{port}:interface=127.0.0.1", ops: true}}]
            log: {{format: json}}
            workers: 2
            """
        )
        child = twistd("sealgw", "--config", path)
        self.addCleanup(lambda: None if child.ended.called else stop(child))
        url = f"http://127.0.0.1:{port}"
        await wait_for(lambda: Deferred.fromCoroutine(_ready(url)))
        pids = [w["pid"] for w in (await _workers(url))["workers"]]
        # Nothing is left to remove the metrics folder: the test does.
        with open(f"/proc/{pids[0]}/environ", "rb") as f:
            env = dict(v.split(b"=", 1) for v in f.read().split(b"\0") if b"=" in v)
        self.addCleanup(shutil.rmtree, env[b"PROMETHEUS_MULTIPROC_DIR"].decode(), True)
        child.signal("KILL")
        await child.ended
        await wait_for(
            lambda: Deferred.fromCoroutine(_true(all(_gone(pid) for pid in pids)))
        )

    async def test_port_in_use(self) -> None:
        """
        A port that cannot be bound ends start-up in one line, as a single
        process does, and no worker is started.
        """
        taken = socket.socket()
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        self.addCleanup(taken.close)
        port = taken.getsockname()[1]
        path = self.config(
            f"listeners: [{{endpoint: 'tcp:{port}:interface=127.0.0.1'}}]\nworkers: 2\n"
        )
        child = twistd("sealgw", "--config", path)
        self.addCleanup(stop, child)
        self.assertNotEqual(await child.ended, 0)
        self.assertIn(b"cannot listen on 127.0.0.1:%d" % port, child.out + child.err)
        self.assertNotIn(b"worker 0 started", child.out)

    async def test_systemd_socket_activation(self) -> None:
        """
        The socket systemd hands the main process is the one the workers
        serve.
        """
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        self.addCleanup(sock.close)
        port = sock.getsockname()[1]
        path = self.config(
            """
            listeners: [{endpoint: "systemd:domain=INET:index=0", ops: true}]
            log: {format: json}
            workers: 2
            """
        )
        child = Child()
        script = (
            "LISTEN_PID=$$ LISTEN_FDS=1 LISTEN_FDNAMES=sealgw.socket exec "
            f"{sys.executable} -c 'from twisted.scripts.twistd import run; run()' "
            f"--nodaemon --pidfile= sealgw --config {path}"
        )
        reactor.spawnProcess(
            child,
            "/bin/sh",
            ["/bin/sh", "-c", script],
            env=child_env(),
            childFDs={0: "w", 1: "r", 2: "r", 3: sock.fileno()},
        )
        self.addCleanup(stop, child)
        url = f"http://127.0.0.1:{port}"
        await wait_for(lambda: Deferred.fromCoroutine(_ready(url)))
        workers = await _workers(url)
        self.assertEqual(workers["serving"], 2)
        await stop(child)
        self.assertEqual(child.exit_code, 0)
        served = {e["worker"] for e in _access(child, "ready")}
        self.assertTrue(served <= {0, 1} and served)


async def _true(value: bool) -> bool:
    return value


def _gone(pid: int) -> bool:
    """
    Whether C{pid} has ended (a zombie waiting for whoever adopted it
    counts as ended).
    """
    try:
        with open(f"/proc/{pid}/status") as f:
            return any(line.startswith("State:\tZ") for line in f)
    except FileNotFoundError:
        return True
