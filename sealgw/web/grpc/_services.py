"""
The three OTLP services over gRPC (C{TraceService}, C{MetricsService},
C{LogsService}, each one unary C{Export}): a call becomes a
L{PushCall} for the same path OTLP/HTTP takes, into the same
C{push.otlp_*} routes, and its outcome a gRPC status.
"""

from __future__ import annotations

from typing import Optional

import attr

from sealgw.signals import otlp
from sealgw.signals.intake import Intake, RequestFacts
from sealgw.web.grpc._wire import Code, code_for, frame, retry_delay, unframe
from sealgw.web.push import Accepted, PushCall, PushRoutes, otlp_partial_success

#: The gRPC method paths and the OTLP signal each carries.
METHODS = {
    "/opentelemetry.proto.collector.trace.v1.TraceService/Export": "traces",
    "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export": "metrics",
    "/opentelemetry.proto.collector.logs.v1.LogsService/Export": "logs",
}


@attr.frozen
class Answer:
    """
    How a call ends.

    @ivar code: its gRPC status.
    @ivar message: the status message (empty on success).
    @ivar response: on success, the framed C{Export*ServiceResponse}.
    @ivar retry_after: seconds to send as C{RetryInfo}, if the client may
        retry after waiting.
    @ivar status: the same outcome as an HTTP status, for the access log
        and the request metrics, so that they read as OTLP/HTTP's do.
    """

    code: Code
    message: str
    response: Optional[bytes] = None
    retry_after: Optional[int] = None
    status: int = 200


class OTLPServices:
    """
    Exports handed to the push routes' shared path.
    """

    def __init__(self, push: PushRoutes) -> None:
        self.push = push

    async def export(self, signal: str, call: PushCall, grpc_encoding: Optional[str]) -> Answer:
        """
        Relay one C{Export} of C{signal}; C{call.body} is the request's
        gRPC body (the length-prefixed message), unframed once the caller
        is admitted, with the decoding, in the shared path.
        """
        inner = self.push.otlp_build(signal)

        def build(body: bytes, facts: RequestFacts) -> Intake:
            message, encoding = unframe(body, grpc_encoding)
            return inner(message, attr.evolve(facts, content_encoding=encoding))

        config = getattr(self.push.config.push, f"otlp_{signal}")
        outcome = await self.push.relay(call, f"otlp_{signal}", config, build)
        if isinstance(outcome, Accepted):
            rejected, message = otlp_partial_success(signal, outcome)
            body, _ = otlp.encode_response(signal, otlp.PROTOBUF, rejected, message)
            return Answer(Code.OK, "", frame(body))
        return Answer(
            code_for(outcome.status),
            outcome.message,
            retry_after=retry_delay(outcome.status, outcome.retry_after),
            status=outcome.status,
        )
