"""
An application instrumented with the OpenTelemetry SDK, sending its traces
and logs to sealgw over OTLP/HTTP with a bearer token.

Nothing here knows about sealgw but its URL and the token: the stock
OTLP/HTTP exporters, pointed at C{ENDPOINT/v1/traces} and C{ENDPOINT/v1/logs}
with an C{Authorization} header, are all a client needs.  sealgw decides the
tenant from the token.

    python otel_example.py --endpoint http://sealgw:8080 \\
        --token-file /run/secrets/otel-team-a --service-name shop-a

Every C{--interval} seconds it handles one pretend checkout: a trace of a few
spans (one in five fails) and log lines written inside them, so each log
record carries the trace and span ids.  C{--count} stops it after that many
(0, the default, runs until SIGTERM); the SDK's batches are flushed on the
way out.
"""

from __future__ import annotations

import argparse
import logging
import random
import signal
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any, Optional

from opentelemetry import trace
from opentelemetry._logs import set_logger_provider
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Status, StatusCode

log = logging.getLogger("shop")


def parse(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip())
    parser.add_argument("--endpoint", default="http://sealgw:8080", help="sealgw's base URL")
    parser.add_argument("--token-file", required=True, help="a file holding the bearer token")
    parser.add_argument("--service-name", default="shop", help="service.name of the resource")
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between checkouts")
    parser.add_argument("--count", type=int, default=0, help="checkouts to make; 0: until SIGTERM")
    return parser.parse_args(argv)


def read_token(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        token = f.read().strip()
    if not token:
        raise SystemExit(f"otel_example: {path} holds no token")
    return token


def checkout(tracer: trace.Tracer, number: int, rng: random.Random) -> None:
    """
    One pretend request: a server span, two children, logs inside them.
    """
    with tracer.start_as_current_span("POST /checkout", kind=trace.SpanKind.SERVER) as span:
        span.set_attribute("http.request.method", "POST")
        span.set_attribute("url.path", "/checkout")
        span.set_attribute("shop.order", number)
        items = rng.randint(1, 5)
        log.info("checkout started", extra={"order": number, "items": items})
        with tracer.start_as_current_span("SELECT stock") as db:
            db.set_attribute("db.system", "postgresql")
            time.sleep(rng.uniform(0.001, 0.02))
        with tracer.start_as_current_span("charge card") as payment:
            time.sleep(rng.uniform(0.001, 0.05))
            if rng.random() < 0.2:
                payment.set_status(Status(StatusCode.ERROR, "card declined"))
                span.set_status(Status(StatusCode.ERROR, "payment failed"))
                span.set_attribute("http.response.status_code", 402)
                log.warning("payment declined", extra={"order": number})
                return
        span.set_attribute("http.response.status_code", 200)
        log.info("checkout done", extra={"order": number, "items": items})


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse(argv)
    headers = {"Authorization": f"Bearer {read_token(args.token_file)}"}
    endpoint = args.endpoint.rstrip("/")
    resource = Resource.create({"service.name": args.service_name})

    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(
        BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{endpoint}/v1/traces", headers=headers))
    )
    trace.set_tracer_provider(tracer_provider)

    logger_provider = LoggerProvider(resource=resource)
    logger_provider.add_log_record_processor(
        BatchLogRecordProcessor(OTLPLogExporter(endpoint=f"{endpoint}/v1/logs", headers=headers))
    )
    set_logger_provider(logger_provider)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    log.addHandler(LoggingHandler(level=logging.INFO, logger_provider=logger_provider))

    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    tracer = trace.get_tracer("sealgw-demo.shop")
    rng = random.Random()
    number = 0
    try:
        while not stop.is_set() and (args.count == 0 or number < args.count):
            number += 1
            checkout(tracer, number, rng)
            stop.wait(args.interval)
    finally:
        # Flushes what is batched: every span and record made is sent.
        tracer_provider.shutdown()
        logger_provider.shutdown()
    print(f"otel_example: {number} checkout(s) sent to {endpoint}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
