"""
Generated protobuf modules for the push formats sealgw decodes itself:
Prometheus remote write (C{remote_pb2}), the Prometheus client data model
(C{metrics_pb2}) and Loki's push request (C{logproto_pb2}).

The C{.proto} sources sit beside them; regenerate with
C{python -m sealgw.signals.proto.regenerate}.  OTLP comes from the
C{opentelemetry-proto} package instead.
"""
