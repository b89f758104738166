"""
OTLP over gRPC: the OpenTelemetry Collector's C{otlp} exporter, Alloy's
C{otelcol.exporter.otlp} and the SDKs' default, served on listeners with
C{protocol: otlp-grpc} and relayed by the same path as OTLP/HTTP
(L{sealgw.web.push.PushRoutes.relay}).

HTTP/2 is spoken on the reactor thread with C{h2}, so that the gate, the
limits and the relay, all Deferred-based, run where they always do, with
no hop between threads per call (docs/push.rst has the figures that
decided it).
"""

from sealgw.web.grpc._services import METHODS, OTLPServices
from sealgw.web.grpc._site import GrpcSite
from sealgw.web.grpc._wire import Code

__all__ = ["METHODS", "Code", "GrpcSite", "OTLPServices"]
