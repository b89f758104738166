"""
Measure OTLP over gRPC against OTLP/HTTP on the same sealgw, in one run:
spans per second of sealgw's CPU, each protocol loaded in turn by clients
in this process, the upstream an nginx that answers 204.

    .venv/bin/python bench/otlp_grpc.py [--duration 10] [--rounds 2]
        [--spans 200] [--clients 4] [--json FILE] [--keep]

With C{--transports}, the choice behind C{sealgw.web.grpc} instead: the
per-call cost of gRPC on Twisted with h2 (everything on the reactor
thread) against grpcio's own server handing each call to the reactor and
waiting for its answer (as the gate and the relay would need), both with
a handler that answers at the reactor's next turn and nothing else.

See docs/push.rst ("OTLP over gRPC") for the figures of the last run.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from http.client import HTTPConnection
from pathlib import Path
from typing import Any, Optional

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    # Run as a script: the checkout's bench and sealgw packages.
    sys.path.insert(0, str(ROOT))

import grpc  # noqa: E402
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (  # noqa: E402
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from bench import processes  # noqa: E402

METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


def spans_body(count: int) -> bytes:
    """
    An export of C{count} spans shaped as an SDK's batch processor sends
    them: one resource, one scope, attributes on every span.
    """
    request = ExportTraceServiceRequest()
    resource = request.resource_spans.add()
    attribute = resource.resource.attributes.add()
    attribute.key, attribute.value.string_value = "service.name", "checkout"
    scope = resource.scope_spans.add()
    scope.scope.name = "bench"
    for i in range(count):
        span = scope.spans.add()
        span.trace_id = secrets.token_bytes(16)
        span.span_id = secrets.token_bytes(8)
        span.name = f"GET /cart/{i % 20}"
        span.kind = 2
        span.start_time_unix_nano = 1_700_000_000_000_000_000 + i
        span.end_time_unix_nano = span.start_time_unix_nano + 5_000_000
        for key, value in (("http.method", "GET"), ("http.route", "/cart/{id}")):
            kv = span.attributes.add()
            kv.key, kv.value.string_value = key, value
    return request.SerializeToString()


# -- load --------------------------------------------------------------------


def _run_clients(clients: int, duration: float, one: Callable[[], Callable[[], bool]]) -> tuple[int, int]:
    """
    C{clients} threads, each calling the function C{one()} gives it until
    C{duration} is over: the calls that succeeded and those that did not.
    """
    counts = [[0, 0] for _ in range(clients)]
    deadline = time.monotonic() + duration

    def loop(index: int) -> None:
        call = one()
        while time.monotonic() < deadline:
            counts[index][0 if call() else 1] += 1

    threads = [threading.Thread(target=loop, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(c[0] for c in counts), sum(c[1] for c in counts)


def grpc_caller(target: str, body: bytes, token: str) -> Callable[[], Callable[[], bool]]:
    def one() -> Callable[[], bool]:
        channel = grpc.insecure_channel(target)
        stub = channel.unary_unary(METHOD)
        metadata = (("authorization", f"Bearer {token}"),)

        def call() -> bool:
            try:
                stub(body, metadata=metadata, timeout=10)
                return True
            except grpc.RpcError:
                return False

        return call

    return one


def http_caller(port: int, body: bytes, token: str) -> Callable[[], Callable[[], bool]]:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/x-protobuf"}

    def one() -> Callable[[], bool]:
        connection = HTTPConnection("127.0.0.1", port, timeout=10)

        def call() -> bool:
            connection.request("POST", "/v1/traces", body=body, headers=headers)
            response = connection.getresponse()
            response.read()
            return response.status == 200

        return call

    return one


def measure(
    server: processes.Server, clients: int, duration: float, one: Callable[[], Callable[[], bool]]
) -> dict[str, float]:
    before = server.cpu_seconds()
    started = time.monotonic()
    ok, failed = _run_clients(clients, duration, one)
    elapsed = time.monotonic() - started
    used = server.cpu_seconds() - before
    return {"calls": ok, "failed": failed, "seconds": elapsed, "cpu_seconds": used}


# -- the gateway -------------------------------------------------------------


def gateway_config(http: int, grpc_port: int, admin: int, sink: str, tokens: Path) -> str:
    base = sink.removeprefix("http://").partition("/")[0]
    return f"""\
# Generated by bench/otlp_grpc.py for one benchmark run.
listeners:
  - endpoint: tcp:{http}:interface=127.0.0.1
  - endpoint: tcp:{grpc_port}:interface=127.0.0.1
    protocol: otlp-grpc
admin:
  endpoint: tcp:{admin}:interface=127.0.0.1
log:
  access: false
upstreams:
  target:
    url: http://{base}
    max_connections: 16
push:
  otlp_traces: {{upstream: target, path: /v1/traces}}
auth:
  token_file: {{path: {tokens}}}
"""


def run_gateway(args: argparse.Namespace, workdir: Path, cleanup: ExitStack) -> dict[str, Any]:
    token = secrets.token_hex(16)
    _, sink = processes.start_sink(workdir, cleanup)
    http, grpc_port, admin = (processes.free_port() for _ in range(3))
    tokens = workdir / "tokens.yaml"
    tokens.write_text(f"- name: bench\n  token: {token}\n  tenants: [{processes.TENANT}]\n")
    server = processes.run_sealgw(
        workdir, cleanup, "sealgw", gateway_config(http, grpc_port, admin, sink, tokens), admin
    )
    body = spans_body(args.spans)
    callers = {
        "otlp-grpc": grpc_caller(f"127.0.0.1:{grpc_port}", body, token),
        "otlp-http": http_caller(http, body, token),
    }
    results: dict[str, list[dict[str, float]]] = {name: [] for name in callers}
    for one in callers.values():
        # Warm up: connections, caches.
        _run_clients(args.clients, 1.0, one)
    for _ in range(args.rounds):
        for name, one in callers.items():
            results[name].append(measure(server, args.clients, args.duration, one))
    return {"spans_per_call": args.spans, "body_bytes": len(body), "results": results}


# -- the transports, apart from the gateway ----------------------------------


def serve_h2(port: int) -> None:
    """
    sealgw's gRPC connection with a handler that answers at the reactor's
    next turn.
    """
    from prometheus_client import CollectorRegistry
    from twisted.internet import reactor
    from twisted.internet.task import deferLater

    from sealgw.web._client_ip import ClientAddress
    from sealgw.web._metrics import GatewayMetrics
    from sealgw.web.grpc import Code, GrpcSite
    from sealgw.web.grpc._services import Answer
    from sealgw.web.grpc._wire import frame

    response = frame(ExportTraceServiceResponse().SerializeToString())

    class Services:
        async def export(self, signal: str, call: Any, encoding: Optional[str]) -> Answer:
            await deferLater(reactor, 0, lambda: None)
            return Answer(Code.OK, "", response)

    class Routes:
        client_address = ClientAddress(())

    site = GrpcSite(Routes(), reactor, GatewayMetrics(CollectorRegistry()), 5 << 20,  # type: ignore[arg-type]
                    access_log=False)
    site.services = Services()  # type: ignore[assignment]
    reactor.listenTCP(port, site, interface="127.0.0.1")  # type: ignore[attr-defined]
    reactor.run()  # type: ignore[attr-defined]


def serve_grpcio(port: int) -> None:
    """
    grpcio's server, its handler threads handing each call to the reactor
    (where the gate and the relay live) and waiting for the answer.
    """
    from concurrent.futures import ThreadPoolExecutor

    from twisted.internet import reactor
    from twisted.internet.task import deferLater
    from twisted.internet.threads import blockingCallFromThread

    response = ExportTraceServiceResponse().SerializeToString()

    def on_reactor(body: bytes) -> Any:
        return deferLater(reactor, 0, lambda: response)

    def export(body: bytes, context: Any) -> bytes:
        return blockingCallFromThread(reactor, on_reactor, body)

    handler = grpc.method_handlers_generic_handler(
        "opentelemetry.proto.collector.trace.v1.TraceService",
        {"Export": grpc.unary_unary_rpc_method_handler(export)},
    )
    server = grpc.server(ThreadPoolExecutor(max_workers=16))
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    reactor.run(installSignalHandlers=False)  # type: ignore[attr-defined]


def _grpc_ready(target: str) -> Callable[[], bool]:
    def ready() -> bool:
        with grpc.insecure_channel(target) as channel:
            try:
                grpc.channel_ready_future(channel).result(timeout=0.5)
                return True
            except grpc.FutureTimeoutError:
                return False

    return ready


def run_transports(args: argparse.Namespace, workdir: Path, cleanup: ExitStack) -> dict[str, Any]:
    body = spans_body(args.spans)
    results: dict[str, list[dict[str, float]]] = {}
    servers = {}
    for kind in ("h2", "grpcio"):
        port = processes.free_port()
        server = processes.Server(
            kind,
            [sys.executable, __file__, f"--serve-{kind}", str(port)],
            workdir / f"{kind}.log",
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        cleanup.callback(server.stop)
        server.wait_until(_grpc_ready(f"127.0.0.1:{port}"))
        servers[kind] = (server, grpc_caller(f"127.0.0.1:{port}", body, "-"))
        results[kind] = []
        _run_clients(args.clients, 1.0, servers[kind][1])
    for _ in range(args.rounds):
        for kind, (server, one) in servers.items():
            results[kind].append(measure(server, args.clients, args.duration, one))
    return {"spans_per_call": args.spans, "body_bytes": len(body), "results": results}


# -- report --------------------------------------------------------------------


def report(outcome: dict[str, Any], unit: str) -> str:
    lines = [
        f"{outcome['spans_per_call']} spans a call ({outcome['body_bytes']} bytes)",
        f"{'':12} {'calls/s':>9} {'failed':>7} {'server CPU':>11} {unit:>18}",
    ]
    for name, rounds in outcome["results"].items():
        calls = sum(r["calls"] for r in rounds)
        failed = sum(r["failed"] for r in rounds)
        seconds = sum(r["seconds"] for r in rounds)
        cpu = sum(r["cpu_seconds"] for r in rounds)
        per_cpu = calls * (outcome["spans_per_call"] if unit.startswith("spans") else 1) / cpu
        lines.append(
            f"{name:12} {calls / seconds:9.0f} {failed:7d} {cpu / seconds:10.0%} {per_cpu:18,.0f}"
        )
    return "\n".join(lines)


def parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per round and protocol")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--spans", type=int, default=200, help="spans per export")
    parser.add_argument("--clients", type=int, default=4, help="client threads, one connection each")
    parser.add_argument("--transports", action="store_true",
                        help="compare h2 on Twisted with grpcio's server plus a reactor hop")
    parser.add_argument("--json", type=Path, help="write the figures here too")
    parser.add_argument("--keep", action="store_true", help="keep the run's folder (logs)")
    parser.add_argument("--serve-h2", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--serve-grpcio", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.duration <= 0 or args.rounds < 1 or args.spans < 1 or args.clients < 1:
        parser.error("--duration, --rounds, --spans and --clients must be positive")
    return args


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    if args.serve_h2 is not None:
        serve_h2(args.serve_h2)
        return 0
    if args.serve_grpcio is not None:
        serve_grpcio(args.serve_grpcio)
        return 0
    workdir = Path(tempfile.mkdtemp(prefix="sealgw-bench-otlp-grpc-"))
    with ExitStack() as cleanup:
        if args.transports:
            outcome = run_transports(args, workdir, cleanup)
            print(report(outcome, "calls/CPU-second"))
        else:
            outcome = run_gateway(args, workdir, cleanup)
            print(report(outcome, "spans/CPU-second"))
    if args.json is not None:
        args.json.write_text(json.dumps(outcome, indent=2))
    if args.keep:
        print(f"logs in {workdir}")
    else:
        import shutil

        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
