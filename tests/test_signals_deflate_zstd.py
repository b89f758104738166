"""
Tests for the deflate and zstd decoders of L{sealgw.signals.compression}
and for OTLP/HTTP bodies in every encoding the SDKs and the Collector send.
"""

from __future__ import annotations

import os
import zlib

import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from twisted.trial.unittest import SynchronousTestCase

from sealgw.signals import intake
from sealgw.signals.compression import ZSTD_MAX_WINDOW, decode_body, inflate, unzstd
from sealgw.signals.errors import BadEncoding, DecodeError, PayloadTooLarge
from sealgw.signals.intake import RequestFacts

MiB = 1024**2
FUZZ = settings(derandomize=True, deadline=None, max_examples=200)
DATA = os.urandom(2000) + b"span " * 50_000


def raw_deflate(data: bytes) -> bytes:
    compressor = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush()


class DeflateTests(SynchronousTestCase):
    def test_zlib_stream(self) -> None:
        """
        HTTP's deflate is a zlib stream: what the OpenTelemetry Python SDK
        sends for C{Compression.Deflate}.
        """
        self.assertEqual(inflate(zlib.compress(DATA), len(DATA)), DATA)

    def test_raw_deflate(self) -> None:
        self.assertEqual(inflate(raw_deflate(DATA), len(DATA)), DATA)

    def test_empty(self) -> None:
        self.assertEqual(inflate(zlib.compress(b""), 0), b"")

    def test_limit_is_inclusive(self) -> None:
        body = zlib.compress(DATA)
        self.assertEqual(inflate(body, len(DATA)), DATA)
        self.assertRaises(PayloadTooLarge, inflate, body, len(DATA) - 1)

    def test_bomb(self) -> None:
        """
        A megabyte of zeros per kilobyte sent is refused a piece past the
        limit, not inflated whole.
        """
        bomb = zlib.compress(b"\x00" * (64 * MiB), 9)
        self.assertLess(len(bomb), 100 * 1024)
        error = self.assertRaises(PayloadTooLarge, inflate, bomb, MiB)
        self.assertEqual(
            error.message, f"deflate: body decompresses to more than the limit of {MiB} bytes"
        )

    def test_truncated(self) -> None:
        error = self.assertRaises(DecodeError, inflate, zlib.compress(DATA)[:-20], len(DATA))
        self.assertEqual(error.message, "deflate: body is truncated")

    def test_garbage(self) -> None:
        self.assertRaises(DecodeError, inflate, b"\x78\x9c not deflate", MiB)

    def test_trailing_data(self) -> None:
        error = self.assertRaises(DecodeError, inflate, zlib.compress(DATA) + b"more", len(DATA))
        self.assertIn("after the end", error.message)

    @FUZZ
    @given(st.binary(max_size=300))
    def test_any_bytes(self, body: bytes) -> None:
        """
        Whatever is sent, the answer is the data or a refusal.
        """
        try:
            inflate(body, 1000)
        except (DecodeError, PayloadTooLarge):
            pass


class ZstdTests(SynchronousTestCase):
    def test_one_frame(self) -> None:
        body = zstandard.ZstdCompressor(write_checksum=True).compress(DATA)
        self.assertEqual(unzstd(body, len(DATA)), DATA)

    def test_streamed_frame(self) -> None:
        """
        A frame written as a stream declares no content size (the
        Collector's zstd writer is such a stream).
        """
        compressor = zstandard.ZstdCompressor().compressobj()
        body = compressor.compress(DATA) + compressor.flush()
        self.assertEqual(unzstd(body, len(DATA)), DATA)

    def test_frames(self) -> None:
        one = zstandard.ZstdCompressor().compress(b"first ")
        two = zstandard.ZstdCompressor().compress(b"second")
        self.assertEqual(unzstd(one + two, 100), b"first second")

    def test_empty(self) -> None:
        self.assertEqual(unzstd(zstandard.ZstdCompressor().compress(b""), 0), b"")

    def test_limit_is_inclusive(self) -> None:
        body = zstandard.ZstdCompressor().compress(DATA)
        self.assertEqual(unzstd(body, len(DATA)), DATA)
        self.assertRaises(PayloadTooLarge, unzstd, body, len(DATA) - 1)

    def test_bomb(self) -> None:
        compressor = zstandard.ZstdCompressor(level=19).compressobj()
        bomb = compressor.compress(b"\x00" * (256 * MiB)) + compressor.flush()
        self.assertLess(len(bomb), 100 * 1024)
        error = self.assertRaises(PayloadTooLarge, unzstd, bomb, MiB)
        self.assertEqual(
            error.message, f"zstd: body decompresses to more than the limit of {MiB} bytes"
        )

    def test_large_window_refused(self) -> None:
        """
        A frame asking for a window past L{ZSTD_MAX_WINDOW} is refused
        before that memory is committed.
        """
        params = zstandard.ZstdCompressionParameters(window_log=27)
        compressor = zstandard.ZstdCompressor(compression_params=params).compressobj()
        body = compressor.compress(DATA) + compressor.flush()
        self.assertGreater(zstandard.get_frame_parameters(body).window_size, ZSTD_MAX_WINDOW)
        error = self.assertRaises(DecodeError, unzstd, body, 100 * MiB)
        self.assertIn("window", error.message)

    def test_truncated(self) -> None:
        body = zstandard.ZstdCompressor(write_checksum=True).compress(DATA)
        for cut in (5, 20, len(body) // 2, len(body) - 1):
            error = self.assertRaises(DecodeError, unzstd, body[:cut], len(DATA))
            self.assertIn(error.message, ("zstd: body is truncated", "zstd: body is not valid zstd data"))

    def test_trailing_data(self) -> None:
        body = zstandard.ZstdCompressor().compress(DATA) + b"junk"
        self.assertRaises(DecodeError, unzstd, body, len(DATA))

    def test_not_zstd(self) -> None:
        error = self.assertRaises(DecodeError, unzstd, b"hello", 100)
        self.assertEqual(error.message, "zstd: body is not valid zstd data")

    @FUZZ
    @given(st.binary(max_size=300))
    def test_any_bytes(self, tail: bytes) -> None:
        try:
            unzstd(b"\x28\xb5\x2f\xfd" + tail, 1000)
        except (DecodeError, PayloadTooLarge):
            pass


class DecodeBodyTests(SynchronousTestCase):
    def test_names(self) -> None:
        allowed = intake.OTLP_ENCODINGS
        self.assertEqual(decode_body(zlib.compress(DATA), "deflate", MiB, allowed), DATA)
        self.assertEqual(
            decode_body(zstandard.ZstdCompressor().compress(DATA), " ZSTD ", MiB, allowed), DATA
        )

    def test_not_allowed(self) -> None:
        error = self.assertRaises(
            BadEncoding, decode_body, zlib.compress(DATA), "deflate", MiB, ("identity", "gzip")
        )
        self.assertEqual(
            error.message,
            "Content-Encoding 'deflate' is not accepted here (accepted: gzip, identity)",
        )


class OTLPEncodingsTests(SynchronousTestCase):
    """
    OTLP/HTTP protobuf bodies: gzip is relayed as it came, deflate and
    zstd decoded (not every OTLP receiver reads them).
    """

    def setUp(self) -> None:
        request = ExportTraceServiceRequest()
        span = request.resource_spans.add().scope_spans.add().spans.add()
        span.name = "checkout"
        span.trace_id = b"\x01" * 16
        span.span_id = b"\x02" * 8
        self.raw = request.SerializeToString()

    def push(self, body: bytes, encoding: str) -> tuple[bytes, str | None]:
        facts = RequestFacts(
            content_type="application/x-protobuf", content_encoding=encoding, tenant="acme"
        )
        [push] = intake.otlp_pushes("traces", body, facts, limit=MiB)
        return push.body, push.content_encoding

    def test_deflate(self) -> None:
        self.assertEqual(self.push(zlib.compress(self.raw), "deflate"), (self.raw, None))

    def test_zstd(self) -> None:
        body = zstandard.ZstdCompressor().compress(self.raw)
        self.assertEqual(self.push(body, "zstd"), (self.raw, None))

    def test_gzip_relayed_as_sent(self) -> None:
        import gzip

        body = gzip.compress(self.raw)
        self.assertEqual(self.push(body, "x-gzip"), (body, "gzip"))

    def test_bomb(self) -> None:
        body = zstandard.ZstdCompressor().compress(b"\x00" * (2 * MiB))
        self.assertRaises(PayloadTooLarge, self.push, body, "zstd")

    def test_unknown_encoding(self) -> None:
        error = self.assertRaises(BadEncoding, self.push, self.raw, "br")
        self.assertEqual(
            error.message,
            "Content-Encoding 'br' is not accepted here (accepted: deflate, gzip, identity, zstd)",
        )
