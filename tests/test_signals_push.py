"""
Tests for L{sealgw.signals.push} (a push as plain data) and
L{sealgw.signals.intake} (bodies and facts to pushes, with no request).
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from sealgw.signals import PayloadError, intake
from sealgw.signals.push import MAGIC, Push, PushFormatError
from tests.e2e_support import seal_body, seal_sample_families

_text = st.text(max_size=20)


class PushBytesTests(SynchronousTestCase):
    @given(
        signal=_text,
        tenant=st.none() | _text,
        body=st.binary(max_size=200),
        content_type=_text,
        content_encoding=st.none() | _text,
        path=_text,
        extra_headers=st.dictionaries(_text, _text, max_size=3),
        received_at=st.floats(allow_nan=False, allow_infinity=False),
        owner=st.none() | _text,
    )
    def test_round_trip(self, **fields: object) -> None:
        push = Push(**fields)  # type: ignore[arg-type]
        self.assertEqual(Push.from_bytes(push.to_bytes()), push)

    def test_read_without_owner(self) -> None:
        """
        A push serialised before C{owner} existed (a spool written by an
        older gateway) reads back with none, and counts as its tenant.
        """
        data = Push("remote_write", "t", b"body", "application/x-protobuf", "snappy").to_bytes()
        self.assertIn(b',"owner":null', data)
        old = data.replace(b',"owner":null', b"")
        length = int.from_bytes(data[5:9], "big") - len(b',"owner":null')
        old = old[:5] + length.to_bytes(4, "big") + old[9:]
        push = Push.from_bytes(old)
        self.assertIsNone(push.owner)
        self.assertEqual(push.share, "t")
        self.assertEqual(push.body, b"body")

    def test_body_kept_raw(self) -> None:
        data = Push("loki", "t", b"\x00body", "application/json", None).to_bytes()
        self.assertTrue(data.startswith(MAGIC))
        self.assertTrue(data.endswith(b"\x00body"))

    def test_not_a_push(self) -> None:
        good = Push("loki", "t", b"body", "application/json", "gzip").to_bytes()
        for bad, why in [
            (b"", "too short"),
            (b"XXXX" + good[4:], "not a sealgw push"),
            (good[:4] + b"\x09" + good[5:], "version 9"),
            (good[:12], "past the end"),
            (good[:9] + b"[" + good[10:], "bad header"),
        ]:
            with self.assertRaises(PushFormatError) as caught:
                Push.from_bytes(bad)
            self.assertIn(why, str(caught.exception))


class IntakeTests(SynchronousTestCase):
    def test_seal_needs_content_length(self) -> None:
        body = seal_body(seal_sample_families(0))
        facts = intake.RequestFacts(content_encoding="snappy", content_length_sent=False)
        with self.assertRaises(intake.LengthRequired) as caught:
            intake.seal_pushes(body, facts, add={}, remove=frozenset(), batch_size=500, limit=1 << 20)
        self.assertEqual(caught.exception.status, 411)

    def test_seal_facts_become_labels(self) -> None:
        body = seal_body(seal_sample_families(0))
        facts = intake.RequestFacts(
            content_encoding="snappy",
            tenant="t",
            identity="node-7",
            client_ip="192.0.2.1",
            received_at=1700000000.25,
        )
        pushes = intake.seal_pushes(
            body, facts, add={}, remove=frozenset(), batch_size=500, limit=1 << 20
        ).pushes
        from sealgw.signals.records import records

        [one, *_] = records("seal", pushes[0].body, pushes[0].content_type, "snappy")
        self.assertEqual(one["labels"]["node_name"], "node-7")
        self.assertEqual(one["labels"]["client_ip"], "192.0.2.1")
        self.assertEqual([p.received_at for p in pushes], [1700000000.25])

    def test_relayed_encoding(self) -> None:
        for given_, relayed in [(None, None), ("identity", None), ("X-GZIP", "gzip"), (" gzip", "gzip")]:
            self.assertEqual(intake.relayed_encoding(given_), relayed)

    def test_loki_refusal(self) -> None:
        with self.assertRaises(PayloadError):
            intake.loki_pushes(b"{}", intake.RequestFacts(content_type="text/plain"), limit=100)


class RemoteWriteCheckTests(SynchronousTestCase):
    """
    The depth of a remote-write check: headers, decode, labels.
    """

    facts = intake.RequestFacts(content_type="application/x-protobuf", content_encoding="snappy")

    def pushes(self, body: bytes, check: str, **kw: object) -> list[Push]:
        options: dict[str, object] = dict(add={}, remove=frozenset(), limit=1 << 20)
        options.update(kw)
        accepted = intake.remote_write_pushes(body, self.facts, check=check, **options)  # type: ignore[arg-type]
        self.assertIsNone(accepted.refused)
        return accepted.pushes

    def test_levels(self) -> None:
        from sealgw.signals import snappy_compress
        from sealgw.signals.proto.remote_pb2 import WriteRequest

        garbage = snappy_compress(b"\xff\xff\xff not a protobuf")
        unsorted = WriteRequest()
        series = unsorted.timeseries.add()
        series.labels.add(name="job", value="a")
        series.labels.add(name="__name__", value="up")
        unsorted_body = snappy_compress(unsorted.SerializeToString())
        # headers: both relayed byte for byte, nothing decompressed.
        self.patch(compression_module, "_snappy_uncompress", _never)
        self.assertEqual([p.body for p in self.pushes(garbage, "headers")], [garbage])
        self.assertEqual([p.body for p in self.pushes(unsorted_body, "headers")], [unsorted_body])
        self.patch(compression_module, "_snappy_uncompress", _real_uncompress)
        # decode: the garbage is refused, the unsorted series passes.
        with self.assertRaises(PayloadError):
            self.pushes(garbage, "decode")
        self.assertEqual(len(self.pushes(unsorted_body, "decode")), 1)
        # labels: both refused.
        with self.assertRaises(PayloadError):
            self.pushes(unsorted_body, "labels")

    def test_headers_level_limit(self) -> None:
        """
        The declared length is held against the limit without
        decompressing anything.
        """
        from sealgw.signals import snappy_compress

        self.patch(compression_module, "_snappy_uncompress", _never)
        body = snappy_compress(b"x" * 2048)
        with self.assertRaises(PayloadError) as caught:
            self.pushes(body, "headers", limit=1024)
        self.assertEqual(caught.exception.status, 413)

    def test_label_actions_need_the_parse(self) -> None:
        from sealgw.signals import snappy_compress
        from sealgw.signals.proto.remote_pb2 import WriteRequest
        from sealgw.signals.records import records

        write = WriteRequest()
        write.timeseries.add().labels.add(name="__name__", value="up")
        body = snappy_compress(write.SerializeToString())
        [push] = self.pushes(body, "headers", add={"network": "main"})
        [series] = records("remote_write", push.body, push.content_type, "snappy")
        self.assertEqual(series["labels"], {"__name__": "up", "network": "main"})


from sealgw.signals import compression as compression_module  # noqa: E402

_real_uncompress = compression_module._snappy_uncompress


def _never(body: bytes) -> bytes:
    raise AssertionError("decompressed")
