"""
Tests for L{sealgw.relay.FileUpstream}: JSON lines on real disk, rotation,
ordering, path safety and disk errors.
"""

from __future__ import annotations

import errno
import functools
import json
import os
from collections.abc import Awaitable, Callable
from typing import Any

from twisted.internet import reactor as _reactor
from twisted.internet.defer import CancelledError, Deferred, gatherResults
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from sealgw.config import FileUpstreamConfig
from sealgw.relay import FileUpstream, Push, UpstreamRejected, UpstreamUnavailable
from sealgw.relay._health import rfc3339

reactor: Any = _reactor


# What the test decoder finds in a push, by the push's body: the tests
# choose the records (odd values, failures) instead of encoding them.
_RECORDS: dict[bytes, Callable[[], Any]] = {}


def push(**kwargs: Any) -> Push:
    """
    A push whose records are C{records()} (the default one series), or
    none at all when C{records} is L{None} (its body is then written
    whole).
    """
    records = kwargs.pop("records", lambda: [{"labels": {"__name__": "up"}, "value": 1.0}])
    defaults: dict[str, Any] = dict(
        signal="remote_write",
        tenant="team-a",
        body=b"raw",
        content_type="application/x-protobuf",
        content_encoding="snappy",
        received_at=1_700_000_000.5,
    )
    defaults.update(kwargs)
    if records is not None:
        defaults["body"] = b"records-%d" % len(_RECORDS)
        _RECORDS[defaults["body"]] = records
    return Push(**defaults)


def decode(push: Push) -> Any:
    """
    The test's stand-in for the signals' codecs.
    """
    records = _RECORDS.get(push.body)
    return None if records is None else records()


def inline(f: Callable[[Any], Awaitable[None]]) -> Callable[[Any], Deferred[None]]:
    """
    Run an C{async def} test method as a Deferred-returning one for trial.
    """

    @functools.wraps(f)
    def run(self: Any) -> Deferred[None]:
        return Deferred.fromCoroutine(f(self))  # type: ignore[arg-type]

    return run


def read_lines(path: str) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


class ThreadedTests(TestCase):
    """
    Through the reactor's real thread pool.
    """

    def upstream(self, **kwargs: Any) -> FileUpstream:
        self.directory = os.path.abspath(self.mktemp())
        config = FileUpstreamConfig(name="files", directory=self.directory, **kwargs)
        upstream = FileUpstream(config, reactor, decode=decode)
        self.addCleanup(upstream.close)
        return upstream

    @inline
    async def test_lines_written(self) -> None:
        upstream = self.upstream()
        delivery = await upstream.deliver(push())
        self.assertEqual((delivery.status, delivery.attempts), (204, 1))
        lines = read_lines(os.path.join(self.directory, "remote_write", "team-a.jsonl"))
        self.assertEqual(lines, [{
            "received_at": "2023-11-14T22:13:20.500Z",
            "tenant": "team-a",
            "signal": "remote_write",
            "record": {"labels": {"__name__": "up"}, "value": 1.0},
        }])

    @inline
    async def test_no_tenant_and_raw(self) -> None:
        """
        Pushes without a tenant go to C{_none.jsonl}; pushes without
        decoded records are kept whole.
        """
        upstream = self.upstream()
        await upstream.deliver(push(tenant=None, records=None, signal="loki"))
        [line] = read_lines(os.path.join(self.directory, "loki", "_none.jsonl"))
        self.assertIsNone(line["tenant"])
        self.assertEqual(line["record"]["body_base64"], "cmF3")
        self.assertEqual(line["record"]["content_encoding"], "snappy")

    @inline
    async def test_odd_values(self) -> None:
        """
        NaN (staleness markers), infinities and bytes still make JSON.
        """
        upstream = self.upstream()
        records = [{"v": float("nan")}, {"v": float("inf")}, {"b": b"\x00\xff", "s": "é"}]
        await upstream.deliver(push(records=lambda: records))
        lines = read_lines(os.path.join(self.directory, "remote_write", "team-a.jsonl"))
        self.assertEqual(
            [line["record"] for line in lines],
            [{"v": "NaN"}, {"v": "+Inf"}, {"b": "AP8=", "s": "é"}],
        )

    @inline
    async def test_order_kept(self) -> None:
        """
        Concurrent pushes to one file land in arrival order, and no lock
        outlives its use.
        """
        upstream = self.upstream()
        await gatherResults([
            upstream.deliver(push(records=lambda n=n: [{"n": n}])) for n in range(50)
        ])
        lines = read_lines(os.path.join(self.directory, "remote_write", "team-a.jsonl"))
        self.assertEqual([line["record"]["n"] for line in lines], list(range(50)))
        self.assertEqual(upstream._locks, {})

    @inline
    async def test_rotation(self) -> None:
        """
        A file that would grow past C{rotate_size} is rotated; only
        C{keep} old files stay.
        """
        # Each push is one line of 120-odd bytes; three fit in 400.
        upstream = self.upstream(rotate_size=400, keep=2)
        for n in range(10):
            await upstream.deliver(push(records=lambda n=n: [{"n": n}]))
        base = os.path.join(self.directory, "remote_write", "team-a.jsonl")
        files = sorted(os.listdir(os.path.dirname(base)))
        self.assertEqual(files, ["team-a.jsonl", "team-a.jsonl.1", "team-a.jsonl.2"])
        numbers = [
            [line["record"]["n"] for line in read_lines(path)]
            for path in (base + ".2", base + ".1", base)
        ]
        self.assertEqual(numbers, [[3, 4, 5], [6, 7, 8], [9]])
        for path in (base + ".2", base + ".1", base):
            self.assertLessEqual(os.path.getsize(path), 400)

    @inline
    async def test_oversized_push(self) -> None:
        """
        A push bigger than C{rotate_size} is written whole to a fresh file.
        """
        upstream = self.upstream(rotate_size=10, keep=1)
        await upstream.deliver(push())
        await upstream.deliver(push())
        base = os.path.join(self.directory, "remote_write", "team-a.jsonl")
        self.assertEqual(len(read_lines(base)), 1)
        self.assertEqual(len(read_lines(base + ".1")), 1)

    @inline
    async def test_path_escape(self) -> None:
        upstream = self.upstream()
        bad = [
            dict(tenant="../evil"), dict(tenant=".."), dict(tenant="."), dict(tenant="a/b"),
            dict(tenant="a\\b"), dict(tenant="a\x00b"), dict(tenant=""),
            dict(signal="../../etc"), dict(signal=".."),
        ]
        for kwargs in bad:
            with self.assertRaises(UpstreamRejected, msg=repr(kwargs)) as raised:
                await upstream.deliver(push(**kwargs))
            self.assertEqual(raised.exception.status, 400)
        self.assertFalse(os.path.exists(self.directory))
        parent = os.path.dirname(self.directory)
        self.assertFalse(os.path.exists(os.path.join(parent, "evil.jsonl")))

    @inline
    async def test_disk_full(self) -> None:
        """
        ENOSPC is a 503, never a 2xx.
        """
        if not os.path.exists("/dev/full"):
            raise self.skipTest("no /dev/full here")
        upstream = self.upstream()
        folder = os.path.join(self.directory, "remote_write")
        os.makedirs(folder)
        os.symlink("/dev/full", os.path.join(folder, "team-a.jsonl"))
        with self.assertRaises(UpstreamUnavailable) as raised:
            await upstream.deliver(push())
        self.assertEqual(raised.exception.status, 503)
        self.assertIn(os.strerror(errno.ENOSPC), raised.exception.reason)

    @inline
    async def test_not_a_directory(self) -> None:
        upstream = self.upstream()
        with open(self.directory, "w") as f:
            f.write("a file where the directory should be")
        with self.assertRaises(UpstreamUnavailable) as raised:
            await upstream.deliver(push())
        self.assertEqual(raised.exception.status, 503)

    @inline
    async def test_unwritable(self) -> None:
        """
        EACCES is a 503.
        """
        if os.geteuid() == 0:
            raise self.skipTest("root can write anywhere")
        upstream = self.upstream()
        os.makedirs(self.directory)
        os.chmod(self.directory, 0o500)
        self.addCleanup(os.chmod, self.directory, 0o700)
        with self.assertRaises(UpstreamUnavailable) as raised:
            await upstream.deliver(push())
        self.assertEqual(raised.exception.status, 503)
        self.assertIn(os.strerror(errno.EACCES), raised.exception.reason)

    @inline
    async def test_records_fail(self) -> None:
        """
        Records that cannot be written as JSON are not acknowledged.
        """
        upstream = self.upstream()

        def broken() -> list[dict[str, Any]]:
            return [{"x": object()}]

        with self.assertRaises(UpstreamUnavailable) as raised:
            await upstream.deliver(push(records=broken))
        self.assertEqual(raised.exception.status, 502)


class ManualThread:
    """
    Stands in for the thread pool: calls wait until the test runs them.
    """

    def __init__(self) -> None:
        self.calls: list[tuple[Deferred[Any], Callable[..., Any], tuple[Any, ...]]] = []

    def __call__(self, f: Callable[..., Any], *args: Any) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        self.calls.append((d, f, args))
        return d

    def run_next(self) -> None:
        d, f, args = self.calls.pop(0)
        try:
            result = f(*args)
        except BaseException as e:
            d.errback(e)
        else:
            d.callback(result)


class CodecTests(TestCase):
    """
    With the real codecs: a push is re-decoded from its bytes alone.
    """

    @inline
    async def test_remote_write_records(self) -> None:
        from sealgw.signals import snappy_compress
        from sealgw.signals.proto.remote_pb2 import WriteRequest

        write = WriteRequest()
        series = write.timeseries.add()
        series.labels.add(name="__name__", value="up")
        series.samples.add(value=float("nan"), timestamp=1700000000000)
        directory = os.path.abspath(self.mktemp())
        upstream = FileUpstream(FileUpstreamConfig(name="files", directory=directory), reactor)
        self.addCleanup(upstream.close)
        await upstream.deliver(
            Push.from_bytes(
                Push(
                    signal="remote_write",
                    tenant="team-a",
                    body=snappy_compress(write.SerializeToString()),
                    content_type="application/x-protobuf",
                    content_encoding="snappy",
                ).to_bytes()
            )
        )
        [line] = read_lines(os.path.join(directory, "remote_write", "team-a.jsonl"))
        self.assertEqual(
            line["record"], {"labels": {"__name__": "up"}, "samples": [[1700000000000, "NaN"]]}
        )

    @inline
    async def test_undecodable(self) -> None:
        """
        A body its codec cannot read is bad data, refused as a receiver of
        its format would refuse it: 400, never retried.
        """
        directory = os.path.abspath(self.mktemp())
        upstream = FileUpstream(FileUpstreamConfig(name="files", directory=directory), reactor)
        self.addCleanup(upstream.close)
        with self.assertRaises(UpstreamRejected) as caught:
            await upstream.deliver(
                Push(
                    signal="remote_write",
                    tenant="team-a",
                    body=b"not snappy",
                    content_type="application/x-protobuf",
                    content_encoding="snappy",
                )
            )
        self.assertEqual(caught.exception.status, 400)
        self.assertIn("does not decode: snappy", caught.exception.reason)
        # The decoder's own exception, and what its frames held, is not
        # chained to the refusal.
        self.assertIsNone(caught.exception.__context__.__context__)


class LockTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.directory = os.path.abspath(self.mktemp())
        self.thread = ManualThread()
        self.upstream = FileUpstream(
            FileUpstreamConfig(name="files", directory=self.directory),
            Clock(),
            run_in_thread=self.thread,
            decode=decode,
        )
        self.path = os.path.join(self.directory, "remote_write", "team-a.jsonl")

    def test_one_write_per_file_at_a_time(self) -> None:
        first = self.upstream.deliver(push(records=lambda: [{"n": 1}]))
        second = self.upstream.deliver(push(records=lambda: [{"n": 2}]))
        other = self.upstream.deliver(push(tenant="team-b"))
        self.assertEqual(len(self.thread.calls), 2)  # team-a's first, team-b
        self.thread.run_next()
        self.successResultOf(first)
        self.assertNoResult(second)
        self.thread.run_next()
        self.successResultOf(other)
        self.thread.run_next()
        self.successResultOf(second)
        self.assertEqual([line["record"]["n"] for line in read_lines(self.path)], [1, 2])

    def test_cancel_while_waiting(self) -> None:
        """
        A push cancelled while waiting for the file is never written.
        """
        first = self.upstream.deliver(push(records=lambda: [{"n": 1}]))
        second = self.upstream.deliver(push(records=lambda: [{"n": 2}]))
        second.cancel()
        self.failureResultOf(second, CancelledError)
        self.thread.run_next()
        self.successResultOf(first)
        self.assertEqual(self.thread.calls, [])
        self.assertEqual([line["record"]["n"] for line in read_lines(self.path)], [1])

    def test_cancel_while_writing(self) -> None:
        """
        A write under way cannot be stopped: cancelling answers the caller
        at once, but the file stays locked until the write ends.
        """
        first = self.upstream.deliver(push(records=lambda: [{"n": 1}]))
        second = self.upstream.deliver(push(records=lambda: [{"n": 2}]))
        first.cancel()
        self.failureResultOf(first, CancelledError)
        self.assertEqual(len(self.thread.calls), 1)
        closed = self.upstream.close()
        self.assertNoResult(closed)
        self.thread.run_next()
        self.successResultOf(closed)
        self.thread.run_next()
        self.successResultOf(second)
        self.assertEqual([line["record"]["n"] for line in read_lines(self.path)], [1, 2])

    def test_cancelled_write_fails(self) -> None:
        """
        A write that fails after its client went away is still logged.
        """
        d = self.upstream.deliver(push())
        d.cancel()
        self.failureResultOf(d, CancelledError)
        done, _, _ = self.thread.calls.pop(0)
        done.errback(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)
        self.assertEqual(self.upstream._locks, {})

    def test_permission_denied(self) -> None:
        """
        EACCES (as the thread pool would report it) is a 503, and the file
        is free again afterwards.
        """
        d = self.upstream.deliver(push())
        done, _, _ = self.thread.calls.pop(0)
        done.errback(PermissionError(errno.EACCES, os.strerror(errno.EACCES)))
        error = self.failureResultOf(d, UpstreamUnavailable).value
        self.assertEqual(error.status, 503)
        self.assertIn(os.strerror(errno.EACCES), error.reason)
        self.assertEqual(self.upstream._locks, {})

    def test_unexpected_failure(self) -> None:
        """
        Anything unforeseen is still not acknowledged.
        """
        d = self.upstream.deliver(push())
        done, _, _ = self.thread.calls.pop(0)
        done.errback(RuntimeError("bug"))
        self.assertEqual(self.failureResultOf(d, UpstreamUnavailable).value.status, 502)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_rfc3339(self) -> None:
        self.assertEqual(rfc3339(0), "1970-01-01T00:00:00.000Z")
