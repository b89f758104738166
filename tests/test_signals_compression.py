"""
Tests for L{sealgw.signals.compression}: bounded snappy and gzip.
"""

from __future__ import annotations

import gzip
import tracemalloc
import zlib

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from sealgw.signals import compression
from sealgw.signals.compression import (
    decode_body,
    gunzip,
    snappy_compress,
    snappy_declared_length,
    snappy_decompress,
)
from sealgw.signals.errors import (
    BadEncoding,
    DecodeError,
    PayloadError,
    PayloadTooLarge,
    UnsupportedMediaType,
)
from tests.wire import varint

GiB = 1024**3
MiB = 1024**2
FUZZ = settings(derandomize=True, deadline=None, max_examples=300)


class ErrorTests(SynchronousTestCase):
    def test_statuses(self) -> None:
        self.assertEqual(
            [
                DecodeError("x").status,
                PayloadTooLarge("x").status,
                UnsupportedMediaType("x").status,
                BadEncoding("x").status,
            ],
            [400, 413, 415, 400],
        )

    def test_message(self) -> None:
        error = DecodeError("remote write: timeseries[3]: labels not sorted by name")
        self.assertIsInstance(error, PayloadError)
        self.assertEqual(error.message, "remote write: timeseries[3]: labels not sorted by name")
        self.assertEqual(str(error), error.message)


class SnappyTests(SynchronousTestCase):
    def test_round_trip(self) -> None:
        data = b"remote write " * 1000
        block = snappy_compress(data)
        self.assertLess(len(block), len(data))
        self.assertEqual(snappy_decompress(block, len(data)), data)

    def test_empty_data(self) -> None:
        self.assertEqual(snappy_decompress(snappy_compress(b""), 0), b"")

    def test_limit_is_inclusive(self) -> None:
        data = bytes(range(256)) * 4
        block = snappy_compress(data)
        self.assertEqual(snappy_decompress(block, 1024), data)
        self.assertRaises(PayloadTooLarge, snappy_decompress, block, 1023)

    def test_bomb_refused_before_decompressing(self) -> None:
        """
        A tiny block declaring 4 GiB is refused on its header alone: the
        decompressor is never called and nothing large is allocated.
        """
        bomb = varint(4 * GiB) + b"\x00" * 16
        self.assertEqual(snappy_declared_length(bomb), 4 * GiB)

        def fail(body: bytes) -> bytes:
            self.fail("decompressor called on a snappy bomb")

        self.patch(compression, "_snappy_uncompress", fail)
        tracemalloc.start()
        try:
            error = self.assertRaises(PayloadTooLarge, snappy_decompress, bomb, 50 * MiB)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        self.assertLess(peak, 64 * 1024)
        self.assertEqual(error.status, 413)
        self.assertIn("4294967296", error.message)

    def test_bomb_within_32_bits(self) -> None:
        """
        A real compressed block of 16 MiB of zeros, against a 1 MiB limit.
        """
        block = snappy_compress(b"\x00" * (16 * MiB))
        self.assertLess(len(block), MiB)
        self.assertRaises(PayloadTooLarge, snappy_decompress, block, MiB)

    def test_not_snappy(self) -> None:
        error = self.assertRaises(DecodeError, snappy_decompress, b"\x05\xffgarbage", MiB)
        self.assertEqual(error.message, "snappy: body is not a valid snappy block")

    def test_shorter_than_declared(self) -> None:
        block = snappy_compress(b"abcdefgh" * 10)
        self.assertRaises(DecodeError, snappy_decompress, block[:-3], MiB)

    def test_empty_body(self) -> None:
        self.assertRaises(DecodeError, snappy_decompress, b"", MiB)

    def test_header_cut(self) -> None:
        self.assertRaises(DecodeError, snappy_decompress, b"\x80\x80", MiB)

    def test_header_too_long(self) -> None:
        error = self.assertRaises(DecodeError, snappy_decompress, b"\x80" * 5 + b"\x01", 2**62)
        self.assertIn("longer than 5 bytes", error.message)

    @FUZZ
    @given(st.binary(max_size=300))
    def test_arbitrary_bytes(self, body: bytes) -> None:
        """
        Arbitrary input decodes or fails with DecodeError/PayloadTooLarge,
        nothing else.
        """
        try:
            out = snappy_decompress(body, 4096)
        except (DecodeError, PayloadTooLarge):
            return
        self.assertLessEqual(len(out), 4096)


class GzipTests(SynchronousTestCase):
    def test_round_trip(self) -> None:
        data = b'{"streams": []}' * 100
        self.assertEqual(gunzip(gzip.compress(data), len(data)), data)

    def test_limit_is_inclusive(self) -> None:
        body = gzip.compress(b"x" * 1000)
        self.assertEqual(len(gunzip(body, 1000)), 1000)
        self.assertRaises(PayloadTooLarge, gunzip, body, 999)

    def test_bomb_capped(self) -> None:
        """
        64 MiB of zeros in ~64 KiB of gzip: decompression stops just past a
        1 MiB limit instead of producing it all.
        """
        bomb = gzip.compress(b"\x00" * (64 * MiB), compresslevel=9)
        self.assertLess(len(bomb), 128 * 1024)
        tracemalloc.start()
        try:
            self.assertRaises(PayloadTooLarge, gunzip, bomb, MiB)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        self.assertLess(peak, 4 * MiB)

    def test_bomb_costs_the_limit_once(self) -> None:
        """
        A bomb against an 8 MiB limit costs the limit and a piece of
        output, not twice the limit (zlib's output buffer and the bytes it
        was joined into, as when it was inflated in one call).
        """
        bomb = gzip.compress(b"\x00" * (64 * MiB), compresslevel=9)
        tracemalloc.start()
        try:
            self.assertRaises(PayloadTooLarge, gunzip, bomb, 8 * MiB)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        self.assertLess(peak, 10 * MiB)

    def test_refusal_keeps_nothing_large(self) -> None:
        """
        The refusal's traceback (and what it chains to) refers to nothing
        holding the inflated output: whoever keeps the exception keeps a
        few KiB, not C{limit} bytes.
        """
        bomb = gzip.compress(b"\x00" * (64 * MiB), compresslevel=9)
        error = self.assertRaises(PayloadTooLarge, gunzip, bomb, 8 * MiB)
        self.assertEqual(large_values_on(error), [])

    def test_many_members_read_once(self) -> None:
        """
        50,000 empty members (1 MiB) are read without copying the rest of
        the body for each (which took time and memory in proportion to
        the body's size times its members).
        """
        body = gzip.compress(b"") * 50_000
        tracemalloc.start()
        try:
            self.assertEqual(gunzip(body, 100), b"")
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        self.assertLess(peak, len(body) // 4)

    @FUZZ
    @given(
        st.lists(st.binary(max_size=200), min_size=1, max_size=5),
        st.integers(min_value=1, max_value=40),
        st.integers(min_value=1, max_value=40),
        st.integers(min_value=0, max_value=30),
    )
    def test_pieces_of_any_size(
        self, members: list[bytes], input_chunk: int, output_chunk: int, padding: int
    ) -> None:
        """
        However the input and output are cut into pieces, members and
        padding that straddle them come out as C{gzip.decompress} reads
        them, and the limit still holds to the byte.
        """
        self.patch(compression, "_GZIP_INPUT_CHUNK", input_chunk)
        self.patch(compression, "_GZIP_OUTPUT_CHUNK", output_chunk)
        body = b"".join(gzip.compress(m) for m in members) + b"\x00" * padding
        expected = b"".join(members)
        self.assertEqual(gunzip(body, len(expected)), expected)
        if expected:
            self.assertRaises(PayloadTooLarge, gunzip, body, len(expected) - 1)
        self.assertRaises(DecodeError, gunzip, body[:-(padding + 1)], len(expected))
        error = self.assertRaises(DecodeError, gunzip, body + b"junk", len(expected))
        self.assertIn("after the end", error.message)

    def test_multiple_members(self) -> None:
        body = gzip.compress(b"one,") + gzip.compress(b"two")
        self.assertEqual(gunzip(body, 100), b"one,two")

    def test_limit_spans_members(self) -> None:
        body = gzip.compress(b"a" * 60) + gzip.compress(b"b" * 60)
        self.assertRaises(PayloadTooLarge, gunzip, body, 100)

    def test_trailing_zero_padding(self) -> None:
        self.assertEqual(gunzip(gzip.compress(b"data") + b"\x00" * 8, 100), b"data")

    def test_trailing_garbage(self) -> None:
        error = self.assertRaises(DecodeError, gunzip, gzip.compress(b"data") + b"junk", 100)
        self.assertIn("after the end", error.message)

    def test_truncated(self) -> None:
        body = gzip.compress(b"some data that is long enough" * 10)
        error = self.assertRaises(DecodeError, gunzip, body[:-10], 10_000)
        self.assertEqual(error.message, "gzip: body is truncated")

    def test_not_gzip(self) -> None:
        self.assertRaises(DecodeError, gunzip, b"plain text", 100)

    def test_zlib_is_not_gzip(self) -> None:
        self.assertRaises(DecodeError, gunzip, zlib.compress(b"data"), 100)

    def test_empty(self) -> None:
        self.assertRaises(DecodeError, gunzip, b"", 100)

    @FUZZ
    @given(st.binary(max_size=300))
    def test_arbitrary_bytes(self, body: bytes) -> None:
        try:
            gunzip(b"\x1f\x8b" + body, 4096)
        except (DecodeError, PayloadTooLarge):
            pass


def large_values_on(error: BaseException, at_least: int = 256 * 1024) -> list[str]:
    """
    The locals at least C{at_least} bytes long (bytes, or lists of them)
    in the frames of C{error}'s traceback and of the exceptions it chains
    to.
    """
    found = []
    seen: set[int] = set()
    pending: list[BaseException | None] = [error]
    while pending:
        e = pending.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        pending += [e.__cause__, e.__context__]
        tb = e.__traceback__
        while tb is not None:
            frame = tb.tb_frame
            for name, value in frame.f_locals.items():
                values = value if isinstance(value, list) else [value]
                size = sum(
                    len(v) for v in values if isinstance(v, (bytes, bytearray, memoryview))
                )
                if size >= at_least:
                    found.append(f"{frame.f_code.co_name}: {name} ({size} bytes)")
            tb = tb.tb_next
    return found


class DecodeBodyTests(SynchronousTestCase):
    def test_identity(self) -> None:
        self.assertEqual(decode_body(b"abc", None, 3), b"abc")
        self.assertEqual(decode_body(b"abc", "", 3), b"abc")
        self.assertEqual(decode_body(b"abc", "identity", 3), b"abc")

    def test_identity_over_limit(self) -> None:
        self.assertRaises(PayloadTooLarge, decode_body, b"abcd", None, 3)

    def test_gzip(self) -> None:
        self.assertEqual(decode_body(gzip.compress(b"abc"), "gzip", 3), b"abc")
        self.assertEqual(decode_body(gzip.compress(b"abc"), " GZIP ", 3), b"abc")
        self.assertEqual(decode_body(gzip.compress(b"abc"), "x-gzip", 3), b"abc")

    def test_snappy(self) -> None:
        self.assertEqual(decode_body(snappy_compress(b"abc"), "snappy", 3), b"abc")
        self.assertRaises(PayloadTooLarge, decode_body, snappy_compress(b"abcd"), "snappy", 3)

    def test_unknown_encoding(self) -> None:
        error = self.assertRaises(BadEncoding, decode_body, b"x", "br", 10)
        self.assertEqual(error.status, 400)
        self.assertIn("'br'", error.message)

    def test_not_allowed_here(self) -> None:
        """
        seal-proxy pushes must be snappy: identity is refused when only
        snappy is allowed.
        """
        self.assertRaises(BadEncoding, decode_body, b"x", None, 10, allowed=("snappy",))
        self.assertRaises(BadEncoding, decode_body, b"x", "gzip", 10, allowed=("snappy",))
        self.assertEqual(
            decode_body(snappy_compress(b"x"), "snappy", 10, allowed=("snappy",)), b"x"
        )

    def test_long_encoding_not_echoed(self) -> None:
        error = self.assertRaises(BadEncoding, decode_body, b"x", "z" * 10_000, 10)
        self.assertLess(len(error.message), 200)
