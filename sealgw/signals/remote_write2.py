"""
Prometheus remote write 2.0 (C{io.prometheus.write.v2.Request}): decode
and check a request, set and remove labels through its symbols table,
and write it as remote write 1.0 for upstreams that only read that.

Every string of a 2.0 request lives once in its symbols table and series
refer to it by index, so a few kilobytes can name a megabyte-long label
value on every series.  Nothing here expands a reference before
L{expanded_size} has bounded what the expansion costs.

The 1.0 form is written as bytes (L{convert}), series for series in the
same order, so that the 1.0 checks written in C (the label rules, the
sample limits, the label actions) judge a 2.0 request as they judge a 1.0
one, and a series they refuse is the 2.0 series at the same index.  The
conversion itself runs in C (C{convert_v2} in
C{sealgw.signals._relabel_c}) when the extension was built: through the
protobuf objects (L{to_v1}, the reference the C one is tested against) a
2,000-series request costs about 23 ms instead of 0.7, since every
reference read from Python is an object (see docs/push.rst).  Label
actions through the symbols table likewise (L{apply_labels_encoded}).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Optional

import attr
from google.protobuf.message import DecodeError as ProtobufDecodeError

from sealgw.signals._remote_write2_objects import apply_labels, to_v1
from sealgw.signals._wire import field
from sealgw.signals.compression import snappy_compress
from sealgw.signals.errors import DecodeError, PayloadTooLarge
from sealgw.signals.proto.remote_v2_pb2 import Request, TimeSeries

__all__ = [
    "CONTENT_TYPE",
    "PROTO",
    "VERSION",
    "Request",
    "TimeSeries",
    "Written",
    "apply_labels",
    "apply_labels_encoded",
    "check_references",
    "convert",
    "decode",
    "WRITTEN_HEADERS",
    "drop_series",
    "encode",
    "expanded_size",
    "expansion_limit",
    "parse_written",
    "to_v1",
    "written",
]

#: The C{proto} parameter of a 2.0 request's C{Content-Type}.
PROTO = "io.prometheus.write.v2.Request"
CONTENT_TYPE = "application/x-protobuf;proto=" + PROTO
#: The C{X-Prometheus-Remote-Write-Version} of a 2.0 request.
VERSION = "2.0.0"

_WHAT = "remote write 2.0"

@attr.frozen
class Written:
    """
    What a 2.0 receiver says it wrote, in the response headers the
    specification requires of it on success.
    """

    samples: int = 0
    histograms: int = 0
    exemplars: int = 0

    def headers(self) -> dict[str, str]:
        return {
            "X-Prometheus-Remote-Write-Samples-Written": str(self.samples),
            "X-Prometheus-Remote-Write-Histograms-Written": str(self.histograms),
            "X-Prometheus-Remote-Write-Exemplars-Written": str(self.exemplars),
        }


#: The response headers that carry L{Written}, as an upstream sends them.
WRITTEN_HEADERS = tuple(Written().headers())


def decode(raw: bytes) -> Request:
    """
    Parse an uncompressed 2.0 request; fields this module does not know
    are kept and re-encoded unchanged.

    @raise DecodeError: if C{raw} is not one.
    """
    request = Request()
    try:
        request.ParseFromString(raw)
    except ProtobufDecodeError as e:
        raise DecodeError(f"{_WHAT}: body is not a valid {PROTO} protobuf") from e
    return request


def check_references(request: Request) -> None:
    """
    Check that the request refers only to symbols it has: C{symbols[0]}
    is the empty string, every series' C{labels_refs} holds pairs, and
    every reference (labels, exemplars' labels, metadata's help and unit)
    is within the table.

    @raise DecodeError: naming the first bad series by its index.
    """
    symbols = request.symbols
    count = len(symbols)
    if count and symbols[0] != "":
        raise DecodeError(f"{_WHAT}: symbols[0] must be the empty string")
    for index, series in enumerate(request.timeseries):
        refs = series.labels_refs
        if len(refs) % 2:
            raise _series_error(index, "labels_refs holds an odd number of references")
        if refs and max(refs) >= count:
            raise _series_error(index, f"labels_refs {max(refs)} is past the symbols table")
        for exemplar in series.exemplars:
            exemplar_refs = exemplar.labels_refs
            if len(exemplar_refs) % 2:
                raise _series_error(
                    index, "an exemplar's labels_refs holds an odd number of references"
                )
            if exemplar_refs and max(exemplar_refs) >= count:
                raise _series_error(index, "an exemplar's labels_refs is past the symbols table")
        metadata = series.metadata
        if metadata.help_ref >= max(count, 1) or metadata.unit_ref >= max(count, 1):
            raise _series_error(index, "metadata refers past the symbols table")


def _series_error(index: int, what: str) -> DecodeError:
    return DecodeError(f"{_WHAT}: timeseries[{index}]: {what}")


#: What a 2.0 request's references may expand to: at least this much
#: (a 2,000-series batch needs over 4 KB of label text a series to reach
#: it), and beyond it at most L{EXPANSION_RATIO} times the request's own
#: size (bench/rw2.py's batch expands 3.8 times), never past the
#: decompressed-body limit.  A few
#: kilobytes naming one large symbol on every series would otherwise cost
#: as much as the largest body a client may send, for a fraction of the
#: bytes its rate limits count.
EXPANSION_FLOOR = 8 * 1024 * 1024
EXPANSION_RATIO = 64


def expansion_limit(raw: bytes, limit: int) -> int:
    """
    What the 2.0 request C{raw} (uncompressed) may expand to, under the
    decompressed-body limit C{limit} (see L{EXPANSION_FLOOR}).
    """
    return min(limit, max(EXPANSION_FLOOR, EXPANSION_RATIO * len(raw)))


def expanded_size(request: Request, limit: int) -> int:
    """
    How many bytes the request's labels (the series' and the exemplars')
    and metadata (help and unit) take once every reference is written
    out, as 1.0 writes them (and as a store holds them).

    A reference costs a few bytes however long its symbol, so this is
    what bounds a conversion: a request whose references name a large
    symbol over and over is refused before anything is expanded.  Call
    after L{check_references}.

    @raise PayloadTooLarge: when it is more than C{limit}.
    """
    sizes = [len(symbol.encode("utf-8")) for symbol in request.symbols]
    total = 0
    for series in request.timeseries:
        total += sum([sizes[ref] for ref in series.labels_refs])
        for exemplar in series.exemplars:
            total += sum([sizes[ref] for ref in exemplar.labels_refs])
        if series.HasField("metadata"):
            total += sizes[series.metadata.help_ref] + sizes[series.metadata.unit_ref]
        if total > limit:
            raise PayloadTooLarge(
                f"{_WHAT}: the labels and metadata its references name come to more "
                f"than {limit} bytes, the most this request may expand to (the "
                f"decompressed-body limit, and under it {EXPANSION_FLOOR // (1024 * 1024)} "
                f"MiB or {EXPANSION_RATIO} times the request, whichever is more); "
                "send smaller batches"
            )
    return total


_Convert = Callable[[bytes, int], Optional[tuple[bytes, int, int, int]]]
_Relabel = Callable[
    [bytes, tuple[tuple[bytes, int, int], ...], tuple[bytes, ...], bytes],
    Optional[tuple[bytes, bool]],
]


def _implementation() -> tuple[str, Optional[_Convert], Optional[_Relabel]]:
    try:
        from sealgw.signals._relabel_c import convert_v2, relabel_v2
    except ImportError:  # installed without a compiler: the objects do it
        return "python", None, None
    return "c", convert_v2, relabel_v2


#: C{"c"} when the C conversion and relabelling were built and are used,
#: C{"python"} otherwise.
IMPLEMENTATION, _convert_v2, _relabel_v2 = _implementation()


def convert(raw: bytes, request: Request, limit: int) -> tuple[bytes, Written]:
    """
    The 2.0 request C{raw} (uncompressed; C{request} is it, decoded) as
    an uncompressed 1.0 C{WriteRequest} (L{to_v1}), and what it holds
    (L{written}): after L{check_references} and L{expanded_size}, whose
    errors it raises.

    In C on the bytes when the extension was built and the bytes are of
    the shape it reads (every field where and as the schema puts it, the
    references packed); else, and for every request with a problem, by
    the objects, which say what the problem is.

    @raise DecodeError: for a reference that is not in the table.
    @raise PayloadTooLarge: when the labels come to more than C{limit}.
    """
    if _convert_v2 is not None:
        converted = _convert_v2(raw, limit)
        if converted is not None:
            v1, samples, histograms, exemplars = converted
            return v1, Written(samples, histograms, exemplars)
    check_references(request)
    expanded_size(request, limit)
    return to_v1(request), written(request)


def written(request: Request) -> Written:
    """
    The samples, native histogram samples and exemplars C{request} holds.
    """
    samples = histograms = exemplars = 0
    for series in request.timeseries:
        samples += len(series.samples)
        histograms += len(series.histograms)
        exemplars += len(series.exemplars)
    return Written(samples, histograms, exemplars)


def apply_labels_encoded(
    raw: bytes, request: Request, add: Mapping[str, str], remove: frozenset[str]
) -> Optional[bytes]:
    """
    L{apply_labels} on the 2.0 request C{raw} (uncompressed; C{request}
    is it, decoded, and is left as it is): in C on the bytes when the
    extension was built and the bytes are of the shape it reads, else
    through the objects.

    @return: the new encoding, or L{None} when no series changed (the
        client's bytes are still the request).
    """
    if not add and not remove:
        return None
    symbols = list(request.symbols)
    if _relabel_v2 is not None and symbols:
        new: list[str] = []

        def ref(text: str) -> int:
            if text in new:
                return len(symbols) + new.index(text)
            try:
                return symbols.index(text)
            except ValueError:
                new.append(text)
                return len(symbols) + len(new) - 1

        cleared = frozenset(name for name, value in add.items() if not value) | remove
        adds = {
            name.encode("utf-8"): (ref(name), ref(value))
            for name, value in add.items()
            if value
        }
        relabelled = _relabel_v2(
            raw,
            tuple(
                (name, name_ref, value_ref)
                for name, (name_ref, value_ref) in sorted(adds.items())
                if name.decode("utf-8") not in cleared
            ),
            tuple(name.encode("utf-8") for name in sorted(cleared)),
            b"".join(field(_V2_SYMBOLS, text.encode("utf-8")) for text in new),
        )
        if relabelled is not None:
            encoded, changed = relabelled
            return encoded if changed else None
    copy = Request()
    copy.CopyFrom(request)
    return copy.SerializeToString() if apply_labels(copy, add, remove) else None


_V2_SYMBOLS = 0x22  # Request.symbols: field 4


def drop_series(request: Request, codes: bytes) -> None:
    """
    Delete the series whose code in C{codes} (one a series) is not 0.
    """
    for position in range(len(codes) - 1, -1, -1):
        if codes[position]:
            del request.timeseries[position]


def encode(request: Request) -> bytes:
    """
    The snappy-compressed serialisation of C{request}, as a 2.0 body.
    """
    return snappy_compress(request.SerializeToString())


def parse_written(headers: Mapping[str, str]) -> Optional[Written]:
    """
    The counts an upstream's response C{headers} say were written, or
    L{None} when it sent none of them, or one that is not a count.  One
    it left out counts 0, as a sender reads it.
    """
    names = {name.lower(): value for name, value in headers.items()}
    values = []
    for name in WRITTEN_HEADERS:
        text = names.get(name.lower(), "0").strip()
        if not text.isdigit():
            return None
        values.append(int(text))
    if not any(name.lower() in names for name in WRITTEN_HEADERS):
        return None
    return Written(*values)
