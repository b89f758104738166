"""
Entra ID tokens with C{workers: 2}, as users run them (twistd, real
worker processes, a fake Entra ID and a fake Azure Monitor workspace on
loopback): the main process asks for each token once, and every worker
pushes with the token it was handed last.
"""

from __future__ import annotations

import itertools
import json
import os
import stat
from typing import Any

import treq
from twisted.internet import reactor as _reactor
from twisted.internet.defer import Deferred
from twisted.trial.unittest import TestCase
from twisted.web.server import Request

from tests.e2e_support import now_ms, remote_write_body, serve, write_request
from tests.subprocesses import Child, free_port, stop, twistd, wait_for
from tests.test_azure_e2e import REMOTE_WRITE, secret_credentials, write_config
from tests.test_azure_fakes import CLIENT, SECRET, FakeEntraID, FakeWorkspace

reactor: Any = _reactor


class TimedEntraID(FakeEntraID):
    """
    The fake Entra ID, noting when each token request arrived.
    """

    def __init__(self) -> None:
        super().__init__()
        self.times: list[float] = []

    def render_POST(self, request: Request) -> bytes:
        self.times.append(reactor.seconds())
        return super().render_POST(request)


def _events(child: Child) -> list[dict[str, Any]]:
    return [
        json.loads(line)
        for line in child.out.decode(errors="replace").splitlines()
        if line.startswith("{")
    ]


async def _get(url: str) -> tuple[int, bytes]:
    response = await treq.get(url, persistent=False, timeout=5)
    return response.code, await response.content()


class TokensWithWorkersTests(TestCase):
    timeout = 120

    def setUp(self) -> None:
        self.entra = TimedEntraID()
        self.entra.secrets[CLIENT] = SECRET
        # Renewed 3s after each token, so the test sees a refresh soon.
        self.entra.refresh_in = 3
        server = serve(self, self.entra)
        self.entra.url = server.url
        # Only the token issued last is accepted: a worker still pushing
        # with an earlier one is refused.
        self.workspace = FakeWorkspace(lambda token: token == self.entra.current)
        self.workspace_url = serve(self, self.workspace).url

    async def test_one_token_request_per_refresh(self) -> None:
        """
        With two workers, Entra ID sees one token request per refresh (at
        the refresh's pace, never two at once), from the main process; both
        workers serve with the renewed token, and /health and /metrics say
        so once for the daemon.
        """
        port = free_port()
        path = write_config(self, {
            "listeners": [{
                "endpoint": f"tcp:{port}:interface=127.0.0.1",
                "auth": "none",
                "identity": "sidecar",
                "ops": True,
            }],
            "upstreams": {
                "azure": {"url": self.workspace_url, "azure_ad": secret_credentials(self.entra)},
            },
            "push": {"remote_write": {"upstream": "azure", "path": "/api/v1/write"}},
            "log": {"format": "json"},
            "drain_grace": "5s",
            "workers": 2,
        })
        child = twistd("sealgw", "--config", path)
        self.addCleanup(stop, child)
        url = f"http://127.0.0.1:{port}"

        async def ready() -> bool:
            code, _ = await _get(url + "/ready")
            return code == 200

        await wait_for(lambda: Deferred.fromCoroutine(ready()))
        # From here on tokens are not renewed early: one more renewal (of
        # the token held, due 3s after it came) and no other.
        self.entra.refresh_in = None
        had = len(self.entra.issued)

        async def renewed() -> bool:
            return len(self.entra.issued) == had + 1

        await wait_for(lambda: Deferred.fromCoroutine(renewed()))
        newest = self.entra.issued[-1]

        # Every worker has been handed the renewed token: /health (from
        # whichever worker answers) shows its expiry on both.
        seen: dict[int, str] = {}

        async def both_renewed() -> bool:
            [*_, last] = [
                e["message"] for e in _events(child) if "Entra ID token" in e.get("message", "")
            ]
            expiry = last.rsplit("valid until ", 1)[1]
            code, body = await _get(url + "/health")
            report = json.loads(body)
            seen[report["components"]["workers"]["answered_by"]["index"]] = report["expires_at"]
            return code == 200 and seen == {0: expiry, 1: expiry}

        await wait_for(lambda: Deferred.fromCoroutine(both_renewed()))

        # Pushes through both workers reach the workspace with that token.
        body = remote_write_body(write_request([({"__name__": "up"}, [(1.0, now_ms())])]))
        workers: set[int] = set()
        sent = 0
        while workers != {0, 1} and sent < 300:
            response = await treq.post(
                url + "/api/v1/write", data=body, headers=REMOTE_WRITE, persistent=False,
                timeout=10,
            )
            self.assertEqual(response.code, 204, await response.content())
            await response.content()
            sent += 1
            workers = {
                e["worker"] for e in _events(child) if e.get("access") and e.get("status") == 204
            }
        self.assertEqual(workers, {0, 1})
        self.assertEqual(len(self.workspace.received), sent)
        self.assertEqual(
            {r.authorization for r in self.workspace.received}, {f"Bearer {newest.value}"}
        )

        # One request per token, one token per refresh, never two at once.
        self.assertEqual(len(self.entra.forms), len(self.entra.issued))
        gaps = [b - a for a, b in itertools.pairwise(self.entra.times)]
        self.assertTrue(gaps and all(gap >= 2.5 for gap in gaps), gaps)

        # The refreshers' series, counted once for the daemon.
        for _ in range(4):
            code, metrics = await _get(url + "/metrics")
            self.assertEqual(code, 200)
            self.assertIn(
                f'sealgw_outbound_token_refreshes_total{{upstream="azure"}} '
                f"{float(len(self.entra.issued))}".encode(),
                metrics,
            )
            self.assertIn(
                b'sealgw_outbound_token_refresh_failures_total{upstream="azure"} 0.0', metrics
            )

        # The tokens crossed each worker's standard input: an anonymous
        # pipe, not a socket or a file another process could open.
        _, health = await _get(url + "/health")
        pids = [w["pid"] for w in json.loads(health)["components"]["workers"]["workers"]]
        self.assertEqual(len(pids), 2)
        for pid in pids:
            self.assertTrue(stat.S_ISFIFO(os.stat(f"/proc/{pid}/fd/0").st_mode))

        # Only the main process asked, and logged: no line from a worker.
        token_lines = [e for e in _events(child) if "Entra ID token" in e.get("message", "")]
        self.assertEqual(len(token_lines), len(self.entra.issued))
        self.assertTrue(all("worker" not in e for e in token_lines), token_lines)

        await stop(child)
        self.assertEqual(child.exit_code, 0)
        output = child.out + child.err
        for token in self.entra.issued:
            self.assertNotIn(token.value.encode(), output)
        self.assertNotIn(SECRET.encode(), output)
        self.assertNotIn(b"Traceback", output)

    async def test_failures_met_once(self) -> None:
        """
        An authority failing at start is asked by the main process alone,
        one attempt at a time with backoff: the failures are logged and
        counted once for the daemon, and the workers serve once the token
        comes.
        """
        self.entra.refresh_in = None
        self.entra.failing = 503
        port = free_port()
        path = write_config(self, {
            "listeners": [{
                "endpoint": f"tcp:{port}:interface=127.0.0.1",
                "auth": "none",
                "identity": "sidecar",
                "ops": True,
            }],
            "upstreams": {
                "azure": {"url": self.workspace_url, "azure_ad": secret_credentials(self.entra)},
            },
            "push": {"remote_write": {"upstream": "azure", "path": "/api/v1/write"}},
            "log": {"format": "json"},
            "drain_grace": "5s",
            "workers": 2,
        })
        child = twistd("sealgw", "--config", path)
        self.addCleanup(stop, child)
        url = f"http://127.0.0.1:{port}"

        async def failed_twice() -> bool:
            return len(self.entra.forms) >= 2

        await wait_for(lambda: Deferred.fromCoroutine(failed_twice()))
        self.entra.failing = None

        async def ready() -> bool:
            code, _ = await _get(url + "/ready")
            return code == 200

        await wait_for(lambda: Deferred.fromCoroutine(ready()))
        failed = len(self.entra.forms) - len(self.entra.issued)
        self.assertEqual(len(self.entra.issued), 1)
        self.assertGreaterEqual(failed, 2)
        # One attempt at a time, each after the last one's backoff.
        gaps = [b - a for a, b in itertools.pairwise(self.entra.times)]
        self.assertTrue(all(gap >= 0.5 for gap in gaps), gaps)

        warnings = [
            e for e in _events(child) if "no Entra ID token from" in e.get("message", "")
        ]
        self.assertEqual(len(warnings), failed)
        self.assertTrue(all("worker" not in e for e in warnings), warnings)
        code, metrics = await _get(url + "/metrics")
        self.assertIn(
            f'sealgw_outbound_token_refresh_failures_total{{upstream="azure"}} '
            f"{float(failed)}".encode(),
            metrics,
        )
        code, body = await _get(url + "/health")
        credential = json.loads(body)["components"]["credentials"]["azure"]
        self.assertEqual((credential["status"], credential["consecutive_failures"]), ("ok", 0))
        await stop(child)
        self.assertEqual(child.exit_code, 0)
