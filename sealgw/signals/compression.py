"""
Content-Encoding for push bodies: snappy block format and gzip, always
bounded by a size limit on the decompressed output.

The limit is enforced before memory is committed: a snappy block declares
its uncompressed length up front and is refused on that alone; gzip output
is produced at most one byte past the limit.
"""

from __future__ import annotations

import zlib
from collections.abc import Collection

import snappy

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


def decode_body(
    body: bytes,
    content_encoding: str | None,
    limit: int,
    allowed: Collection[str] = ("identity", "gzip", "snappy"),
) -> bytes:
    """
    Undo the C{Content-Encoding} of a request body.

    @param content_encoding: the header's value; missing or empty means
        C{identity}.  C{x-gzip} is read as C{gzip}.
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
    raise BadEncoding(f"Content-Encoding {quote(encoding)} is not supported")
