"""
End to end: the memory a refused body cost leaves the gateway with it.

A real gateway runs under twistd in a child process, and its resident
size is read from C{/proc/PID/status} (C{VmRSS}, and C{VmHWM} reset
through C{/proc/PID/clear_refs}): this test process's own high-water mark
cannot tell, since an earlier test may have peaked higher.
"""

from __future__ import annotations

import functools
import json
import os
import textwrap
import zlib
from collections.abc import Callable

from twisted.internet.defer import Deferred, gatherResults
from twisted.trial.unittest import SkipTest, TestCase

from sealgw.web.push import DECODE_IN_THREAD
from tests.e2e_support import REMOTE_WRITE_HEADERS, HeaderMap, bearer, http_client
from tests.subprocesses import Child, free_port, healthy, stop, twistd, wait_for
from tests.wire import varint

MiB = 1024 * 1024
#: The gateway's C{limits.max_decompressed} here: small, so the test is quick.
LIMIT = 8 * MiB
#: Bodies sent at once.  More than one worker thread decodes at a time.
CONCURRENCY = 8
ROUNDS = 3
#: What refused bodies may leave behind, all rounds together: two bodies'
#: worth.  Measured, 4 to 13 MiB (malloc's free lists in the worker
#: threads' arenas, the interpreter's caches); before the fix, 60 to 130.
LEFT_BEHIND = 2 * LIMIT
#: What a body being decoded may cost at its worst, besides the limit:
#: the body as sent and one piece of output.
PER_BODY = MiB
#: The interpreter's own growth while serving (caches, thread stacks).
SLACK = 16 * MiB
TOKEN = "memory-token-0123456789"
JSON: HeaderMap = {"Content-Type": ["application/json"]}
GZIP_JSON: HeaderMap = {"Content-Type": ["application/json"], "Content-Encoding": ["gzip"]}
GZIP_OTLP: HeaderMap = {
    "Content-Type": ["application/x-protobuf"],
    "Content-Encoding": ["gzip"],
}


def _noise(size: int) -> bytes:
    """
    C{size} bytes that gzip cannot shrink, so that a body is at least as
    large as sealgw decodes in a worker thread.
    """
    return os.urandom(size)


def gzip_expanding(prefix: bytes, zeros: int) -> bytes:
    """
    C{prefix} and then C{zeros} zero bytes, gzip-compressed a MiB at a
    time so that the test never holds the expanded form.
    """
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    out = [compressor.compress(prefix)]
    chunk = bytes(MiB)
    for _ in range(zeros // MiB):
        out.append(compressor.compress(chunk))
    out.append(compressor.flush())
    return b"".join(out)


@functools.cache
def gzip_bomb() -> bytes:
    """
    About 370 KiB that inflate to 64 MiB: eight times the limit.
    """
    return gzip_expanding(_noise(300 * 1024), 64 * MiB)


@functools.cache
def not_json() -> bytes:
    """
    About 370 KiB that inflate to just under the limit, and are not JSON:
    refused with 400 only once all of it was inflated.
    """
    return gzip_expanding(b"not json " + _noise(300 * 1024), LIMIT - MiB)


@functools.cache
def snappy_liar() -> bytes:
    """
    A snappy block that declares the limit (so it is decompressed) and
    is 300 KiB of noise after that.
    """
    return varint(LIMIT) + os.urandom(300 * 1024)


@functools.cache
def valid_loki_push() -> bytes:
    """
    A valid Loki push of about 300 KiB, as it is (no Content-Encoding):
    large enough to be decoded in a worker thread.
    """
    lines = [[str(1_700_000_000_000_000_000 + i), _noise(128).hex()] for i in range(1_000)]
    push = {"streams": [{"stream": {"job": "memory"}, "values": lines}]}
    return json.dumps(push).encode("utf-8")


def memory(pid: int) -> dict[str, int]:
    """
    C{VmRSS} and C{VmHWM} of process C{pid}, in bytes.
    """
    found = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                found[name] = int(value.split()[0]) * 1024
    return found


def reset_peak(pid: int) -> bool:
    """
    Start C{pid}'s C{VmHWM} again from its present resident size.
    """
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


class RefusedBodyMemoryTests(TestCase):
    timeout = 180

    async def setUp(self) -> None:  # type: ignore[override]
        if not os.path.exists("/proc/self/status"):
            raise SkipTest("needs /proc")
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        tokens = os.path.join(directory, "tokens.yaml")
        with open(tokens, "w") as f:
            f.write(f"- {{name: node-1, token: {TOKEN}, tenants: [team-a]}}\n")
        port = free_port()
        config = os.path.join(directory, "sealgw.yaml")
        with open(config, "w") as f:
            f.write(
                textwrap.dedent(
                    f"""
                    listeners:
                      - endpoint: tcp:{port}:interface=127.0.0.1
                        ops: true
                    limits: {{max_body: 1MiB, max_decompressed: {LIMIT}}}
                    upstreams:
                      files: {{type: file, directory: {directory}/data}}
                    push:
                      loki: {{upstream: files}}
                      otlp_traces: {{upstream: files}}
                      remote_write: {{upstream: files, check: decode}}
                    auth:
                      token_file: {{path: {tokens}}}
                    log: {{access: false}}
                    """
                )
            )
        self.child: Child = twistd("sealgw", "--config", config)
        self.addCleanup(stop, self.child)
        self.url = f"http://127.0.0.1:{port}"
        await wait_for(lambda: Deferred.fromCoroutine(healthy(self.url)))
        self.pid = self.child.transport.pid  # type: ignore[union-attr]
        self.http = http_client(self)

    async def post(self, path: str, body: bytes, headers: HeaderMap) -> tuple[int, bytes]:
        response = await self.http.post(
            self.url + path, data=body, headers={**headers, **bearer(TOKEN)}
        )
        return response.code, await response.content()

    async def at_once(
        self, requests: list[tuple[str, bytes, HeaderMap]]
    ) -> list[tuple[int, bytes]]:
        return list(
            await gatherResults(
                [Deferred.fromCoroutine(self.post(*request)) for request in requests]
            )
        )

    async def warm_up(self) -> int:
        """
        Serve valid pushes, with as many worker threads as the test will
        use, then say the resident size.
        """
        self.assertGreaterEqual(len(valid_loki_push()), DECODE_IN_THREAD)
        answers = await self.at_once(
            [("/loki/api/v1/push", valid_loki_push(), JSON)] * CONCURRENCY
        )
        self.assertEqual({code for code, _ in answers}, {204}, answers[0])
        return memory(self.pid)["VmRSS"]

    async def assertMemoryGivenBack(
        self,
        requests: Callable[[], list[tuple[str, bytes, HeaderMap]]],
        check: Callable[[int, bytes], None],
    ) -> None:
        """
        Send C{requests} C{ROUNDS} times, all of each round at once: each
        answer passes C{check}, the resident size after every round is
        within C{LEFT_BEHIND} of where it started, and its peak within
        what the bodies being decoded at once may cost.
        """
        baseline = await self.warm_up()
        peak_reset = reset_peak(self.pid)
        peak_bound = baseline + CONCURRENCY * (LIMIT + PER_BODY) + SLACK
        after = []
        for _ in range(ROUNDS):
            for code, body in await self.at_once(requests()):
                check(code, body)
            after.append(memory(self.pid)["VmRSS"])
        seen = ", ".join(f"{(a - baseline) / MiB:+.0f}" for a in after)
        for rss in after:
            self.assertLessEqual(
                rss,
                baseline + LEFT_BEHIND,
                f"resident size after each round, MiB from {baseline / MiB:.0f}: {seen}",
            )
        if peak_reset:
            peak = memory(self.pid)["VmHWM"]
            self.assertLessEqual(
                peak,
                peak_bound,
                f"peak {(peak - baseline) / MiB:+.0f} MiB over {baseline / MiB:.0f} MiB",
            )

    async def test_gzip_bombs(self) -> None:
        """
        Gzip bombs of ~370 KiB (decoded in worker threads) on the Loki and
        OTLP routes, eight at a time: each refused with 413 once it passes
        the limit, and none of it kept.
        """

        def check(code: int, body: bytes) -> None:
            self.assertEqual(code, 413, body)
            self.assertIn(b"gzip: body decompresses to more than the limit of 8388608 bytes", body)

        self.assertGreaterEqual(len(gzip_bomb()), DECODE_IN_THREAD)
        half = CONCURRENCY // 2
        await self.assertMemoryGivenBack(
            lambda: [("/loki/api/v1/push", gzip_bomb(), GZIP_JSON)] * half
            + [("/v1/traces", gzip_bomb(), GZIP_OTLP)] * (CONCURRENCY - half),
            check,
        )

    async def test_bodies_refused_once_inflated(self) -> None:
        """
        Bodies refused only after all of them was inflated (not JSON), and
        snappy blocks decompressed to their declared size before they turn
        out broken: the inflated data is not kept either.
        """

        def check(code: int, body: bytes) -> None:
            self.assertEqual(code, 400, body)
            self.assertIn(body.strip(), _REFUSALS)

        self.assertGreaterEqual(min(len(not_json()), len(snappy_liar())), DECODE_IN_THREAD)
        half = CONCURRENCY // 2
        await self.assertMemoryGivenBack(
            lambda: [("/loki/api/v1/push", not_json(), GZIP_JSON)] * half
            + [("/api/v1/push", snappy_liar(), REMOTE_WRITE_HEADERS)] * (CONCURRENCY - half),
            check,
        )


_REFUSALS = {
    b"loki push: body is not valid JSON",
    b"snappy: body is not a valid snappy block",
}
