"""
Remote write 2.0: the codec (references checked, their expansion bounded,
the 1.0 form, labels through the symbols table) and the intake that
relays a 2.0 body as it came, rewritten, or converted to 1.0.
"""

from __future__ import annotations

from typing import Any

import attr
from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from sealgw.signals import remote_write, remote_write2, snappy_compress, snappy_decompress
from sealgw.signals.errors import BadEncoding, DecodeError, PayloadTooLarge, UnsupportedMediaType
from sealgw.signals.intake import AllSeriesRefused, RequestFacts, remote_write_pushes
from sealgw.signals.limits import LimitExceeded, SampleLimits
from sealgw.signals.proto import remote_pb2
from sealgw.signals.proto import remote_v2_pb2 as v2
from tests.rw2_support import body_v2, native_histogram, request_v2

NOW = 1_700_000_000.0
NOW_MS = int(NOW * 1000)
LIMIT = 1 << 20
FACTS = RequestFacts(
    content_type=remote_write2.CONTENT_TYPE,
    content_encoding="snappy",
    remote_write_version="2.0.0",
    tenant="team-a",
    received_at=NOW,
)


def _v1(raw: bytes) -> remote_pb2.WriteRequest:
    return remote_pb2.WriteRequest.FromString(raw)


def _labels(series: Any) -> list[tuple[str, str]]:
    return [(label.name, label.value) for label in series.labels]


def _labels_v2(request: v2.Request, series: Any) -> list[tuple[str, str]]:
    refs = list(series.labels_refs)
    return [(request.symbols[n], request.symbols[v]) for n, v in zip(refs[::2], refs[1::2], strict=True)]


class ReferencesTests(SynchronousTestCase):
    def test_valid(self) -> None:
        request = request_v2(
            [({"__name__": "up", "job": "a"}, [(1.0, NOW_MS)])],
            exemplar=({"trace_id": "abc"}, 1.0, NOW_MS),
            metadata=(v2.Metadata.METRIC_TYPE_GAUGE, "help", "seconds"),
        )
        remote_write2.check_references(request)

    def test_first_symbol_not_empty(self) -> None:
        request = v2.Request(symbols=["__name__", "up"])
        request.timeseries.add(labels_refs=[0, 1])
        e = self.assertRaises(DecodeError, remote_write2.check_references, request)
        self.assertEqual(e.message, "remote write 2.0: symbols[0] must be the empty string")

    def test_odd_references(self) -> None:
        request = v2.Request(symbols=["", "__name__", "up"])
        request.timeseries.add(labels_refs=[1, 2])
        request.timeseries.add(labels_refs=[1, 2, 1])
        e = self.assertRaises(DecodeError, remote_write2.check_references, request)
        self.assertEqual(
            e.message,
            "remote write 2.0: timeseries[1]: labels_refs holds an odd number of references",
        )

    def test_past_the_table(self) -> None:
        for build in (
            lambda r: r.timeseries.add(labels_refs=[1, 3]),
            lambda r: r.timeseries.add(labels_refs=[1, 2]).exemplars.add(labels_refs=[1, 9]),
            lambda r: setattr(r.timeseries.add(labels_refs=[1, 2]).metadata, "help_ref", 3),
            lambda r: setattr(r.timeseries.add(labels_refs=[1, 2]).metadata, "unit_ref", 7),
        ):
            request = v2.Request(symbols=["", "__name__", "up"])
            build(request)
            e = self.assertRaises(DecodeError, remote_write2.check_references, request)
            self.assertIn("timeseries[0]", e.message)
            self.assertIn("symbols table", e.message)

    def test_not_protobuf(self) -> None:
        e = self.assertRaises(DecodeError, remote_write2.decode, b"\x22\xff\xff\xff\xff\x0f")
        self.assertIn("not a valid io.prometheus.write.v2.Request", e.message)


class ExpansionTests(SynchronousTestCase):
    def test_bomb(self) -> None:
        """
        A few kilobytes that name a 100 KiB symbol on 1,000 series would
        be 100 MB as 1.0: refused before anything is expanded.
        """
        request = v2.Request(symbols=["", "__name__", "up", "big", "x" * 100_000])
        for _ in range(1000):
            request.timeseries.add(labels_refs=[1, 2, 3, 4]).samples.add(value=1, timestamp=1)
        self.assertLess(len(body_v2(request)), 20_000)
        e = self.assertRaises(PayloadTooLarge, remote_write2.expanded_size, request, LIMIT)
        self.assertIn(f"more than {LIMIT} bytes", e.message)

    def test_expansion_limit(self) -> None:
        """
        8 MiB, or 64 times the request beyond that, never past the
        decompressed-body limit.
        """
        limit = remote_write2.expansion_limit
        self.assertEqual(limit(b"x" * 1000, 50 << 20), 8 << 20)
        self.assertEqual(limit(b"x" * (1 << 18), 50 << 20), 16 << 20)
        self.assertEqual(limit(b"x" * (1 << 20), 50 << 20), 50 << 20)
        self.assertEqual(limit(b"x", 1 << 20), 1 << 20)

    def test_small_body_large_expansion(self) -> None:
        """
        4 KB naming a 50 KB symbol on 1,000 series: 50 MB written out,
        under the decompressed-body limit but far past what a request of
        its size may expand to; refused before it is written out.
        """
        request = v2.Request(symbols=["", "__name__", "up", "big", "x" * 50_000])
        for _ in range(1000):
            request.timeseries.add(labels_refs=[1, 2, 3, 4]).samples.add(
                value=1, timestamp=NOW_MS
            )
        body = body_v2(request)
        self.assertLess(len(body), 5000)
        e = self.assertRaises(PayloadTooLarge, _push, body, FACTS, limit=50 << 20)
        self.assertIn("come to more than 8388608 bytes, the most this request", e.message)

    def test_within(self) -> None:
        request = request_v2([({"__name__": "up", "job": "a"}, [(1.0, 1)])])
        self.assertEqual(remote_write2.expanded_size(request, LIMIT), len("__name__upjoba"))


class ToV1Tests(SynchronousTestCase):
    def test_series(self) -> None:
        """
        Labels sorted by name, an empty value left out; samples, an
        exemplar and the metadata of the family carried over.
        """
        request = request_v2(
            [
                ([("job", "a"), ("__name__", "up"), ("empty", "")], [(1.5, 10), (2.5, 20)]),
                ({"__name__": "down"}, [(float("-inf"), -5)]),
            ],
            exemplar=({"trace_id": "abc"}, 0.5, 15),
            metadata=(v2.Metadata.METRIC_TYPE_COUNTER, "what it counts", "bytes"),
        )
        request.timeseries[0].created_timestamp = 3
        write = _v1(remote_write2.to_v1(request))
        self.assertEqual(len(write.timeseries), 2)
        first, second = write.timeseries
        self.assertEqual(_labels(first), [("__name__", "up"), ("job", "a")])
        self.assertEqual([(s.value, s.timestamp) for s in first.samples], [(1.5, 10), (2.5, 20)])
        [exemplar] = first.exemplars
        self.assertEqual(
            (_labels(exemplar), exemplar.value, exemplar.timestamp),
            ([("trace_id", "abc")], 0.5, 15),
        )
        self.assertEqual(_labels(second), [("__name__", "down")])
        self.assertEqual([(s.value, s.timestamp) for s in second.samples], [(float("-inf"), -5)])
        [metadata] = write.metadata
        self.assertEqual(
            (metadata.type, metadata.metric_family_name, metadata.help, metadata.unit),
            (remote_pb2.MetricMetadata.COUNTER, "up", "what it counts", "bytes"),
        )
        # What the C checks read is a 1.0 request like any other.
        remote_write.validate(write)

    def test_histogram_field_for_field(self) -> None:
        """
        A native histogram is 1.0's with the same fields: every one the
        2.0 message had is in the 1.0 one.
        """
        request = request_v2([], histograms=[({"__name__": "latency"}, 7)])
        histogram = request.timeseries[0].histograms[0]
        histogram.custom_values.extend([0.1, 0.2])
        [series] = _v1(remote_write2.to_v1(request)).timeseries
        [copied] = series.histograms
        self.assertEqual(copied.timestamp, 7)
        self.assertEqual(v2.Histogram.FromString(copied.SerializeToString()), histogram)

    @given(
        st.lists(
            st.tuples(
                st.dictionaries(
                    st.sampled_from(["__name__", "a", "b", "job", "z_"]),
                    st.text(max_size=5),
                    min_size=1,
                ),
                st.lists(st.tuples(st.floats(allow_nan=False), st.integers(-(2**63), 2**63 - 1)), max_size=3),
            ),
            max_size=5,
        )
    )
    def test_same_as_objects(self, series: Any) -> None:
        """
        The 1.0 form written as bytes reads as the 1.0 objects built
        from the same series.
        """
        request = request_v2([(labels, samples) for labels, samples in series])
        expected = remote_pb2.WriteRequest()
        for labels, samples in series:
            one = expected.timeseries.add()
            for name in sorted(labels):
                if labels[name]:
                    one.labels.add(name=name, value=labels[name])
            for value, timestamp in samples:
                one.samples.add(value=value, timestamp=timestamp)
        self.assertEqual(_v1(remote_write2.to_v1(request)), expected)


class ApplyLabelsTests(SynchronousTestCase):
    def test_set_replace_remove(self) -> None:
        """
        The added label replaces the client's value for it, through a new
        symbol; removed labels go; labels stay sorted; exemplars and
        metadata still name what they named.
        """
        request = request_v2(
            [
                ({"__name__": "up", "tenant": "team-b", "drop": "x"}, [(1.0, 1)]),
                ({"__name__": "down", "job": "j"}, [(1.0, 1)]),
            ],
            exemplar=({"trace_id": "abc"}, 1.0, 1),
            metadata=(v2.Metadata.METRIC_TYPE_GAUGE, "help", ""),
        )
        symbols_before = list(request.symbols)
        changed = remote_write2.apply_labels(request, {"tenant": "team-a"}, frozenset({"drop"}))
        self.assertTrue(changed)
        self.assertEqual(list(request.symbols)[: len(symbols_before)], symbols_before)
        first, second = request.timeseries
        self.assertEqual(
            _labels_v2(request, first), [("__name__", "up"), ("tenant", "team-a")]
        )
        self.assertEqual(
            _labels_v2(request, second),
            [("__name__", "down"), ("job", "j"), ("tenant", "team-a")],
        )
        self.assertEqual(_labels_v2(request, first.exemplars[0]), [("trace_id", "abc")])
        self.assertEqual(request.symbols[first.metadata.help_ref], "help")
        remote_write2.check_references(request)

    def test_unchanged(self) -> None:
        request = request_v2([({"__name__": "up", "tenant": "team-a"}, [(1.0, 1)])])
        before = request.SerializeToString()
        self.assertFalse(remote_write2.apply_labels(request, {"tenant": "team-a"}, frozenset()))
        self.assertFalse(remote_write2.apply_labels(request, {}, frozenset()))
        self.assertEqual(request.SerializeToString(), before)


class WrittenTests(SynchronousTestCase):
    def test_counts(self) -> None:
        request = request_v2(
            [({"__name__": "up"}, [(1.0, 1), (2.0, 2)])],
            histograms=[({"__name__": "h"}, 1)],
            exemplar=({"a": "b"}, 1.0, 1),
        )
        self.assertEqual(remote_write2.written(request), remote_write2.Written(2, 1, 1))

    def test_parse(self) -> None:
        parse = remote_write2.parse_written
        self.assertIsNone(parse({}))
        self.assertEqual(
            parse({"x-prometheus-remote-write-samples-written": "5"}),
            remote_write2.Written(5, 0, 0),
        )
        self.assertEqual(parse(remote_write2.Written(1, 2, 3).headers()), remote_write2.Written(1, 2, 3))
        self.assertIsNone(parse({"X-Prometheus-Remote-Write-Samples-Written": "-1"}))


def _push(body: bytes, facts: RequestFacts = FACTS, **kwargs: Any) -> Any:
    options: dict[str, Any] = {"add": {}, "remove": frozenset(), "limit": LIMIT, "check": "labels"}
    options.update(kwargs)
    return remote_write_pushes(body, facts, **options)


class IntakeTests(SynchronousTestCase):
    def test_converted_for_a_1_0_upstream(self) -> None:
        request = request_v2(
            [({"__name__": "up", "job": "a"}, [(1.0, NOW_MS)])],
            histograms=[({"__name__": "h"}, NOW_MS)],
            exemplar=({"trace_id": "abc"}, 1.0, NOW_MS),
        )
        intake = _push(body_v2(request))
        [push] = intake.pushes
        self.assertEqual(
            (push.content_type, push.content_encoding, dict(push.extra_headers), push.tenant),
            ("application/x-protobuf", "snappy", {"X-Prometheus-Remote-Write-Version": "0.1.0"}, "team-a"),
        )
        write = _v1(snappy_decompress(push.body, LIMIT))
        self.assertEqual(
            [_labels(s) for s in write.timeseries],
            [[("__name__", "up"), ("job", "a")], [("__name__", "h")]],
        )
        self.assertEqual(intake.written, remote_write2.Written(1, 1, 1))
        self.assertIsNone(intake.refused)

    def test_relayed_as_it_came(self) -> None:
        """
        To a 2.0 upstream with nothing to change, the client's bytes go on
        (and, at C{check: headers}, are not even decompressed: the
        upstream's written counts are the only ones).
        """
        body = body_v2(request_v2([({"__name__": "up"}, [(1.0, NOW_MS)])]))
        facts = attr.evolve(FACTS, upstream_remote_write=2)
        for check in ("headers", "decode", "labels"):
            intake = _push(body, facts, check=check)
            [push] = intake.pushes
            self.assertEqual(push.body, body)
            self.assertEqual(push.content_type, remote_write2.CONTENT_TYPE)
            self.assertEqual(
                dict(push.extra_headers), {"X-Prometheus-Remote-Write-Version": "2.0.0"}
            )
            self.assertEqual(
                intake.written, None if check == "headers" else remote_write2.Written(1, 0, 0)
            )
        e = self.assertRaises(PayloadTooLarge, _push, body, facts, check="headers", limit=4)
        self.assertIn("decompresses to", e.message)

    def test_label_tenancy(self) -> None:
        """
        An upstream that keeps tenants apart by label: every series gets
        the tenant's label, the client's value for it replaced, as 2.0 or
        as 1.0; no tenant header.
        """
        request = request_v2(
            [({"__name__": "up", "tenant": "team-b"}, [(1.0, NOW_MS)]), ({"__name__": "x"}, [(1.0, NOW_MS)])]
        )
        for version in (1, 2):
            facts = attr.evolve(FACTS, tenant_label="tenant", upstream_remote_write=version)
            [push] = _push(body_v2(request), facts, check="headers", add={"env": "prod"}).pushes
            self.assertIsNone(push.tenant)
            self.assertEqual(push.owner, "team-a")
            raw = snappy_decompress(push.body, LIMIT)
            if version == 1:
                got = [_labels(s) for s in _v1(raw).timeseries]
            else:
                decoded = remote_write2.decode(raw)
                got = [_labels_v2(decoded, s) for s in decoded.timeseries]
            self.assertEqual(
                got,
                [
                    [("__name__", "up"), ("env", "prod"), ("tenant", "team-a")],
                    [("__name__", "x"), ("env", "prod"), ("tenant", "team-a")],
                ],
            )

    def test_sample_limits(self) -> None:
        """
        A series over a limit is left out of what is relayed, as 2.0 or
        1.0, and said; the written counts are of the rest.
        """
        request = request_v2(
            [
                ({"__name__": "ok"}, [(1.0, NOW_MS)]),
                ({"__name__": "future"}, [(1.0, NOW_MS + 3_600_000)]),
                ({"__name__": "ok2"}, [(1.0, NOW_MS), (2.0, NOW_MS)]),
            ]
        )
        for version in (1, 2):
            facts = attr.evolve(FACTS, upstream_remote_write=version)
            intake = _push(body_v2(request), facts)
            raw = snappy_decompress(intake.pushes[0].body, LIMIT)
            count = len((_v1(raw) if version == 1 else remote_write2.decode(raw)).timeseries)
            self.assertEqual(count, 2)
            self.assertEqual(intake.written, remote_write2.Written(3, 0, 0))
            self.assertEqual(intake.refused.by_reason, (("max_future", 1),))
            self.assertIn("remote write 2.0: 1 of 3 series refused", intake.refused.message)
            self.assertIn('timeseries[1] {__name__="future"}', intake.refused.message)

    def test_all_refused(self) -> None:
        request = request_v2([({"__name__": "old", "__bad": "x"}, [(1.0, NOW_MS)])])
        e = self.assertRaises(AllSeriesRefused, _push, body_v2(request))
        self.assertIn("all 1 series refused", e.message)
        self.assertIn("reserved", e.message)

    def test_too_many_series(self) -> None:
        request = request_v2([({"__name__": f"s{i}"}, [(1.0, NOW_MS)]) for i in range(3)])
        facts = attr.evolve(FACTS, samples=SampleLimits(max_series_per_push=2))
        e = self.assertRaises(LimitExceeded, _push, body_v2(request), facts)
        self.assertIn("3 series in one push, more than max_series_per_push (2)", e.message)

    def test_label_rules(self) -> None:
        for labels, problem in (
            ({"job": "a"}, "no __name__ label"),
            ({"__name__": "up", "bad-name": "x"}, "invalid label name 'bad-name'"),
        ):
            request = request_v2([(labels, [(1.0, NOW_MS)])])
            e = self.assertRaises(DecodeError, _push, body_v2(request))
            self.assertEqual(e.message, f"remote write: timeseries[0]: {problem}")

    def test_duplicate_names(self) -> None:
        request = request_v2([([("__name__", "up"), ("a", "1"), ("a", "2")], [(1.0, NOW_MS)])])
        e = self.assertRaises(DecodeError, _push, body_v2(request))
        self.assertIn("duplicate label name 'a'", e.message)

    def test_bad_references_refused_at_every_level(self) -> None:
        request = v2.Request(symbols=["", "__name__"])
        request.timeseries.add(labels_refs=[1, 5]).samples.add(value=1, timestamp=NOW_MS)
        for check in ("headers", "decode", "labels"):
            e = self.assertRaises(DecodeError, _push, body_v2(request), check=check)
            self.assertIn("past the symbols table", e.message)

    def test_headers(self) -> None:
        body = body_v2(request_v2([({"__name__": "up"}, [(1.0, NOW_MS)])]))
        e = self.assertRaises(
            BadEncoding, _push, body, attr.evolve(FACTS, content_encoding="gzip")
        )
        self.assertIn("remote write 2.0: Content-Encoding must be snappy", e.message)
        e = self.assertRaises(
            UnsupportedMediaType,
            _push,
            body,
            attr.evolve(FACTS, content_type="application/x-protobuf;proto=other.Thing"),
        )
        self.assertIn("io.prometheus.write.v2.Request", e.message)
        e = self.assertRaises(DecodeError, _push, snappy_compress(b"\x2a\x05ab"))
        self.assertIn("not a valid io.prometheus.write.v2.Request", e.message)

    def test_histogram_native(self) -> None:
        request = request_v2([], histograms=[({"__name__": "h"}, NOW_MS)])
        [push] = _push(body_v2(request)).pushes
        [series] = _v1(snappy_decompress(push.body, LIMIT)).timeseries
        self.assertEqual(
            v2.Histogram.FromString(series.histograms[0].SerializeToString()),
            native_histogram(NOW_MS),
        )
