"""
A C{prometheus_client} registry as C{MetricFamily} protobufs and remote
write: every metric type becomes the series Prometheus would scrape, the
same whether sent as remote write or through the gateway's seal route.
"""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, Enum, Gauge, Histogram, Info, Summary
from prometheus_client.core import (
    GaugeHistogramMetricFamily,
    SummaryMetricFamily,
    UntypedMetricFamily,
)
from twisted.trial.unittest import SynchronousTestCase

from sealgw.client import _families
from sealgw.client._retry import Backoff, parse_retry_after
from sealgw.signals import snappy_decompress
from sealgw.signals._wire import write_request
from sealgw.signals.proto import metrics_pb2, remote_pb2
from sealgw.signals.seal import decode_delimited, decode_seal_json, to_series


def as_dict(request: remote_pb2.WriteRequest) -> dict[str, tuple[float, int]]:
    out = {}
    for one in request.timeseries:
        labels = {label.name: label.value for label in one.labels}
        name = labels.pop("__name__")
        inner = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        out[f"{name}{{{inner}}}"] = (one.samples[0].value, one.samples[0].timestamp)
    return out


class Custom:
    """
    Metric families only custom collectors make.
    """

    def collect(self):  # type: ignore[no-untyped-def]
        summary = SummaryMetricFamily("rpc", "rpc", labels=["m"])
        summary.add_metric(["get"], count_value=4, sum_value=2.0)
        summary.samples.append(
            summary.samples[0]._replace(
                name="rpc", labels={"m": "get", "quantile": "0.5"}, value=0.3
            )
        )
        yield summary
        gh = GaugeHistogramMetricFamily(
            "queue", "queue", buckets=[("1", 2.0), ("+Inf", 3.5)], gsum_value=4.0
        )
        yield gh
        untyped = UntypedMetricFamily("legacy", "legacy")
        untyped.add_metric([], 9.0, timestamp=12.5)
        yield untyped


class FamiliesTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.registry = CollectorRegistry()
        Counter("jobs", "jobs done", ["kind"], registry=self.registry).labels("a").inc(3)
        Gauge("temp", "temperature", registry=self.registry).set(21.5)
        h = Histogram("lat", "latency", buckets=(0.1, 1.0), registry=self.registry)
        for value in (0.05, 0.5, 3.0):
            h.observe(value)
        Summary("size", "sizes", registry=self.registry).observe(10)
        Info("build", "build", registry=self.registry).info({"version": "1.2"})
        Enum("state", "state", states=["up", "down"], registry=self.registry)
        self.registry.register(Custom())  # type: ignore[arg-type]

    def test_series(self) -> None:
        """
        Every type, named as Prometheus names it: counters with
        C{_total}, histogram buckets with Prometheus's C{le} spelling and
        C{+Inf}, summaries with quantiles, C{_sum} and C{_count}, info and
        stateset as gauges; no C{_created} series.  The pusher's labels
        are on every series; samples without a time get C{now_ms}.
        """
        messages = _families.families(self.registry)
        request = _families.write_request(messages, {"job": "app"}, 1000)
        self.assertEqual(
            as_dict(request),
            {
                'jobs_total{job="app",kind="a"}': (3.0, 1000),
                'temp{job="app"}': (21.5, 1000),
                'lat_bucket{job="app",le="0.1"}': (1.0, 1000),
                'lat_bucket{job="app",le="1.0"}': (2.0, 1000),
                'lat_bucket{job="app",le="+Inf"}': (3.0, 1000),
                'lat_sum{job="app"}': (3.55, 1000),
                'lat_count{job="app"}': (3.0, 1000),
                'size_sum{job="app"}': (10.0, 1000),
                'size_count{job="app"}': (1.0, 1000),
                'build_info{job="app",version="1.2"}': (1.0, 1000),
                'state{job="app",state="up"}': (1.0, 1000),
                'state{job="app",state="down"}': (0.0, 1000),
                'rpc{job="app",m="get",quantile="0.5"}': (0.3, 1000),
                'rpc_sum{job="app",m="get"}': (2.0, 1000),
                'rpc_count{job="app",m="get"}': (4.0, 1000),
                'queue_bucket{job="app",le="1.0"}': (2.0, 1000),
                'queue_bucket{job="app",le="+Inf"}': (3.5, 1000),
                'queue_sum{job="app"}': (4.0, 1000),
                'queue_count{job="app"}': (3.5, 1000),
                'legacy{job="app"}': (9.0, 12500),
            },
        )

    def test_types(self) -> None:
        messages = {m.name: m.type for m in _families.families(self.registry)}
        self.assertEqual(messages["jobs_total"], metrics_pb2.COUNTER)
        self.assertEqual(messages["lat"], metrics_pb2.HISTOGRAM)
        self.assertEqual(messages["queue"], metrics_pb2.GAUGE_HISTOGRAM)
        self.assertEqual(messages["rpc"], metrics_pb2.SUMMARY)
        self.assertEqual(messages["legacy"], metrics_pb2.UNTYPED)
        self.assertEqual(messages["build_info"], metrics_pb2.GAUGE)

    def test_metadata(self) -> None:
        messages = _families.families(self.registry)
        request = _families.write_request(messages, {}, 0, _families.metadata_of(messages))
        kinds = {m.metric_family_name: (m.type, m.help) for m in request.metadata}
        self.assertEqual(kinds["jobs_total"], (remote_pb2.MetricMetadata.COUNTER, "jobs done"))
        self.assertEqual(kinds["lat"], (remote_pb2.MetricMetadata.HISTOGRAM, "latency"))
        self.assertEqual(kinds["legacy"], (remote_pb2.MetricMetadata.UNKNOWN, "legacy"))

    def test_seal_body_reads_as_the_gateway_reads_it(self) -> None:
        """
        The seal body, read back with the gateway's own decoder and
        converted as its seal route converts it, gives the same series as
        the remote-write body.
        """
        messages = _families.families(self.registry)
        body = _families.seal_body(messages, {"job": "app"})
        labels, buf = decode_seal_json(snappy_decompress(body, 1 << 20))
        series = to_series(
            decode_delimited(buf),
            client_labels=labels,
            add={},
            remove=frozenset(),
            node_name=None,
            client_ip=None,
            now_ms=1000,
        )
        direct = _families.write_request(messages, {"job": "app"}, 1000)
        self.assertEqual(
            as_dict(remote_pb2.WriteRequest.FromString(write_request(series))), as_dict(direct)
        )

    @given(st.lists(st.binary(max_size=300), max_size=5))
    def test_delimited(self, payloads: list[bytes]) -> None:
        """
        The delimited stream splits back into the same messages, whatever
        their lengths (one- and two-byte varints).
        """
        messages = [metrics_pb2.MetricFamily(name="m", help=p.hex()) for p in payloads]
        again = decode_delimited(_families.delimited(messages))
        self.assertEqual(again, messages)


class RetryTests(SynchronousTestCase):
    def test_backoff_doubles_with_jitter(self) -> None:
        low = Backoff(initial=1.0, maximum=8.0, random=lambda: 0.0)
        high = Backoff(initial=1.0, maximum=8.0, random=lambda: 0.999999)
        self.assertEqual([low.delay(n) for n in range(1, 6)], [0.5, 1.0, 2.0, 4.0, 4.0])
        self.assertEqual([round(high.delay(n), 3) for n in range(1, 6)], [1.0, 2.0, 4.0, 8.0, 8.0])

    def test_retry_after_wins_within_bounds(self) -> None:
        backoff = Backoff(max_retry_after=60.0)
        self.assertEqual(backoff.delay(1, retry_after=30.0), 30.0)
        self.assertEqual(backoff.delay(1, retry_after=3600.0), 60.0)

    def test_parse_retry_after(self) -> None:
        self.assertEqual(parse_retry_after("120", 0.0), 120.0)
        self.assertEqual(parse_retry_after(" 1.5 ", 0.0), 1.5)
        self.assertEqual(parse_retry_after("Thu, 01 Jan 1970 00:01:40 GMT", 40.0), 60.0)
        self.assertEqual(parse_retry_after("Thu, 01 Jan 1970 00:00:00 GMT", 40.0), 0.0)
        for bad in (None, "", "soon", "-1", "nan", "inf"):
            self.assertIsNone(parse_retry_after(bad, 0.0), bad)
        self.assertFalse(math.isnan(Backoff().delay(3)))
