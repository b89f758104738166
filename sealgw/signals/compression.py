"""
Content-Encoding for push bodies: snappy block format, gzip, deflate and
zstd, always bounded by a size limit on the decompressed output.

The limit is enforced before memory is committed: a snappy block declares
its uncompressed length up front and is refused on that alone; gzip,
deflate and zstd output is produced a piece at a time and refused as soon
as it passes the limit.
"""

from __future__ import annotations

import zlib
from collections.abc import Collection

import snappy
import zstandard

from sealgw.signals.errors import BadEncoding, DecodeError, PayloadTooLarge, quote

# The largest length a snappy block can declare (its format is 32-bit).
_SNAPPY_MAX = 0xFFFFFFFF
_GZIP_MAGIC = b"\x1f\x8b"
#: How much gzip input is handed to zlib at once, and how much output it
#: may give back at once: small next to C{max_decompressed}, large enough
#: that the Python loop around zlib costs nothing.  A piece of output is
#: as large as L{sealgw.daemon._memory.LARGE_BLOCK}, so that it is mapped
#: on its own and given back to the system as soon as it is freed.
_GZIP_INPUT_CHUNK = 64 * 1024
_GZIP_OUTPUT_CHUNK = 1024 * 1024

#: The largest zstd window accepted: the memory one zstd decompression may
#: hold whatever its output.  8 MiB is what the OpenTelemetry Collector's
#: and Go's zstd encoders use at most; the format allows up to 3.75 TiB, a
#: bomb of its own.
ZSTD_MAX_WINDOW = 8 * 1024 * 1024

# Indirection so tests can prove the decompressor is never reached.
_snappy_uncompress = snappy.uncompress


def snappy_declared_length(body: bytes) -> int:
    """
    The uncompressed length a snappy block declares in its leading varint.

    @raise DecodeError: if the varint is missing or longer than a 32-bit
        length can be.
    """
    result = 0
    for i in range(5):
        if i >= len(body):
            raise DecodeError("snappy: body ends inside the length header")
        byte = body[i]
        result |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            return result
    raise DecodeError("snappy: length header is longer than 5 bytes")


def snappy_decompress(body: bytes, limit: int) -> bytes:
    """
    Decompress one snappy block (the raw block format, not the framed one).

    @raise PayloadTooLarge: if the block declares more than C{limit} bytes;
        nothing is decompressed then.
    @raise DecodeError: if C{body} is not a valid snappy block.
    """
    declared = snappy_declared_length(body)
    if declared > limit:
        raise PayloadTooLarge(
            f"snappy: body decompresses to {declared} bytes, more than the limit of {limit}"
        )
    if declared > _SNAPPY_MAX:
        raise DecodeError("snappy: declared length is out of range")
    try:
        data = _snappy_uncompress(body)
    except snappy.UncompressError as e:
        raise DecodeError("snappy: body is not a valid snappy block") from e
    if len(data) != declared:
        raise DecodeError("snappy: block length does not match its header")
    return bytes(data)


def snappy_compress(data: bytes) -> bytes:
    """
    Compress C{data} into one snappy block.
    """
    return bytes(snappy.compress(data))


def gunzip(body: bytes, limit: int) -> bytes:
    """
    Decompress a gzip body, several concatenated members included.  Zero
    bytes after the last member are ignored (some writers pad), anything
    else after it is an error.

    The body is inflated a piece at a time, so a bomb costs at most
    C{limit} plus one piece before it is refused; the pieces are let go
    before the refusal leaves, so that whoever holds on to the exception
    (its traceback refers to this frame) holds nothing large.

    @raise PayloadTooLarge: once the output would exceed C{limit} bytes.
    @raise DecodeError: if C{body} is not valid gzip.
    """
    out: list[bytes] = []
    try:
        _inflate_members(body, limit, out)
        return b"".join(out)
    finally:
        out.clear()


def _inflate_members(body: bytes, limit: int, out: list[bytes]) -> None:
    """
    Inflate the gzip members of C{body} into C{out}, at most C{limit}
    bytes.

    Input goes to zlib in slices of a memoryview: zlib hands back what it
    did not use (C{unconsumed_tail}, C{unused_data}) as a fresh copy, and a
    copy of the whole rest of the body per member or per output piece made
    a body of many small members cost time in proportion to its size
    squared.
    """
    if not body.startswith(_GZIP_MAGIC):
        raise DecodeError("gzip: body is not valid gzip data")
    view = memoryview(body)
    end = len(view)
    position = 0
    size = 0
    pending: bytes | memoryview = b""
    while True:
        inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        while not inflater.eof:
            if not pending and position < end:
                pending = view[position : position + _GZIP_INPUT_CHUNK]
                position += len(pending)
            try:
                chunk = inflater.decompress(pending, min(_GZIP_OUTPUT_CHUNK, limit + 1 - size))
            except zlib.error:
                raise DecodeError("gzip: body is not valid gzip data") from None
            pending = inflater.unconsumed_tail
            if not chunk and not pending and position >= end and not inflater.eof:
                # There was room for output and all input is in: zlib
                # wants more than the body has.
                raise DecodeError("gzip: body is truncated")
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(
                    f"gzip: body decompresses to more than the limit of {limit} bytes"
                )
            if chunk:
                out.append(chunk)
        rest = inflater.unused_data
        pending = rest
        if (rest + view[position : position + 2])[:2] != _GZIP_MAGIC:
            break
    if rest.strip(b"\x00") or view[position:].tobytes().strip(b"\x00"):
        raise DecodeError("gzip: unexpected data after the end of the gzip stream")


def inflate(body: bytes, limit: int) -> bytes:
    """
    Decompress an HTTP C{deflate} body: a zlib stream (RFC 1950), as the
    HTTP specification and the OpenTelemetry SDKs write it, or a raw
    deflate stream (RFC 1951), as some older clients do.  Bounded as
    L{gunzip} is.

    @raise PayloadTooLarge: once the output would exceed C{limit} bytes.
    @raise DecodeError: if C{body} is neither.
    """
    # A zlib stream starts with a header whose two bytes, read as a
    # big-endian number, are a multiple of 31, with method 8 (deflate).
    wrapped = len(body) >= 2 and body[0] & 0x0F == 8 and (body[0] << 8 | body[1]) % 31 == 0
    out: list[bytes] = []
    try:
        _inflate_one(body, zlib.MAX_WBITS if wrapped else -zlib.MAX_WBITS, limit, out)
        return b"".join(out)
    finally:
        out.clear()


def _inflate_one(body: bytes, wbits: int, limit: int, out: list[bytes]) -> None:
    view = memoryview(body)
    end = len(view)
    position = 0
    size = 0
    pending: bytes | memoryview = b""
    inflater = zlib.decompressobj(wbits=wbits)
    while not inflater.eof:
        if not pending and position < end:
            pending = view[position : position + _GZIP_INPUT_CHUNK]
            position += len(pending)
        try:
            chunk = inflater.decompress(pending, min(_GZIP_OUTPUT_CHUNK, limit + 1 - size))
        except zlib.error:
            raise DecodeError("deflate: body is not valid deflate data") from None
        pending = inflater.unconsumed_tail
        if not chunk and not pending and position >= end and not inflater.eof:
            raise DecodeError("deflate: body is truncated")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(
                f"deflate: body decompresses to more than the limit of {limit} bytes"
            )
        if chunk:
            out.append(chunk)
    if inflater.unused_data or position < end:
        raise DecodeError("deflate: unexpected data after the end of the deflate stream")


def unzstd(body: bytes, limit: int) -> bytes:
    """
    Decompress a zstd body, several concatenated frames included, a piece
    at a time: a bomb costs at most C{limit} plus one piece, and a frame
    whose window is larger than L{ZSTD_MAX_WINDOW} is refused before any
    of it is decompressed.

    @raise PayloadTooLarge: once the output would exceed C{limit} bytes.
    @raise DecodeError: if C{body} is not valid zstd.
    """
    out: list[bytes] = []
    try:
        _unzstd_into(body, limit, out)
        return b"".join(out)
    finally:
        out.clear()


def _unzstd_into(body: bytes, limit: int, out: list[bytes]) -> None:
    if not body.startswith(_ZSTD_MAGIC):
        raise DecodeError("zstd: body is not valid zstd data")
    decompressor = zstandard.ZstdDecompressor(max_window_size=ZSTD_MAX_WINDOW)
    size = 0
    with decompressor.stream_reader(body, read_across_frames=True) as reader:
        while True:
            try:
                chunk = reader.read(min(_GZIP_OUTPUT_CHUNK, limit + 1 - size))
            except zstandard.ZstdError as e:
                if "too much memory" in str(e):
                    raise DecodeError(
                        f"zstd: a frame's window is larger than {ZSTD_MAX_WINDOW} bytes"
                    ) from None
                raise DecodeError("zstd: body is not valid zstd data") from None
            if not chunk:
                break
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(
                    f"zstd: body decompresses to more than the limit of {limit} bytes"
                )
            out.append(chunk)
    # The reader ends quietly where the input does, even inside a frame.
    _check_zstd_frames(body)


_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_ZSTD_SKIPPABLE = 0x184D2A50


def _check_zstd_frames(body: bytes) -> None:
    """
    Walk the frames and blocks of C{body} (their headers only) and raise
    unless it ends exactly where its last frame does.  Each block of a
    few bytes decompresses to as many as 128 KiB, so within the limit a
    body has at most a few blocks per KiB of output to walk.
    """
    end = len(body)
    position = 0
    while position < end:
        if end - position < 8:
            raise DecodeError("zstd: body is truncated")
        magic = int.from_bytes(body[position : position + 4], "little")
        if magic & 0xFFFFFFF0 == _ZSTD_SKIPPABLE:
            position += 8 + int.from_bytes(body[position + 4 : position + 8], "little")
            continue
        if magic != 0xFD2FB528:
            raise DecodeError("zstd: unexpected data after the end of the zstd stream")
        # The frame header descriptor's bit 2 says a checksum ends the frame.
        checksum = 4 if body[position + 4] & 0x04 else 0
        try:
            position += zstandard.frame_header_size(body[position : position + 18])
        except zstandard.ZstdError:
            raise DecodeError("zstd: body is truncated") from None
        last = False
        while not last:
            if end - position < 3:
                raise DecodeError("zstd: body is truncated")
            header = int.from_bytes(body[position : position + 3], "little")
            last = bool(header & 1)
            kind = (header >> 1) & 3
            size = header >> 3
            position += 3 + (1 if kind == 1 else size)
        position += checksum
        if position > end:
            raise DecodeError("zstd: body is truncated")


def decode_body(
    body: bytes,
    content_encoding: str | None,
    limit: int,
    allowed: Collection[str] = ("identity", "gzip", "snappy"),
) -> bytes:
    """
    Undo the C{Content-Encoding} of a request body.

    @param content_encoding: the header's value; missing or empty means
        C{identity}.  C{x-gzip} is read as C{gzip}.  C{deflate} is a zlib
        stream or a raw deflate one (L{inflate}).
    @param limit: the largest body accepted once decoded.
    @param allowed: the encodings this endpoint accepts.
    @raise BadEncoding: if the encoding is unknown or not allowed here.
    @raise PayloadTooLarge: if the decoded body would exceed C{limit}.
    @raise DecodeError: if the body is not valid in its encoding.
    """
    encoding = (content_encoding or "identity").strip().lower()
    if encoding == "x-gzip":
        encoding = "gzip"
    if encoding not in allowed:
        accepted = ", ".join(sorted(allowed))
        raise BadEncoding(
            f"Content-Encoding {quote(encoding)} is not accepted here (accepted: {accepted})"
        )
    if encoding == "identity":
        if len(body) > limit:
            raise PayloadTooLarge(f"body is larger than the limit of {limit} bytes")
        return body
    if encoding == "gzip":
        return gunzip(body, limit)
    if encoding == "snappy":
        return snappy_decompress(body, limit)
    if encoding == "deflate":
        return inflate(body, limit)
    if encoding == "zstd":
        return unzstd(body, limit)
    raise BadEncoding(f"Content-Encoding {quote(encoding)} is not supported")
