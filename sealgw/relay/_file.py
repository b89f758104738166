"""
An upstream that writes decoded pushes to local JSON-lines files: the
built-in default's destination (push something, then read it on disk) and
a debugging aid next to a real upstream.

Writes run in the reactor's thread pool so a slow disk never stalls
requests; one L{DeferredLock} per file keeps pushes to the same file in
arrival order and keeps rotation from racing an append.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Callable, Iterable
from typing import Any, Optional

from twisted.internet.defer import (
    CancelledError,
    Deferred,
    DeferredList,
    DeferredLock,
    maybeDeferred,
)
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from sealgw.config import FileUpstreamConfig
from sealgw.relay._health import UpstreamHealth, rfc3339
from sealgw.relay._interfaces import (
    Delivery,
    IRelayMetrics,
    IUpstream,
    Push,
    UpstreamRejected,
    UpstreamUnavailable,
)
from sealgw.relay._metrics import NoMetrics
from sealgw.signals.errors import PayloadError
from sealgw.signals.records import SIGNALS, records
from sealgw.signals.remote_write import json_float

#: The file name used for pushes without a tenant.
NO_TENANT = "_none"

#: Runs a blocking callable off the reactor thread; the result fires on
#: the reactor thread.
ThreadRunner = Callable[..., "Deferred[Any]"]

#: Reads the records of a push (L{decode_push}); tests swap in their own.
PushDecoder = Callable[[Push], Optional[Iterable[dict[str, Any]]]]


class _RecordsFailed(Exception):
    """
    A push's records held something JSON cannot.
    """


class _Unreadable(Exception):
    """
    A push's body does not decode in its signal's format: bad data, as a
    receiver of that format would say (remote write relayed unchecked, at
    the C{headers} level, is first read here).
    """


def _safe_name(kind: str, value: str) -> str:
    """
    C{value}, if it can only ever name a single entry inside a folder.

    Tenant ids are validated long before this, but a file name built from
    request data is exactly where one missed check becomes a write
    anywhere on disk.
    """
    if (
        not value
        or value in (".", "..")
        or "/" in value
        or "\\" in value
        or "\x00" in value
        or (os.altsep is not None and os.altsep in value)
    ):
        raise UpstreamRejected(400, f"the {kind} cannot be used as a file name")
    return value


def _json_default(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _finite(value: Any) -> Any:
    """
    C{value} with NaN and infinities spelled as Prometheus' JSON API spells
    them (L{json_float}): JSON has no such numbers, and staleness markers
    are NaN.
    """
    if isinstance(value, float):
        return json_float(value)
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _dumps(line: dict[str, Any]) -> str:
    try:
        return json.dumps(line, separators=(",", ":"), ensure_ascii=False,
                          allow_nan=False, default=_json_default)
    except ValueError:
        return json.dumps(_finite(line), separators=(",", ":"), ensure_ascii=False,
                          allow_nan=False, default=_json_default)


def decode_push(push: Push) -> Optional[list[dict[str, Any]]]:
    """
    The records in a push, read back from its bytes by its signal's codec;
    L{None} for a signal no codec reads (such a push is written whole).

    Blocking: runs in a worker thread.
    """
    if push.signal not in SIGNALS:
        return None
    return records(push.signal, push.body, push.content_type, push.content_encoding)


def encode_lines(
    push: Push, received_at: float, decode: PushDecoder = decode_push
) -> bytes:
    """
    The JSON lines for one push: one object per record, carrying
    C{received_at}, C{tenant}, C{signal} and the C{record} itself.  A push
    whose records cannot be had is written whole, base64-encoded, so
    nothing is dropped on the way to disk.

    Runs in a worker thread (decoding is CPU work).
    """
    common = {"received_at": rfc3339(received_at), "tenant": push.tenant, "signal": push.signal}
    try:
        records: Any = decode(push)
    except PayloadError as e:
        problem: Optional[str] = e.message
    else:
        problem = None
    if problem is not None:
        # Raised here, outside the handler, so that nothing chains to the
        # decoder's frames and whatever they had inflated.
        raise _Unreadable(problem)
    if records is None:
        records = [{
            "content_type": push.content_type,
            "content_encoding": push.content_encoding,
            "body_base64": base64.b64encode(push.body).decode("ascii"),
        }]
    out = []
    try:
        for record in records:
            out.append(_dumps({**common, "record": record}))
    except (TypeError, ValueError, RecursionError) as e:
        raise _RecordsFailed(str(e)) from e
    if not out:
        return b""
    return ("\n".join(out) + "\n").encode("utf-8")


def rotate(path: str, keep: int) -> None:
    """
    C{path} becomes C{path.1}, C{path.1} becomes C{path.2} and so on;
    whatever was C{path.<keep>} is dropped.
    """
    if keep <= 0:
        os.remove(path)
        return
    for index in range(keep - 1, 0, -1):
        older = f"{path}.{index}"
        if os.path.exists(older):
            os.replace(older, f"{path}.{index + 1}")
    os.replace(path, f"{path}.1")


def append(path: str, data: bytes, rotate_size: int, keep: int) -> None:
    """
    Append C{data} to C{path}, rotating first when the file would grow past
    C{rotate_size}.  A single push bigger than C{rotate_size} still goes
    into one (fresh) file: splitting it would split a record.

    Blocking; runs in a worker thread.
    """
    if not data:
        return
    os.makedirs(os.path.dirname(path), exist_ok=True)
    try:
        size = os.stat(path).st_size
    except FileNotFoundError:
        size = 0
    if size > 0 and size + len(data) > rotate_size:
        rotate(path, keep)
    with open(path, "ab") as f:
        f.write(data)


def _unless_cancelled(
    operation: Deferred[Any], orphaned: Callable[[Failure], None]
) -> Deferred[Any]:
    """
    C{operation}'s result; cancelling the result does not touch
    C{operation} (a write in a thread cannot be stopped half way, and the
    file's lock must stay held until it ends).  A failure nobody waits for
    any more goes to C{orphaned}.
    """
    waiter: Deferred[Any] = Deferred()

    def relay(result: Any) -> None:
        if waiter.called:
            if isinstance(result, Failure):
                orphaned(result)
            return None
        if isinstance(result, Failure):
            waiter.errback(result)
        else:
            waiter.callback(result)
        return None

    operation.addBoth(relay)
    return waiter


@implementer(IUpstream)
class FileUpstream:
    """
    Writes pushes to C{<directory>/<signal>/<tenant or _none>.jsonl}, or,
    in worker process C{N} of several, to C{<tenant or _none>.N.jsonl}:
    each file has one writer, so lines are never interleaved and rotation
    never races another process's append.

    @param worker: the index of the worker process this upstream runs in,
        when the gateway runs several; L{None} in a single process.
    @param run_in_thread: how blocking work leaves the reactor thread; the
        reactor's thread pool by default, the gateway's own worker threads
        when built by L{sealgw.relay.build_upstreams}.
    @param decode: reads a push's records back from its bytes.
    """

    _log = Logger()

    def __init__(
        self,
        config: FileUpstreamConfig,
        reactor: Any,
        metrics: Optional[IRelayMetrics] = None,
        run_in_thread: Optional[ThreadRunner] = None,
        decode: PushDecoder = decode_push,
        worker: Optional[int] = None,
    ) -> None:
        self.name = config.name
        self.worker = worker
        self.config = config
        self._reactor = reactor
        self._directory = os.path.abspath(config.directory)
        self._metrics: IRelayMetrics = metrics if metrics is not None else NoMetrics()
        if run_in_thread is None:
            def run_in_thread(f: Callable[..., Any], *args: Any) -> Deferred[Any]:
                return deferToThreadPool(reactor, reactor.getThreadPool(), f, *args)
        self._run_in_thread: ThreadRunner = run_in_thread
        self._decode = decode
        self._locks: dict[str, DeferredLock] = {}
        self._health = UpstreamHealth(reactor)
        self._writing: set[Deferred[Any]] = set()

    def __repr__(self) -> str:
        return f"<FileUpstream {self.name!r} {self._directory!r}>"

    def path_for(self, push: Push) -> str:
        """
        The file a push goes to.

        @raise UpstreamRejected: (400) if the signal or tenant could name
            something outside the upstream's directory.
        """
        signal = _safe_name("signal", push.signal)
        tenant = NO_TENANT if push.tenant is None else _safe_name("tenant", push.tenant)
        suffix = ".jsonl" if self.worker is None else f".{self.worker}.jsonl"
        path = os.path.join(self._directory, signal, tenant + suffix)
        if os.path.dirname(os.path.dirname(path)) != self._directory:
            raise UpstreamRejected(400, "the tenant cannot be used as a file name")
        return path

    def deliver(self, push: Push) -> Deferred[Delivery]:
        return self._health.watch(Deferred.fromCoroutine(self._deliver(push)))

    def health(self) -> dict[str, Any]:
        """
        How recent writes went, for C{/health}.
        """
        return self._health.report()

    async def _deliver(self, push: Push) -> Delivery:
        began = self._reactor.seconds()
        label = "error"
        try:
            path = self.path_for(push)
            received_at = push.received_at or began
            lock = self._locks.setdefault(path, DeferredLock())
            await lock.acquire()
            written = maybeDeferred(self._run_in_thread, self._write, path, push, received_at)
            written.addBoth(self._release, path, lock)
            self._writing.add(written)
            written.addBoth(self._done_writing, written)
            try:
                await _unless_cancelled(written, self._orphaned)
            except _Unreadable as e:
                raise UpstreamRejected(400, f"the data does not decode: {e}") from None
            except _RecordsFailed as e:
                # Our codecs hand over data they have decoded once already;
                # if that fails here it is a bug, and a 4xx would make the
                # sender drop the data for good.
                raise UpstreamUnavailable(502, f"could not write the push as JSON records: {e}") from e
            except OSError as e:
                self._log.error(
                    "{upstream}: cannot write {path}: {error}",
                    upstream=self.name, path=path, error=e,
                )
                raise UpstreamUnavailable(
                    503, f"cannot write to the file upstream: {e.strerror or e}"
                ) from e
            except CancelledError:
                raise
            except Exception as e:
                self._log.failure("{upstream}: write failed", upstream=self.name)
                raise UpstreamUnavailable(502, "the file upstream failed") from e
            label = "204"
            return Delivery(status=204, body=b"", attempts=1)
        except CancelledError:
            label = "cancelled"
            raise
        finally:
            self._metrics.observe(self.name, label, self._reactor.seconds() - began)

    def _write(self, path: str, push: Push, received_at: float) -> None:
        data = encode_lines(push, received_at, self._decode)
        append(path, data, self.config.rotate_size, self.config.keep)

    def _orphaned(self, failure: Failure) -> None:
        self._log.failure(
            "{upstream}: a write whose client went away failed", failure=failure,
            upstream=self.name,
        )

    def _release(self, result: Any, path: str, lock: DeferredLock) -> Any:
        lock.release()
        if not lock.locked and not lock.waiting and self._locks.get(path) is lock:
            # Forget idle locks so a long-running gateway does not keep one
            # per tenant it ever saw.
            del self._locks[path]
        return result

    def _done_writing(self, result: Any, written: Deferred[Any]) -> Any:
        self._writing.discard(written)
        return result

    def close(self) -> Deferred[None]:
        """
        Fires once the writes already started have ended.
        """
        pending = DeferredList(list(self._writing), consumeErrors=True)
        return pending.addCallback(lambda _: None)
