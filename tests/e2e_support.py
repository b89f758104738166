"""
What the end-to-end tests share: free ports, an HTTP client the test
closes, polling with a deadline, a whole gateway started from a YAML
configuration, a scripted upstream on loopback, and real Prometheus
processes.

Everything runs on the global reactor that trial spins; nothing sleeps.
Every helper registers its own cleanup on the test case, so a test reads
as "start this, push that, look there".
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import sys
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Optional, TypeVar

import attr
import yaml
from prometheus_client import CollectorRegistry
from treq.client import HTTPClient
from twisted.internet import reactor as _reactor
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import ProcessProtocol, Protocol, connectionDone
from twisted.internet.task import deferLater
from twisted.python.failure import Failure
from twisted.trial.unittest import SkipTest, TestCase
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.http_headers import Headers
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from sealgw.build import build_gateway
from sealgw.config import load
from sealgw.daemon import GatewayService
from sealgw.signals import snappy_compress
from sealgw.signals.proto import metrics_pb2, remote_pb2
from tests.subprocesses import free_port
from tests.wire import delimited, varint

reactor: Any = _reactor
T = TypeVar("T")

#: How long a whole end-to-end test may take, for trial's C{timeout}.
TEST_TIMEOUT = 120


def http_client(test: TestCase) -> HTTPClient:
    """
    A treq client over a connection pool of its own, whose connections are
    closed when the test ends (treq's global pool would leave sockets
    open for trial to complain about).
    """
    pool = HTTPConnectionPool(reactor, persistent=True)
    pool.retryAutomatically = False
    test.addCleanup(pool.closeCachedConnections)
    return HTTPClient(Agent(reactor, pool=pool))


async def wait_until(
    check: Callable[[], Awaitable[Optional[T]]],
    *,
    what: str,
    timeout: float = 30.0,
    interval: float = 0.2,
) -> T:
    """
    Call C{check} every C{interval} seconds until it returns something
    other than L{None} (which is returned), for at most C{timeout} seconds.
    Exceptions from C{check} count as "not yet"; the last one is named in
    the failure.

    @raise AssertionError: when time runs out, saying what was awaited.
    """
    deadline = reactor.seconds() + timeout
    last: Optional[str] = None
    while True:
        try:
            result = await check()
        except Exception as e:
            last = f"{type(e).__name__}: {e}"
        else:
            if result is not None:
                return result
        if reactor.seconds() >= deadline:
            detail = f" (last error: {last})" if last else ""
            raise AssertionError(f"gave up after {timeout:g}s waiting for {what}{detail}")
        await deferLater(reactor, interval, lambda: None)


def with_timeout(d: Deferred[T], seconds: float, what: str) -> Deferred[T]:
    """
    C{d}, failing with an AssertionError naming C{what} after C{seconds}.
    """
    result: Deferred[T] = Deferred()

    def expire() -> None:
        if not result.called:
            result.errback(AssertionError(f"{what}: nothing after {seconds:g}s"))

    timer = reactor.callLater(seconds, expire)

    def settle(outcome: Any) -> None:
        if timer.active():
            timer.cancel()
        if not result.called:
            if isinstance(outcome, Failure):
                result.errback(outcome)
            else:
                result.callback(outcome)

    d.addBoth(settle)
    return result


# -- the gateway ---------------------------------------------------------------


@attr.define
class Gateway:
    """
    A running gateway in this process.

    @ivar url: C{http://127.0.0.1:PORT} of its one listener (which also
        serves C{/health}, C{/ready} and C{/metrics}).
    """

    service: GatewayService
    url: str
    port: int
    registry: CollectorRegistry
    directory: str


def write_tokens(directory: str, tokens: Sequence[dict[str, Any]]) -> str:
    path = os.path.join(directory, "tokens.yaml")
    with open(path, "w", encoding="utf-8") as f:
        yaml.safe_dump(list(tokens), f)
    return path


async def start_gateway(
    test: TestCase, config: dict[str, Any], tokens: Sequence[dict[str, Any]] = ()
) -> Gateway:
    """
    Write C{config} (sealgw's YAML, as a dict) and C{tokens} (the token
    file's entries) into a fresh folder, load them the way C{twistd sealgw}
    does, and start the gateway on a free loopback port.

    A C{listeners} key is added when C{config} has none, and
    C{auth.token_file.path} when C{tokens} are given.  The gateway is
    stopped (drained) when the test ends.
    """
    directory = os.path.abspath(test.mktemp())
    os.makedirs(directory)
    config = dict(config)
    config.setdefault("listeners", [{"endpoint": "tcp:0:interface=127.0.0.1", "ops": True}])
    config.setdefault("drain_grace", "2s")
    config.setdefault("log", {"access": False})
    if tokens:
        auth = dict(config.get("auth", {}))
        auth["token_file"] = {"path": write_tokens(directory, tokens)}
        config["auth"] = auth
    path = os.path.join(directory, "sealgw.yaml")
    with open(path, "w", encoding="utf-8") as f:
        yaml.safe_dump(config, f)
    return run_gateway(test, path)


def run_gateway(
    test: TestCase, config_path: str, bearer_tokens_path: Optional[str] = None
) -> Gateway:
    """
    Load the configuration file at C{config_path} (sealgw's or
    seal-proxy's, with seal-proxy's C{--bearer-tokens-path}) and start a
    gateway from it, stopped when the test ends.  Its first listener is
    the one C{url} names.
    """
    loaded = load(config_path, bearer_tokens_path)
    registry = CollectorRegistry()
    service = build_gateway(loaded, reactor, registry=registry, install_signal_handlers=False)
    service.privilegedStartService()
    service.startService()
    test.addCleanup(service.stopService)
    port = service.listeners[0].port.getHost().port
    directory = os.path.dirname(os.path.abspath(config_path))
    return Gateway(service, f"http://127.0.0.1:{port}", port, registry, directory)


#: Request headers as treq takes them.
HeaderMap = dict[Any, Any]


def bearer(token: str, **more: str) -> HeaderMap:
    """
    Request headers with C{Authorization: Bearer TOKEN} and C{more}
    (underscores in names become dashes).
    """
    headers: HeaderMap = {"Authorization": [f"Bearer {token}"]}
    for name, value in more.items():
        headers[name.replace("_", "-")] = [value]
    return headers


# -- upstreams -------------------------------------------------------------------


@attr.define
class Received:
    """
    One request an upstream received.

    @ivar lost: fires when the request ends without an answer (the
        gateway dropped the connection); only for requests left hanging.
    """

    method: bytes
    path: bytes
    headers: Headers
    body: bytes
    lost: Optional[Deferred[None]] = None

    def header(self, name: str) -> Optional[str]:
        """
        The last value of header C{name}, or L{None}.
        """
        values = self.headers.getRawHeaders(name.encode("latin-1"))
        return values[-1].decode("latin-1") if values else None

    def header_values(self, name: str) -> list[str]:
        return [v.decode("latin-1") for v in self.headers.getRawHeaders(name.encode("latin-1"), [])]


Action = Callable[[Request], Any]


def answer(status: int, body: bytes = b"", headers: Optional[dict[str, str]] = None) -> Action:
    """
    An upstream action: answer C{status} with C{body} and C{headers}.
    """

    def act(request: Request) -> bytes:
        request.setResponseCode(status)
        for name, value in (headers or {}).items():
            request.setHeader(name, value)
        return body

    return act


def hang() -> Action:
    """
    An upstream action: never answer.
    """

    def act(request: Request) -> Any:
        return NOT_DONE_YET

    return act


class ScriptedUpstream(Resource):
    """
    An upstream whose answers the test scripts: each request takes the
    next action from C{script}, the last one repeating; with no script it
    answers 204.  Every request is recorded in C{received}.
    """

    isLeaf = True

    def __init__(self, *script: Action) -> None:
        super().__init__()
        self.script: list[Action] = list(script)
        self.received: list[Received] = []
        self._waiting: list[tuple[int, Deferred[None]]] = []
        self._hanging: list[Request] = []

    def arrived(self, count: int = 1) -> Deferred[None]:
        """
        Fires once C{count} requests in all have arrived.
        """
        d: Deferred[None] = Deferred()
        if len(self.received) >= count:
            d.callback(None)
        else:
            self._waiting.append((count, d))
        return d

    def render(self, request: Request) -> Any:
        assert request.content is not None
        record = Received(
            request.method, request.path, request.requestHeaders.copy(), request.content.read()
        )
        self.received.append(record)
        if len(self.script) > 1:
            action = self.script.pop(0)
        elif self.script:
            action = self.script[0]
        else:
            action = answer(204)
        result = action(request)
        if result is NOT_DONE_YET:
            lost: Deferred[None] = Deferred()
            record.lost = lost
            self._hanging.append(request)

            def ended(outcome: Any) -> None:
                self._hanging.remove(request)
                if isinstance(outcome, Failure):
                    lost.callback(None)

            request.notifyFinish().addBoth(ended)
        ready = [d for n, d in self._waiting if len(self.received) >= n]
        self._waiting = [(n, d) for n, d in self._waiting if len(self.received) < n]
        for d in ready:
            d.callback(None)
        return result


class TrackingSite(Site):
    """
    A Site that can close every connection it has and wait until they are
    gone, so a test leaves a clean reactor.
    """

    noisy = False

    def __init__(self, resource: Resource) -> None:
        super().__init__(resource)
        self.connections: list[Any] = []
        self._closed: list[Deferred[None]] = []

    def log(self, request: Any) -> None:
        pass

    def buildProtocol(self, addr: Any) -> Any:
        protocol = super().buildProtocol(addr)
        closed: Deferred[None] = Deferred()
        self._closed.append(closed)
        original = protocol.connectionLost

        def connectionLost(reason: Any) -> None:
            self.connections.remove(protocol)
            try:
                original(reason)
            finally:
                closed.callback(None)

        protocol.connectionLost = connectionLost
        self.connections.append(protocol)
        return protocol

    def close_all(self) -> Deferred[Any]:
        for protocol in list(self.connections):
            # Twisted hands out a wrapper that picks HTTP/1.1 or HTTP/2;
            # the connection's transport is the channel's inside it.
            channel = getattr(protocol, "_channel", protocol)
            transport = getattr(channel, "transport", None) or getattr(protocol, "transport", None)
            if transport is not None:
                transport.abortConnection()
        return DeferredList(list(self._closed))


@attr.define
class Server:
    url: str
    port: int
    site: TrackingSite


def serve(test: TestCase, resource: Resource) -> Server:
    """
    Serve C{resource} on a free loopback port until the test ends.
    """
    site = TrackingSite(resource)
    port = reactor.listenTCP(0, site, interface="127.0.0.1")

    async def stop() -> None:
        await port.stopListening()
        await site.close_all()

    test.addCleanup(lambda: Deferred.fromCoroutine(stop()))
    number = port.getHost().port
    return Server(f"http://127.0.0.1:{number}", number, site)


class TextMetrics(Resource):
    """
    A scrape target: C{GET /metrics} answers C{text} in Prometheus's text
    format, and counts the scrapes.
    """

    isLeaf = True

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text
        self.scrapes = 0

    def render_GET(self, request: Request) -> bytes:
        self.scrapes += 1
        request.setHeader(b"content-type", b"text/plain; version=0.0.4")
        return self.text.encode("utf-8")


# -- push bodies -------------------------------------------------------------------


def write_request(
    series: Sequence[tuple[dict[str, str], Sequence[tuple[float, int]]]],
) -> remote_pb2.WriteRequest:
    """
    A remote-write request: each series is its labels and its
    C{(value, timestamp_ms)} samples; labels are sorted here.
    """
    request = remote_pb2.WriteRequest()
    for labels, samples in series:
        one = request.timeseries.add()
        for name in sorted(labels):
            one.labels.add(name=name, value=labels[name])
        for value, timestamp in samples:
            one.samples.add(value=value, timestamp=timestamp)
    return request


def remote_write_body(request: remote_pb2.WriteRequest) -> bytes:
    return snappy_compress(request.SerializeToString())


REMOTE_WRITE_HEADERS: HeaderMap = {
    "Content-Type": ["application/x-protobuf"],
    "Content-Encoding": ["snappy"],
    "X-Prometheus-Remote-Write-Version": ["0.1.0"],
}


#: The histogram buckets of the seal sample client.
SEAL_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
SEAL_BUCKET_COUNTS = (1, 2, 4, 5, 6, 7, 7, 7)
SEAL_COUNT = 8
SEAL_SUM = 12.5


def seal_sample_families(now_ms: int) -> list[metrics_pb2.MetricFamily]:
    """
    What seal's sample client pushes: an int gauge C{current_time} (ms), an
    int gauge vec C{seal_build_info{version="0.1.0"} 1}, and a histogram
    C{seal_request_duration} with buckets 0.05 ... 10 (Rust's prometheus
    crate leaves the +Inf bucket out; the sample count carries it).
    """
    current = metrics_pb2.MetricFamily(
        name="current_time", help="current time in ms", type=metrics_pb2.GAUGE
    )
    current.metric.add().gauge.value = float(now_ms)
    info = metrics_pb2.MetricFamily(
        name="seal_build_info", help="build info", type=metrics_pb2.GAUGE
    )
    m = info.metric.add()
    m.label.add(name="version", value="0.1.0")
    m.gauge.value = 1.0
    duration = metrics_pb2.MetricFamily(
        name="seal_request_duration", help="request duration", type=metrics_pb2.HISTOGRAM
    )
    h = duration.metric.add().histogram
    h.sample_count = SEAL_COUNT
    h.sample_sum = SEAL_SUM
    for bound, count in zip(SEAL_BUCKETS, SEAL_BUCKET_COUNTS, strict=True):
        h.bucket.add(upper_bound=bound, cumulative_count=count)
    return [current, info, duration]


def seal_body(
    families: Sequence[metrics_pb2.MetricFamily], labels: Optional[dict[str, str]] = None
) -> bytes:
    """
    A seal-proxy push body: snappy of C{{"labels": ..., "buf": [bytes]}}.
    """
    doc: dict[str, Any] = {"buf": list(delimited(*families))}
    if labels is not None:
        doc["labels"] = labels
    return snappy_compress(json.dumps(doc).encode("utf-8"))


def now_ms() -> int:
    return int(reactor.seconds() * 1000)


def unix_ns() -> int:
    return time.time_ns()


# -- Prometheus ----------------------------------------------------------------------

PROMETHEUS = shutil.which("prometheus")


def require_prometheus() -> str:
    """
    The path of the C{prometheus} binary.  Without one the test fails in
    CI (where C{.ci/run} installs it) and is skipped elsewhere.
    """
    if PROMETHEUS is not None:
        return PROMETHEUS
    message = (
        "prometheus is not on PATH; the end-to-end tests need it "
        "(Debian: apt-get install prometheus)"
    )
    if os.environ.get("CI"):
        raise AssertionError(message + " -- CI is set, so this is a failure, not a skip")
    raise SkipTest(message)


class _Output(ProcessProtocol):
    """
    Keeps the tail of a process's output and tells when it ended.
    """

    KEEP = 64 * 1024

    def __init__(self) -> None:
        self.output = bytearray()
        self.ended: Deferred[None] = Deferred()
        self.exited = False
        self.reason: Optional[Failure] = None

    def outReceived(self, data: bytes) -> None:
        self._keep(data)

    def errReceived(self, data: bytes) -> None:
        self._keep(data)

    def _keep(self, data: bytes) -> None:
        self.output += data
        if len(self.output) > self.KEEP:
            del self.output[: len(self.output) - self.KEEP]

    def processEnded(self, reason: Failure) -> None:
        self.exited = True
        self.reason = reason
        self.ended.callback(None)

    def tail(self, lines: int = 15) -> str:
        text = bytes(self.output).decode("utf-8", "replace")
        return "\n".join(text.splitlines()[-lines:])


@attr.define
class Prometheus:
    url: str
    port: int
    directory: str
    process: _Output

    def api(self, path: str, **params: str) -> str:
        query = urllib.parse.urlencode(params)
        return f"{self.url}{path}?{query}" if query else f"{self.url}{path}"


async def start_prometheus(
    test: TestCase,
    config: dict[str, Any],
    *,
    agent: bool = False,
    receiver: bool = False,
    features: Sequence[str] = (),
    ready_timeout: float = 30.0,
) -> Prometheus:
    """
    Start a Prometheus of our own on a free loopback port with C{config}
    (its YAML, as a dict) and storage in a fresh folder, wait until it is
    ready, and stop it when the test ends.  Never the system's.

    @param agent: run in agent mode (scrape and remote-write only).
    @param receiver: accept remote write on C{/api/v1/write}.
    @param features: feature flags to enable (C{native-histograms}).
    """
    binary = require_prometheus()
    directory = os.path.abspath(test.mktemp())
    os.makedirs(directory)
    config_path = os.path.join(directory, "prometheus.yml")
    with open(config_path, "w", encoding="utf-8") as f:
        yaml.safe_dump(config, f)
    http = http_client(test)
    last_problem = ""
    for _ in range(3):  # a free port can be taken between looking and binding
        port = free_port()
        args = [
            binary,
            f"--config.file={config_path}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ]
        if agent:
            args += ["--enable-feature=agent", f"--storage.agent.path={directory}/agent"]
        else:
            args += [f"--storage.tsdb.path={directory}/tsdb"]
        if receiver:
            args.append("--web.enable-remote-write-receiver")
        args += [f"--enable-feature={feature}" for feature in features]
        process = _Output()
        transport = reactor.spawnProcess(
            process, binary, args, env={"PATH": os.environ.get("PATH", "/usr/bin")}, path=directory
        )
        test.addCleanup(_stopper(transport, process))
        prometheus = Prometheus(f"http://127.0.0.1:{port}", port, directory, process)

        async def ready(p: Prometheus = prometheus) -> Optional[bool]:
            if p.process.exited:
                return False
            response = await http.get(p.url + "/-/ready", timeout=2)
            await response.content()
            return True if response.code == 200 else None

        started = await wait_until(
            ready, what=f"Prometheus on port {port} to be ready", timeout=ready_timeout
        )
        if started and not process.exited:
            return prometheus
        last_problem = process.tail()
        if "address already in use" not in last_problem:
            break
    raise AssertionError(f"Prometheus did not start:\n{last_problem}")


def _stopper(transport: Any, process: _Output) -> Callable[[], Deferred[None]]:
    return lambda: Deferred.fromCoroutine(_stop(transport, process))


async def _stop(transport: Any, process: _Output) -> None:
    if process.exited:
        return
    transport.signalProcess("TERM")
    try:
        await with_timeout(process.ended, 10, "Prometheus stopping")
    except AssertionError:
        if not process.exited:
            transport.signalProcess("KILL")
        await process.ended


async def prometheus_query(
    http: HTTPClient, prometheus: Prometheus, promql: str
) -> list[dict[str, Any]]:
    """
    The result vector of an instant query.
    """
    response = await http.get(prometheus.api("/api/v1/query", query=promql), timeout=5)
    doc = json.loads(await response.content())
    if doc.get("status") != "success":
        raise AssertionError(f"query {promql!r} failed: {doc}")
    return list(doc["data"]["result"])


async def wait_for_series(
    http: HTTPClient, prometheus: Prometheus, promql: str, *, count: int = 1, timeout: float = 30.0
) -> list[dict[str, Any]]:
    """
    Poll an instant query until it returns at least C{count} series.
    """

    async def found() -> Optional[list[dict[str, Any]]]:
        result = await prometheus_query(http, prometheus, promql)
        return result if len(result) >= count else None

    return await wait_until(found, what=f"{promql!r} in Prometheus", timeout=timeout)


# -- memory ------------------------------------------------------------------------


class PeakMemory:
    """
    The growth of this process's peak resident size (C{ru_maxrss}) over a
    stretch of a test.  The gateway runs in the test process, so this is
    what a request made it hold at its worst.

    The peak is a high-water mark for the whole process: an earlier test
    may have left it higher than anything measured here.  Linux lets a
    process reset it (C{/proc/self/clear_refs}); where that is refused,
    C{reset} is L{False} and a small growth proves less.
    """

    def __init__(self) -> None:
        self.reset = _reset_peak()
        self.before = _maxrss_bytes()

    def growth(self) -> int:
        """
        Bytes the peak grew by since this object was made.
        """
        return _maxrss_bytes() - self.before


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


def _maxrss_bytes() -> int:
    # Kilobytes on Linux, bytes on macOS.
    value = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(value) if sys.platform == "darwin" else int(value) * 1024


# -- raw HTTP ------------------------------------------------------------------------


class _Collect(Protocol):
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.received = bytearray()
        self.done: Deferred[bytes] = Deferred()

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.write(self.data)

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.done.callback(bytes(self.received))


async def raw_http(port: int, data: bytes, timeout: float = 10.0) -> bytes:
    """
    Send C{data} as it is to 127.0.0.1:C{port} and return everything that
    comes back until the server closes the connection: for requests treq
    will not make (chunked bodies, broken framing).  Send
    C{Connection: close}.
    """
    protocol = _Collect(data)
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port)
    await connectProtocol(endpoint, protocol)
    return await with_timeout(protocol.done, timeout, f"an answer from port {port}")


def status_of(raw: bytes) -> int:
    """
    The status code of a raw HTTP/1.1 response.
    """
    line = raw.split(b"\r\n", 1)[0]
    parts = line.split(b" ")
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/"):
        raise AssertionError(f"not an HTTP response: {raw[:200]!r}")
    return int(parts[1])


__all__ = [
    "PROMETHEUS",
    "REMOTE_WRITE_HEADERS",
    "SEAL_BUCKETS",
    "SEAL_BUCKET_COUNTS",
    "SEAL_COUNT",
    "SEAL_SUM",
    "TEST_TIMEOUT",
    "Gateway",
    "HeaderMap",
    "Prometheus",
    "Received",
    "ScriptedUpstream",
    "Server",
    "TextMetrics",
    "answer",
    "bearer",
    "delimited",
    "free_port",
    "hang",
    "http_client",
    "PeakMemory",
    "raw_http",
    "status_of",
    "now_ms",
    "prometheus_query",
    "remote_write_body",
    "require_prometheus",
    "run_gateway",
    "seal_body",
    "seal_sample_families",
    "serve",
    "start_gateway",
    "start_prometheus",
    "unix_ns",
    "varint",
    "wait_for_series",
    "wait_until",
    "with_timeout",
    "write_request",
    "write_tokens",
]
