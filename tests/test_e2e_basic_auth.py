"""
End to end over real sockets: clients that can send only Basic auth
(Prometheus's C{basic_auth}, Promtail) push through the gateway with a
token as the password, and the tenant they name reaches the upstream.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

from twisted.logger import capturedLogs, formatEvent
from twisted.trial.unittest import TestCase

from tests.e2e_support import (
    REMOTE_WRITE_HEADERS,
    TEST_TIMEOUT,
    HeaderMap,
    ScriptedUpstream,
    http_client,
    now_ms,
    remote_write_body,
    serve,
    start_gateway,
    unix_ns,
    write_request,
)

MULTI = "basic-e2e-token-0123456789"
HASHED = "basic-e2e-hashed-0123456789"
TOKENS = [
    {"name": "agent", "token": MULTI, "tenants": ["team-a", "team-b"]},
    {
        "name": "hashed",
        "token_sha256": hashlib.sha256(HASHED.encode()).hexdigest(),
        "tenants": ["team-h"],
    },
]


def basic(username: str, password: str, **more: str) -> HeaderMap:
    pair = base64.b64encode(f"{username}:{password}".encode()).decode("ascii")
    headers: HeaderMap = {"Authorization": [f"Basic {pair}"]}
    for name, value in more.items():
        headers[name.replace("_", "-")] = [value]
    return headers


def loki_json(ts: int) -> bytes:
    return json.dumps(
        {"streams": [{"stream": {"job": "promtail"}, "values": [[str(ts), "a line"]]}]}
    ).encode("utf-8")


class BasicAuthTests(TestCase):
    timeout = TEST_TIMEOUT

    async def setUp(self) -> None:  # type: ignore[override]
        self.upstream = ScriptedUpstream()
        server = serve(self, self.upstream)
        self.routes = {
            "upstreams": {"backend": {"url": server.url, "retry": {"attempts": 1}}},
            "push": {
                "remote_write": {"upstream": "backend", "path": "/api/v1/push"},
                "loki": {"upstream": "backend", "path": "/loki/api/v1/push"},
            },
        }
        self.gateway = await start_gateway(self, self.routes, TOKENS)
        self.http = http_client(self)

    async def post(
        self, path: str, body: bytes, headers: HeaderMap, url: str = ""
    ) -> tuple[int, Any, bytes]:
        response = await self.http.post(
            (url or self.gateway.url) + path, data=body, headers=headers
        )
        return response.code, response.headers, await response.content()

    async def remote_write(self, headers: HeaderMap, url: str = "") -> tuple[int, Any, bytes]:
        body = remote_write_body(write_request([({"__name__": "up"}, [(1.0, now_ms())])]))
        return await self.post("/api/v1/push", body, {**REMOTE_WRITE_HEADERS, **headers}, url)

    async def test_prometheus_basic_auth(self) -> None:
        """
        C{basic_auth: {username: team-b, password: TOKEN}}: the username
        chooses the tenant; the client's credentials never go upstream.
        """
        code, _, body = await self.remote_write(basic("team-b", MULTI))
        self.assertEqual(code, 204, body)
        [received] = self.upstream.received
        self.assertEqual(received.header_values("X-Scope-OrgID"), ["team-b"])
        self.assertIsNone(received.header("Authorization"))

    async def test_promtail(self) -> None:
        """
        Promtail's C{basic_auth} with C{tenant_id}: the username and the
        header name the same tenant.
        """
        code, _, body = await self.post(
            "/loki/api/v1/push",
            loki_json(unix_ns()),
            {"Content-Type": ["application/json"], **basic("team-a", MULTI, X_Scope_OrgID="team-a")},
        )
        self.assertEqual(code, 204, body)
        [received] = self.upstream.received
        self.assertEqual(received.header_values("X-Scope-OrgID"), ["team-a"])
        self.assertIsNone(received.header("Authorization"))

    async def test_hashed_token_entry(self) -> None:
        code, _, body = await self.remote_write(basic("", HASHED))
        self.assertEqual(code, 204, body)
        self.assertEqual(self.upstream.received[0].header_values("X-Scope-OrgID"), ["team-h"])

    async def test_wrong_password(self) -> None:
        code, headers, body = await self.remote_write(basic("team-a", "wrong-" + MULTI))
        self.assertEqual(code, 401, body)
        self.assertEqual(
            headers.getRawHeaders(b"www-authenticate"),
            [b'Bearer realm="sealgw", error="invalid_token", Basic realm="sealgw", charset="UTF-8"'],
        )
        self.assertNotIn(MULTI.encode(), body)
        self.assertEqual(self.upstream.received, [])

    async def test_missing_advertises_both(self) -> None:
        code, headers, _ = await self.remote_write({})
        self.assertEqual(code, 401)
        self.assertEqual(
            headers.getRawHeaders(b"www-authenticate"),
            [b'Bearer realm="sealgw", Basic realm="sealgw", charset="UTF-8"'],
        )

    async def test_username_outside_the_identity(self) -> None:
        code, _, body = await self.remote_write(basic("team-z", MULTI))
        self.assertEqual(code, 403, body)
        self.assertIn(b"'team-z'", body)
        self.assertEqual(self.upstream.received, [])

    async def test_username_and_header_disagree(self) -> None:
        code, _, body = await self.remote_write(basic("team-a", MULTI, X_Scope_OrgID="team-b"))
        self.assertEqual(code, 400, body)
        self.assertIn(b"the Basic auth username and X-Scope-OrgID name different tenants", body)
        self.assertEqual(self.upstream.received, [])

    async def test_turned_off(self) -> None:
        gateway = await start_gateway(self, {**self.routes, "auth": {"basic": False}}, TOKENS)
        code, headers, body = await self.remote_write(basic("team-a", MULTI), gateway.url)
        self.assertEqual(code, 401, body)
        self.assertIn(b"auth.basic", body)
        self.assertEqual(headers.getRawHeaders(b"www-authenticate"), [b'Bearer realm="sealgw"'])
        code, _, body = await self.remote_write(
            {"Authorization": [f"Bearer {MULTI}"], "X-Scope-OrgID": ["team-a"]}, gateway.url
        )
        self.assertEqual(code, 204, body)

    async def test_nothing_logged(self) -> None:
        """
        With access lines on, no log event holds the password, the
        username, or the encoded pair.
        """
        gateway = await start_gateway(self, {**self.routes, "log": {"access": True}}, TOKENS)
        sent = [
            basic("team-a", MULTI),
            basic("user-nobody-logs", "wrong-" + MULTI),
            basic("team-zz", MULTI),
        ]
        with capturedLogs() as events:
            codes = [(await self.remote_write(headers, gateway.url))[0] for headers in sent]
        self.assertEqual(codes, [204, 401, 403])
        self.assertTrue([e for e in events if e.get("audit")])
        self.assertTrue([e for e in events if e.get("access")])
        for event in events:
            text = repr(event) + (formatEvent(event) or "")
            for secret in (MULTI, "user-nobody-logs", "team-zz", "Basic "):
                self.assertNotIn(secret, text)
            for headers in sent:
                self.assertNotIn(headers["Authorization"][0][6:], text)
