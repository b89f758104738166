"""
From a request body and the facts of its request to the pushes relayed:
one pure function per push route, with no I/O and no reactor, so each can
run on any thread and be tested against bytes alone.

Each checks what its route promises to check (content type and encoding,
sizes, the format, label rules, the sample limits), re-encodes only where
the route changes the data, and otherwise relays the bytes as they came.
A body that cannot be accepted raises L{sealgw.signals.PayloadError}
before any push exists, so nothing is ever half-relayed.  Series over a
sample limit are the one exception, as in Mimir: they are left out of the
pushes, and the L{Intake} says which, for the client's 400 once the rest
has been accepted.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Optional

import attr

from sealgw.signals import _wire as wire
from sealgw.signals import limits as sample_limits
from sealgw.signals import loki, otlp, pushgateway, remote_write, remote_write2, seal, tenant_split
from sealgw.signals._media import parse_media_type
from sealgw.signals._relabel import relabel
from sealgw.signals.compression import decode_body, snappy_compress, snappy_declared_length
from sealgw.signals.errors import BadEncoding, PayloadError, PayloadTooLarge, UnsupportedMediaType
from sealgw.signals.limits import LimitExceeded, SampleLimits, SeriesRefused
from sealgw.signals.proto.remote_pb2 import WriteRequest
from sealgw.signals.push import Push

PROTOBUF = "application/x-protobuf"
REMOTE_WRITE_VERSION = "0.1.0"


#: How deep a remote-write body is looked at before it is relayed, from
#: cheapest to most thorough: the content headers and the length snappy
#: declares (against the decompressed-size limit); that and a protobuf
#: parse; that and every series' labels (sorted, unique, valid names, a
#: C{__name__}).  Label actions need the parse whatever the level.
REMOTE_WRITE_CHECKS = ("headers", "decode", "labels")


class LengthRequired(PayloadError):
    status = 411


class AllSeriesRefused(LimitExceeded):
    """
    Every series of a push is over a sample limit: 400, nothing relayed.
    """

    def __init__(self, refused: SeriesRefused) -> None:
        super().__init__(refused.message, refused.by_reason[0][0])
        self.refused = refused


@attr.frozen
class Intake:
    """
    What one push body became.

    @ivar pushes: what to relay, in order.
    @ivar refused: the series left out for a sample limit, if any: the
        client is answered 400 saying so once C{pushes} are accepted.
    @ivar written: for a remote write 2.0 request sealgw decoded, what
        it relays, for the response headers that say what was written
        (an upstream's own, when it sends them, win).
    @ivar independent: the pushes are parts of different tenants rather
        than batches of one: each is delivered whatever becomes of the
        others (one tenant's store refusing its part must not keep the
        other tenants' parts from theirs).
    """

    pushes: list[Push]
    refused: Optional[SeriesRefused] = None
    written: Optional[remote_write2.Written] = None
    independent: bool = False


@attr.frozen
class RequestFacts:
    """
    What a codec may know of the request its body came with, read from
    the request on the reactor thread before any decoding starts.

    @ivar content_type: the C{Content-Type} header, if sent.
    @ivar content_encoding: the C{Content-Encoding} header, if sent.
    @ivar content_length_sent: whether a C{Content-Length} header was sent
        (seal-proxy requires one).
    @ivar remote_write_version: the C{X-Prometheus-Remote-Write-Version}
        header, if sent.
    @ivar tenant: the tenant the gate decided on.
    @ivar identity: the name of who was authenticated.
    @ivar client_ip: the client's address, through trusted proxies only.
    @ivar received_at: C{reactor.seconds()} when the request arrived.
    @ivar tenant_label: for an upstream that keeps tenants apart by a label
        rather than a header, that label: Prometheus series get it, set to
        C{tenant}, above every other label, and the push carries no
        tenant (so no tenant header is sent).
    @ivar samples: the identity's sample limits, applied where the route
        judges series (see L{remote_write_pushes}).
    @ivar upstream_remote_write: the remote-write version the route's
        upstream reads (its C{remote_write_version}): a 2.0 request is
        relayed as 2.0 to an upstream that reads 2 and converted to 1.0
        for one that reads 1.
    @ivar tenants: every tenant the identity may use, for series that
        name their own (C{tenant_from_label}).
    """

    content_type: Optional[str] = None
    content_encoding: Optional[str] = None
    content_length_sent: bool = True
    remote_write_version: Optional[str] = None
    tenant: Optional[str] = None
    identity: Optional[str] = None
    client_ip: Optional[str] = None
    received_at: float = 0.0
    tenant_label: Optional[str] = None
    samples: SampleLimits = SampleLimits()
    upstream_remote_write: int = 1
    tenants: frozenset[str] = frozenset()

    def series_labels(self, add: Mapping[str, str]) -> Mapping[str, str]:
        """
        C{add}, with the tenant's label on top where the upstream needs it.
        """
        if self.tenant_label is None:
            return add
        return {**add, self.tenant_label: self.tenant or ""}

    @property
    def relayed_tenant(self) -> Optional[str]:
        """
        The tenant a push names for the upstream's tenant header: none when
        the tenant travels as a label.
        """
        return None if self.tenant_label is not None else self.tenant


def remote_write_pushes(
    body: bytes,
    facts: RequestFacts,
    *,
    add: Mapping[str, str],
    remove: frozenset[str],
    limit: int,
    check: str = "labels",
    tenant_from: Optional[str] = None,
    keep_label: bool = True,
) -> Intake:
    """
    A Prometheus remote-write 1.0 body: checked as deep as C{check} says
    (one of L{REMOTE_WRITE_CHECKS}) and relayed as it came, or re-encoded
    when label actions changed a series or a series was over a sample
    limit.

    At C{"headers"} with no label actions nothing is decompressed: the
    upstream parses the body anyway, and its 4xx for a bad one reaches the
    client as it is.  The sample limits apply at C{"labels"}, and always
    for an upstream that keeps tenants apart by a label (one tenant's
    sample out of bounds would stop every tenant's pushes there).

    @param tenant_from: the label naming each series' tenant
        (C{tenant_from_label}): the request is split by it, one push per
        tenant (see L{_by_tenant}); C{keep_label} says whether the label
        stays on the series relayed.
    """
    essence, params = parse_media_type(facts.content_type)
    if essence not in ("", PROTOBUF):
        raise UnsupportedMediaType(f"remote write: Content-Type {essence!r} is not {PROTOBUF}")
    proto = params.get("proto")
    if proto == remote_write2.PROTO:
        if tenant_from is not None:
            # Split by tenant only as 1.0 for now; a 415 makes Prometheus
            # and Alloy send 1.0 instead, rather than every series landing
            # in the request's own tenant.
            raise UnsupportedMediaType(
                f"remote write: {remote_write2.PROTO!r} is not taken on this route, which "
                "splits series by tenant (tenant_from_label); send remote write 1.0 "
                "(prometheus.WriteRequest)"
            )
        return remote_write2_pushes(
            body, facts, add=add, remove=remove, limit=limit, check=check
        )
    if proto is not None and proto != "prometheus.WriteRequest":
        raise UnsupportedMediaType(
            f"remote write: {proto!r} is not supported; send remote write 1.0 "
            f"(prometheus.WriteRequest) or 2.0 ({remote_write2.PROTO})"
        )
    if (facts.content_encoding or "").strip().lower() != "snappy":
        raise _snappy_required("remote write")
    if tenant_from is not None:
        raw = decode_body(body, facts.content_encoding, limit, allowed=("snappy",))
        return _by_tenant(raw, facts, add=add, remove=remove, check=check, label=tenant_from,
                          keep=keep_label)
    relayed = body
    refused: Optional[SeriesRefused] = None
    if check == "headers" and not (add or remove or facts.tenant_label):
        declared = snappy_declared_length(body)
        if declared > limit:
            raise PayloadTooLarge(
                f"snappy: body decompresses to {declared} bytes, more than the limit of {limit}"
            )
    else:
        raw = decode_body(body, facts.content_encoding, limit, allowed=("snappy",))
        changed, refused = _checked(raw, facts, add, remove, check)
        if changed is not None:
            relayed = snappy_compress(changed)
    return Intake([_relayed_push(relayed, facts)], refused)


def _relayed_push(relayed: bytes, facts: RequestFacts) -> Push:
    return Push(
        signal="remote_write",
        tenant=facts.relayed_tenant,
        owner=facts.tenant,
        body=relayed,
        content_type=PROTOBUF,
        content_encoding="snappy",
        extra_headers={
            "X-Prometheus-Remote-Write-Version": facts.remote_write_version
            or REMOTE_WRITE_VERSION
        },
        received_at=facts.received_at,
    )


def _checked(
    raw: bytes,
    facts: RequestFacts,
    add: Mapping[str, str],
    remove: frozenset[str],
    check: str,
) -> tuple[Optional[bytes], Optional[SeriesRefused]]:
    """
    An uncompressed remote-write request checked as deep as C{check}
    says, held to the sample limits where they apply, and with the label
    actions (and the tenant's label, for an upstream that keeps tenants
    apart by one) applied: the request's new bytes, uncompressed, or
    L{None} when it is relayed as it came; and the series left out.
    """
    judged = check == "labels" or facts.tenant_label is not None
    add = facts.series_labels(add)
    refused: Optional[SeriesRefused] = None
    verdict = None
    if judged:
        # Before the protobuf parse: the number of series bounds its cost.
        verdict = sample_limits.judge_encoded(raw, facts.samples, facts.received_at)
        if verdict is not None:
            sample_limits.check_series_count(
                "remote write", verdict[0], facts.samples.max_series_per_push
            )
    write = remote_write.decode(raw) if check != "headers" else None
    if write is not None and check == "labels" and not remote_write.validate_encoded(raw):
        # Not the shape the byte-level check reads: the objects judge.
        remote_write.validate(write)
    if judged:
        raw, write, refused = _within_limits(raw, write, verdict, facts)
    if add or remove:
        relabelled = relabel(raw, add, remove)
        if relabelled is not None:
            return relabelled, refused
        # Not the shape the byte-level path reads: the objects do it.
        write = write if write is not None else remote_write.decode(raw)
        if remote_write.apply_labels(write, add, remove) or refused is not None:
            return write.SerializeToString(), refused
        return None, refused
    return (raw if refused is not None else None), refused


#: The C{reason} of a series refused for naming a tenant its sender may
#: not use, in the refusal's message and C{sealgw_series_refused_total}.
TENANT_NOT_ALLOWED = "tenant_not_allowed"


def _by_tenant(
    raw: bytes,
    facts: RequestFacts,
    *,
    add: Mapping[str, str],
    remove: frozenset[str],
    check: str,
    label: str,
    keep: bool,
) -> Intake:
    """
    An uncompressed remote-write request split by the tenant each series
    names in C{label}: one push per tenant, each checked and relabelled as
    a request of its own and sent with its tenant.  A series without the
    label (or with it empty) is the request's tenant's, as is the
    metadata; a series naming a tenant the identity may not use is left
    out and told to the client (400, once the rest is accepted), as a
    series over a sample limit is, and so is the whole of a part whose
    every series is over a limit.

    @raise LimitExceeded: for too many series, or when no series is left.
    """
    most = facts.samples.max_series_per_push
    parts = tenant_split.split_by_label(raw, label, most)
    if parts.count > most:
        raise LimitExceeded(
            f"remote write: more than {most} series in one push, more than "
            f"max_series_per_push ({most}); send smaller batches",
            sample_limits.TOO_MANY_SERIES,
        )
    default = facts.tenant or ""
    allowed = facts.tenants
    grouped: dict[str, list[bytes]] = {}
    forbidden: list[bytes] = []
    for value, series in parts.series.items():
        tenant = value.decode("utf-8", "replace") if value else default
        if tenant != default and tenant not in allowed:
            forbidden.append(value)
            continue
        grouped.setdefault(tenant, []).extend(series)
    if parts.other:
        grouped.setdefault(default, [])
    refusals: list[SeriesRefused] = []
    if forbidden:
        refusals.append(_forbidden(parts, forbidden, label, facts))
    if not keep:
        remove = remove | {label}
    pushes: list[Push] = []
    for tenant, series in grouped.items():
        part_raw = b"".join(series)
        if tenant == default:
            part_raw += parts.other
        part_facts = attr.evolve(facts, tenant=tenant)
        try:
            changed, refused = _checked(part_raw, part_facts, add, remove, check)
        except AllSeriesRefused as e:
            refusals.append(e.refused)
            continue
        if refused is not None:
            refusals.append(refused)
        relayed = changed if changed is not None else part_raw
        pushes.append(_relayed_push(snappy_compress(relayed), part_facts))
    merged = _merged(refusals, parts.count)
    if not pushes:
        assert merged is not None
        raise AllSeriesRefused(merged)
    return Intake(pushes, merged, independent=True)


def _forbidden(
    parts: tenant_split.TenantParts, values: list[bytes], label: str, facts: RequestFacts
) -> SeriesRefused:
    """
    The series naming tenants the identity may not use, as a refusal
    naming the first of them.
    """
    first = min(values, key=lambda value: parts.first[value])
    series = parts.series_at(first)
    tenant = first.decode("utf-8", "replace")
    shown = tenant if len(tenant) <= 64 else tenant[:64] + "..."
    example = (
        f"timeseries[{parts.first[first]}] {sample_limits.describe(series)}: tenant "
        f"{shown!r} (label {label!r}) is not one identity {facts.identity!r} may use"
    )
    dropped = sum(len(parts.series[value]) for value in values)
    return SeriesRefused("remote write", parts.count, ((TENANT_NOT_ALLOWED, dropped),), example)


def _merged(refusals: list[SeriesRefused], total: int) -> Optional[SeriesRefused]:
    """
    The refusals of a request's parts as one for the whole request: its
    series counted by reason, the first refusal's example.
    """
    if not refusals:
        return None
    counts: dict[str, int] = {}
    for refusal in refusals:
        for reason, count in refusal.by_reason:
            counts[reason] = counts.get(reason, 0) + count
    return SeriesRefused(
        refusals[0].what, total, tuple(counts.items()), refusals[0].example
    )


def remote_write2_pushes(
    body: bytes,
    facts: RequestFacts,
    *,
    add: Mapping[str, str],
    remove: frozenset[str],
    limit: int,
    check: str = "labels",
) -> Intake:
    """
    A Prometheus remote-write 2.0 body (L{remote_write_pushes} sends it
    here by its C{Content-Type}): relayed as it came to an upstream that
    reads 2.0 when nothing needs to change it, else decoded, judged as a
    1.0 body is judged (on its 1.0 form, in C where built), and relayed
    as 2.0 with labels set through its symbols table, or converted to 1.0
    for an upstream that reads only that (C{facts.upstream_remote_write}).

    Unlike a 1.0 body, a 2.0 body that is converted or changed is parsed
    at C{check: headers} too, and the references of every series checked
    (and what they expand to bounded by C{limit}): its strings are only
    references until then, and the conversion writes them out.
    """
    if (facts.content_encoding or "").strip().lower() != "snappy":
        raise _snappy_required(_RW2)
    judged = check == "labels" or facts.tenant_label is not None
    add = facts.series_labels(add)
    as_v2 = facts.upstream_remote_write == 2
    if as_v2 and check == "headers" and not (add or remove):
        declared = snappy_declared_length(body)
        if declared > limit:
            raise PayloadTooLarge(
                f"snappy: body decompresses to {declared} bytes, more than the limit of {limit}"
            )
        return Intake([_remote_write2_push(body, facts)])
    raw = decode_body(body, facts.content_encoding, limit, allowed=("snappy",))
    request = remote_write2.decode(raw)
    if judged:
        sample_limits.check_series_count(
            _RW2, len(request.timeseries), facts.samples.max_series_per_push
        )
    v1, written = remote_write2.convert(raw, request, remote_write2.expansion_limit(raw, limit))
    if check == "labels" and not remote_write.validate_encoded(v1):
        remote_write.validate(remote_write.decode(v1))
    refused: Optional[SeriesRefused] = None
    if judged:
        codes, refused = _judge_v1(v1, facts)
        if refused is not None:
            remote_write2.drop_series(request, codes)
            if not as_v2:
                write = remote_write.decode(v1)
                for index in range(len(codes) - 1, -1, -1):
                    if codes[index]:
                        del write.timeseries[index]
                v1 = write.SerializeToString()
            written = remote_write2.written(request)
    if as_v2:
        if refused is not None:
            # Rare: series left out; the objects do it all.
            remote_write2.apply_labels(request, add, remove)
            relayed = remote_write2.encode(request)
        else:
            relabelled = remote_write2.apply_labels_encoded(raw, request, add, remove)
            relayed = body if relabelled is None else snappy_compress(relabelled)
        return Intake([_remote_write2_push(relayed, facts)], refused, written)
    if add or remove:
        relabelled = relabel(v1, add, remove)
        if relabelled is None:
            # Not the shape the byte-level path reads: the objects do it.
            write = remote_write.decode(v1)
            remote_write.apply_labels(write, add, remove)
            relabelled = write.SerializeToString()
        v1 = relabelled
    push = Push(
        signal="remote_write",
        tenant=facts.relayed_tenant,
        owner=facts.tenant,
        body=snappy_compress(v1),
        content_type=PROTOBUF,
        content_encoding="snappy",
        extra_headers={"X-Prometheus-Remote-Write-Version": REMOTE_WRITE_VERSION},
        received_at=facts.received_at,
    )
    return Intake([push], refused, written)


_RW2 = "remote write 2.0"


def _judge_v1(v1: bytes, facts: RequestFacts) -> tuple[bytes, Optional[SeriesRefused]]:
    """
    The sample limits' verdict on the 1.0 form C{v1} of a 2.0 request:
    one code a series (C{b""} when all are within), and what is refused.

    @raise AllSeriesRefused: when no series is left.
    """
    limits, now = facts.samples, facts.received_at
    verdict = sample_limits.judge_encoded(v1, limits, now)
    write = None
    if verdict is None:  # the C reader was not built
        write = remote_write.decode(v1)
        verdict = sample_limits.judge_objects(write, limits, now)
    count, codes = verdict
    if not codes:
        return codes, None
    write = write if write is not None else remote_write.decode(v1)
    refused = sample_limits.refused(_RW2, codes, write.timeseries, limits, now)
    if refused.dropped == count:
        raise AllSeriesRefused(refused)
    return codes, refused


def _remote_write2_push(body: bytes, facts: RequestFacts) -> Push:
    return Push(
        signal="remote_write",
        tenant=facts.relayed_tenant,
        owner=facts.tenant,
        body=body,
        content_type=remote_write2.CONTENT_TYPE,
        content_encoding="snappy",
        extra_headers={"X-Prometheus-Remote-Write-Version": remote_write2.VERSION},
        received_at=facts.received_at,
    )


def _within_limits(
    raw: bytes,
    write: Optional[WriteRequest],
    verdict: Optional[tuple[int, bytes]],
    facts: RequestFacts,
) -> tuple[bytes, Optional[WriteRequest], Optional[SeriesRefused]]:
    """
    A remote-write request with the series over a sample limit left out:
    C{raw} and C{write} as they are when every series is within (the
    common case: nothing built), else both without them.

    @param verdict: what the bytes were judged, or L{None} for the objects
        to judge.
    @raise LimitExceeded: for too many series, or when none is left.
    """
    limits, now = facts.samples, facts.received_at
    if verdict is None:
        write = write if write is not None else remote_write.decode(raw)
        verdict = sample_limits.judge_objects(write, limits, now)
        sample_limits.check_series_count("remote write", verdict[0], limits.max_series_per_push)
    count, codes = verdict
    if not codes:
        return raw, write, None
    write = write if write is not None else remote_write.decode(raw)
    refused = sample_limits.refused("remote write", codes, write.timeseries, limits, now)
    if refused.dropped == count:
        raise AllSeriesRefused(refused)
    for index in range(count - 1, -1, -1):
        if codes[index]:
            del write.timeseries[index]
    return write.SerializeToString(), write, refused


def seal_pushes(
    body: bytes,
    facts: RequestFacts,
    *,
    add: Mapping[str, str],
    remove: frozenset[str],
    batch_size: int,
    limit: int,
) -> Intake:
    """
    A seal-proxy push (snappy JSON with a delimited C{MetricFamily}
    stream) or a sui-proxy one (the bare stream): every metric converted
    to remote-write series, labelled as seal-proxy labels them, in batches
    of at most C{batch_size} samples; the series within the sample limits
    only.
    """
    if seal.is_sui_content_type(facts.content_type):
        families = seal.decode_sui_body(body, facts.content_encoding, limit)
        client_labels: dict[str, str] = {}
    else:
        if not facts.content_length_sent:
            raise LengthRequired("seal push: Content-Length is required")
        if (facts.content_encoding or "").strip().lower() != "snappy":
            raise _snappy_required("seal push")
        raw = decode_body(body, facts.content_encoding, limit, allowed=("snappy",))
        client_labels, buf = seal.decode_seal_json(raw)
        families = seal.decode_delimited(buf)
    # Every metric makes one series or more: bound the conversion's cost.
    sample_limits.check_series_count(
        "seal push",
        sum(len(family.metric) for family in families),
        facts.samples.max_series_per_push,
    )
    series = seal.to_series(
        families,
        client_labels=client_labels,
        add=facts.series_labels(add),
        remove=remove,
        node_name=facts.identity,
        client_ip=facts.client_ip,
        now_ms=int(facts.received_at * 1000),
    )
    return _built("seal push", "seal", series, facts, batch_size)


def pushgateway_pushes(
    body: bytes,
    facts: RequestFacts,
    *,
    grouping: Mapping[str, str],
    add: Mapping[str, str],
    remove: frozenset[str],
    batch_size: int,
    limit: int,
) -> Intake:
    """
    A Pushgateway push (text format or delimited protobuf, gzip allowed)
    for the group C{grouping}: every sample as a remote-write series, in
    batches of at most C{batch_size} samples; the series within the
    sample limits only.
    """
    raw = decode_body(body, facts.content_encoding, limit, allowed=("identity", "gzip"))
    series = pushgateway.to_series(
        raw,
        facts.content_type,
        grouping,
        add=facts.series_labels(add),
        remove=remove,
        now_ms=int(facts.received_at * 1000),
        max_series=facts.samples.max_series_per_push,
    )
    return _built("pushgateway", "remote_write", series, facts, batch_size)


def loki_pushes(body: bytes, facts: RequestFacts, *, limit: int) -> list[Push]:
    """
    A Loki push, JSON (optionally gzip) or protobuf (a snappy block),
    checked and relayed as it came: it was valid, and Loki reads both.
    """
    encoding = facts.content_encoding
    essence, _ = parse_media_type(facts.content_type)
    if (encoding or "").strip().lower() == "snappy" and essence != "application/json":
        # A protobuf push is a snappy block whatever the header says; some
        # clients say so, and Loki takes it (grafana/loki#3407), so this
        # gateway does too.
        encoding = None
    raw = decode_body(body, encoding, limit, allowed=("identity", "gzip"))
    loki.decode(raw, facts.content_type, limit=limit)
    return [
        Push(
            signal="loki",
            tenant=facts.tenant,
            body=body,
            content_type=essence or PROTOBUF,
            content_encoding=relayed_encoding(encoding),
            received_at=facts.received_at,
        )
    ]


#: The C{Content-Encoding}s OTLP/HTTP takes: what the OpenTelemetry SDKs
#: and the Collector send.
OTLP_ENCODINGS = ("identity", "gzip", "deflate", "zstd")


def otlp_pushes(signal: str, body: bytes, facts: RequestFacts, *, limit: int) -> list[Push]:
    """
    An OTLP/HTTP export of C{signal} (C{traces}, C{metrics}, C{logs}):
    protobuf is relayed as it came, JSON re-encoded as protobuf (what
    every OTLP receiver reads).
    """
    raw = decode_body(body, facts.content_encoding, limit, allowed=OTLP_ENCODINGS)
    message = otlp.decode(signal, raw, facts.content_type)
    essence, _ = parse_media_type(facts.content_type)
    encoding = relayed_encoding(facts.content_encoding)
    if essence == PROTOBUF and encoding in (None, "gzip"):
        upstream_body, upstream_encoding = body, encoding
    elif essence == PROTOBUF:
        # Not every OTLP receiver reads deflate or zstd (Mimir and Loki
        # read gzip only): such a body goes on decoded.
        upstream_body, upstream_encoding = raw, None
    else:
        upstream_body, upstream_encoding = otlp.encode_protobuf(message), None
    return [
        Push(
            signal=f"otlp_{signal}",
            tenant=facts.tenant,
            body=upstream_body,
            content_type=PROTOBUF,
            content_encoding=upstream_encoding,
            received_at=facts.received_at,
        )
    ]


def _built(
    what: str, signal: str, series: list[bytes], facts: RequestFacts, batch_size: int
) -> Intake:
    """
    Series sealgw built itself (from seal or Pushgateway bodies; encoded
    C{TimeSeries} of one sample each), judged against the sample limits on
    their bytes (in C, one walk for the whole push), as remote-write
    pushes of at most C{batch_size} samples each, those over a limit left
    out.

    @raise LimitExceeded: for too many series, or when none is left.
    @raise ValueError: if C{batch_size} is less than 1.
    """
    if batch_size < 1:
        raise ValueError("batch size must be at least 1")
    limits, now = facts.samples, facts.received_at
    sample_limits.check_series_count(what, len(series), limits.max_series_per_push)
    framed = wire.framed(series)
    raw = b"".join(framed)
    verdict = sample_limits.judge_encoded(raw, limits, now)
    if verdict is None:  # the C reader was not built
        verdict = sample_limits.judge_objects(WriteRequest.FromString(raw), limits, now)
    _, codes = verdict
    refused = None
    if codes:
        refused = sample_limits.refused(what, codes, series, limits, now, where=None)
        if refused.dropped == len(series):
            raise AllSeriesRefused(refused)
        framed = [one for one, code in zip(framed, codes, strict=True) if not code]
    elif len(framed) <= batch_size:
        return Intake([_remote_write_push(signal, raw, facts)] if framed else [])
    pushes = [
        _remote_write_push(signal, b"".join(framed[start:start + batch_size]), facts)
        for start in range(0, len(framed), batch_size)
    ]
    return Intake(pushes, refused)


def _remote_write_push(signal: str, raw: bytes, facts: RequestFacts) -> Push:
    return Push(
        signal=signal,
        tenant=facts.relayed_tenant,
        owner=facts.tenant,
        body=snappy_compress(raw),
        content_type=PROTOBUF,
        content_encoding="snappy",
        extra_headers={"X-Prometheus-Remote-Write-Version": REMOTE_WRITE_VERSION},
        received_at=facts.received_at,
    )


def relayed_encoding(encoding: Optional[str]) -> Optional[str]:
    """
    The C{Content-Encoding} to send with a body relayed as it came: the
    canonical name of what L{decode_body} accepted, or L{None} for none.
    Upstreams compare the name exactly (Loki refuses C{x-gzip}, C{GZIP}
    and C{identity}), so the client's spelling is not passed on.
    """
    value = (encoding or "").strip().lower()
    if value in ("", "identity"):
        return None
    if value == "x-gzip":
        return "gzip"
    return value


def _snappy_required(what: str) -> PayloadError:
    return BadEncoding(f"{what}: Content-Encoding must be snappy (block format)")
