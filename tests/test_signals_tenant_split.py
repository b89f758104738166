"""
Remote write split by a tenant label (C{tenant_from_label}): the byte
splitter against the protobuf objects, and the intake's parts: one push
per allowed tenant, the series naming another refused, the label kept or
removed, the sample limits judged per part.
"""

from __future__ import annotations

from typing import Any

import attr
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from sealgw.signals import remote_write, remote_write2, snappy_decompress, tenant_split
from sealgw.signals.errors import UnsupportedMediaType
from sealgw.signals.intake import (
    TENANT_NOT_ALLOWED,
    AllSeriesRefused,
    RequestFacts,
    remote_write_pushes,
)
from sealgw.signals.limits import LimitExceeded, SampleLimits
from sealgw.signals.proto.remote_pb2 import WriteRequest
from sealgw.signals.push import Push
from tests.e2e_support import remote_write_body, write_request
from tests.test_signals_relabel import write_requests

NOW_MS = 1_700_000_000_000


def _objects(raw: bytes, label: str) -> tenant_split.TenantParts:
    return tenant_split._split_objects(WriteRequest.FromString(raw), label.encode())


def _as_requests(parts: tenant_split.TenantParts) -> dict[bytes, WriteRequest]:
    return {
        value: WriteRequest.FromString(b"".join(series)) for value, series in parts.series.items()
    }


#: The byte splitters: the Python reference, and the C loop when built.
_ENCODED = [tenant_split._split_encoded] + (
    [tenant_split._split_c] if tenant_split.IMPLEMENTATION == "c" else []
)


class SplitTests(SynchronousTestCase):
    def assertSameParts(
        self, got: tenant_split.TenantParts, expected: tenant_split.TenantParts
    ) -> None:
        self.assertEqual(_as_requests(got), _as_requests(expected))
        self.assertEqual(got.first, expected.first)
        self.assertEqual(got.count, expected.count)
        self.assertEqual(WriteRequest.FromString(got.other), WriteRequest.FromString(expected.other))
        self.assertEqual(list(got.series), list(expected.series))

    @settings(max_examples=300)
    @given(write_requests(), st.sampled_from(["env", "job", "a", "zone", "__name__"]))
    def test_same_as_objects(self, request: WriteRequest, label: str) -> None:
        """
        The bytes are grouped as the objects group them, each series kept
        as it came, in order, by each implementation.
        """
        raw = request.SerializeToString()
        expected = _objects(raw, label)
        self.assertSameParts(tenant_split.split_by_label(raw, label, 1000), expected)
        for split in _ENCODED:
            got = split(raw, label.encode())
            assert got is not None
            self.assertSameParts(got, expected)

    @settings(max_examples=500)
    @given(write_requests(), st.data())
    def test_c_reads_as_python(self, request: WriteRequest, data: st.DataObject) -> None:
        """
        On any bytes (a request cut short or with a byte changed), C
        steps aside exactly where Python does, and otherwise splits the
        same; neither reads past the end.
        """
        raw = bytearray(request.SerializeToString())
        if raw:
            at = data.draw(st.integers(0, len(raw) - 1))
            if data.draw(st.booleans()):
                raw[at] = data.draw(st.integers(0, 255))
            else:
                del raw[at:]
        body = bytes(raw)
        results = [split(body, b"env") for split in _ENCODED]
        self.assertEqual(len({r is None for r in results}), 1, results)
        if results[0] is not None and len(results) > 1:
            self.assertEqual(results[0], results[1])

    def test_groups(self) -> None:
        request = write_request(
            [
                ({"__name__": "a", "team": "x"}, [(1.0, 1)]),
                ({"__name__": "b"}, [(2.0, 1)]),
                ({"__name__": "c", "team": "y"}, [(3.0, 1)]),
                ({"__name__": "d", "team": "x"}, [(4.0, 1)]),
                ({"__name__": "e", "team": ""}, [(5.0, 1)]),
            ]
        )
        request.metadata.add(metric_family_name="a", help="h")
        parts = tenant_split.split_by_label(request.SerializeToString(), "team", 1000)
        names = {
            value: [s.labels[0].value for s in part.timeseries]
            for value, part in _as_requests(parts).items()
        }
        self.assertEqual(names, {b"x": ["a", "d"], b"": ["b", "e"], b"y": ["c"]})
        self.assertEqual(parts.first, {b"x": 0, b"": 1, b"y": 2})
        self.assertEqual(parts.count, 5)
        self.assertEqual(WriteRequest.FromString(parts.other).metadata[0].metric_family_name, "a")
        self.assertEqual(parts.series_at(b"y").labels[0].value, "c")

    def test_unsorted_read_by_objects(self) -> None:
        """
        Labels out of order are not read on the bytes (the label could be
        anywhere): the objects split them.
        """
        request = WriteRequest()
        series = request.timeseries.add()
        series.labels.add(name="zone", value="z")
        series.labels.add(name="team", value="x")
        raw = request.SerializeToString()
        for split in _ENCODED:
            self.assertIsNone(split(raw, b"team"))
        self.assertEqual(list(tenant_split.split_by_label(raw, "team", 1000).series), [b"x"])

    def test_label_after_samples_read_by_objects(self) -> None:
        request = WriteRequest()
        series = request.timeseries.add()
        series.labels.add(name="__name__", value="up")
        series.samples.add(value=1.0, timestamp=1)
        raw = bytearray(request.SerializeToString())
        label = b"\x0a\x0a\x0a\x04team\x12\x02zz"
        raw[1] += len(label)
        raw += label
        for split in _ENCODED:
            self.assertIsNone(split(bytes(raw), b"team"))
        self.assertEqual(list(tenant_split.split_by_label(bytes(raw), "team", 1000).series), [b"zz"])


def _facts(tenant: str = "platform", **more: Any) -> RequestFacts:
    values: dict[str, Any] = dict(
        content_type="application/x-protobuf",
        content_encoding="snappy",
        tenant=tenant,
        identity="prometheus-1",
        received_at=NOW_MS / 1000,
        tenants=frozenset({"platform", "team-a", "team-b"}),
    )
    values.update(more)
    return RequestFacts(**values)


def _series(push: Push) -> list[dict[str, str]]:
    request = remote_write.decode(snappy_decompress(push.body, 1 << 24))
    return [{label.name: label.value for label in s.labels} for s in request.timeseries]


def _body(*teams: str | None, time_ms: int = NOW_MS) -> bytes:
    series = []
    for index, team in enumerate(teams):
        labels = {"__name__": f"m{index}"}
        if team is not None:
            labels["team"] = team
        series.append((labels, [(float(index), time_ms)]))
    return remote_write_body(write_request(series))


class TooManySeriesTests(SynchronousTestCase):
    def test_split_stops(self) -> None:
        """
        Past C{max_series} the split stops: the request is refused whole,
        and no more of it is read or copied.
        """
        request = write_request([({"__name__": f"m{i}", "env": "x"}, [(1.0, 1)]) for i in range(10)])
        raw = request.SerializeToString()
        for split in _ENCODED:
            parts = split(raw, b"env", 3)
            assert parts is not None
            self.assertEqual(parts.count, 4)
        unsorted = WriteRequest()
        for _ in range(5):
            one = unsorted.timeseries.add()
            one.labels.add(name="zone", value="z")
            one.labels.add(name="env", value="x")
        self.assertEqual(tenant_split.split_by_label(unsorted.SerializeToString(), "env", 3).count, 5)

    def test_refused_whole(self) -> None:
        with self.assertRaises(LimitExceeded) as caught:
            remote_write_pushes(
                _body("team-a", None, "team-b"),
                _facts(samples=SampleLimits(max_series_per_push=2)),
                add={}, remove=frozenset(), limit=1 << 24, check="headers", tenant_from="team",
            )
        self.assertEqual(caught.exception.reason, "max_series_per_push")
        self.assertEqual(
            caught.exception.message,
            "remote write: more than 2 series in one push, more than max_series_per_push (2); "
            "send smaller batches",
        )


class IntakeTests(SynchronousTestCase):
    def pushes(self, body: bytes, facts: RequestFacts, **more: Any) -> Any:
        settings = dict(add={}, remove=frozenset(), limit=1 << 24, check="headers",
                        tenant_from="team")
        settings.update(more)
        return remote_write_pushes(body, facts, **settings)

    def test_one_push_per_tenant(self) -> None:
        """
        Each tenant's series go in a push of their own, with the tenant
        for the header and as the push's owner; series without the label
        are the request's tenant's.  Parts are independent.
        """
        intake = self.pushes(_body("team-a", None, "team-b", "team-a", "platform"), _facts())
        self.assertIsNone(intake.refused)
        self.assertTrue(intake.independent)
        by_tenant = {push.tenant: _series(push) for push in intake.pushes}
        self.assertEqual(sorted(by_tenant), ["platform", "team-a", "team-b"])
        self.assertEqual([s["__name__"] for s in by_tenant["team-a"]], ["m0", "m3"])
        self.assertEqual([s["__name__"] for s in by_tenant["platform"]], ["m1", "m4"])
        self.assertEqual(by_tenant["team-b"], [{"__name__": "m2", "team": "team-b"}])
        for push in intake.pushes:
            self.assertEqual(push.owner, push.tenant)

    def test_remote_write_2_refused(self) -> None:
        """
        A remote write 2.0 body on a route that splits by tenant is a 415
        (the sender falls back to 1.0), never relayed whole to the
        request's own tenant.
        """
        facts = attr.evolve(
            _facts(), content_type=f"application/x-protobuf;proto={remote_write2.PROTO}"
        )
        with self.assertRaises(UnsupportedMediaType) as caught:
            self.pushes(_body("team-a"), facts)
        self.assertEqual(caught.exception.status, 415)
        self.assertIn("tenant_from_label", caught.exception.message)

    def test_forbidden_tenant_refused(self) -> None:
        """
        A series naming a tenant the identity may not use is left out, and
        the refusal says how many, why, and names the first.
        """
        intake = self.pushes(_body("team-a", "team-c", "team-c", "team-b"), _facts())
        self.assertEqual(sorted(push.tenant for push in intake.pushes), ["team-a", "team-b"])
        refused = intake.refused
        self.assertEqual(refused.by_reason, ((TENANT_NOT_ALLOWED, 2),))
        self.assertEqual(refused.total, 4)
        self.assertEqual(
            refused.message,
            "remote write: 2 of 4 series refused and not relayed, the other 2 accepted (2 by "
            "tenant_not_allowed); the first: timeseries[1] {__name__=\"m1\", team=\"team-c\"}: "
            "tenant 'team-c' (label 'team') is not one identity 'prometheus-1' may use",
        )
        for push in intake.pushes:
            self.assertNotIn("team-c", str(_series(push)))

    def test_every_series_forbidden(self) -> None:
        with self.assertRaises(AllSeriesRefused) as caught:
            self.pushes(_body("x|y", "team-c"), _facts())
        self.assertEqual(caught.exception.status, 400)
        self.assertIn("all 2 series refused, nothing relayed", caught.exception.message)

    def test_label_removed(self) -> None:
        intake = self.pushes(_body("team-a", None), _facts(), keep_label=False)
        for push in intake.pushes:
            self.assertEqual([set(s) for s in _series(push)], [{"__name__"}])

    def test_sample_limits_per_part(self) -> None:
        """
        At check: labels each part is held to the sample limits: a part
        whose every series is too new is left out, the others relayed,
        and the refusal counts both reasons.
        """
        late = _body("team-a", time_ms=NOW_MS + 3_600_000)
        request = WriteRequest.FromString(snappy_decompress(late, 1 << 24))
        request.MergeFrom(WriteRequest.FromString(snappy_decompress(_body(None, "team-c"), 1 << 24)))
        intake = self.pushes(
            remote_write_body(request), _facts(samples=SampleLimits()), check="labels"
        )
        self.assertEqual([push.tenant for push in intake.pushes], ["platform"])
        self.assertEqual(
            dict(intake.refused.by_reason), {"max_future": 1, TENANT_NOT_ALLOWED: 1}
        )

    def test_metadata_to_request_tenant(self) -> None:
        request = write_request([({"__name__": "m", "team": "team-a"}, [(1.0, NOW_MS)])])
        request.metadata.add(metric_family_name="m", help="h")
        intake = self.pushes(remote_write_body(request), _facts())
        by_tenant = {
            push.tenant: remote_write.decode(snappy_decompress(push.body, 1 << 24))
            for push in intake.pushes
        }
        self.assertEqual(len(by_tenant["platform"].metadata), 1)
        self.assertEqual(len(by_tenant["platform"].timeseries), 0)
        self.assertEqual(len(by_tenant["team-a"].metadata), 0)

    def test_label_tenancy(self) -> None:
        """
        To an upstream that keeps tenants apart by a label, each part's
        series carry their own tenant in it, and no tenant header.
        """
        intake = self.pushes(_body("team-a", None), _facts(tenant_label="tenant"))
        got = {push.owner: (push.tenant, _series(push)) for push in intake.pushes}
        self.assertEqual(got["team-a"][0], None)
        self.assertEqual(got["team-a"][1][0]["tenant"], "team-a")
        self.assertEqual(got["platform"][1][0]["tenant"], "platform")
