"""
Tests for the shipped in-memory fakes: they must behave like what they
stand in for, or the tests built on them prove nothing.
"""

from __future__ import annotations

import json
from typing import Any, Optional

from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.interfaces import IPushProducer
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.client import FileBodyProducer
from zope.interface.verify import verifyObject

from sealgw.auth._jwt import parse_jwks, verify_signature
from sealgw.http import (
    BodyReadFailed,
    CredentialsUnavailable,
    IHTTPClient,
    IHTTPResponse,
    StreamStopped,
)
from sealgw.testing import (
    MemoryHTTPClient,
    MemoryIdentityProvider,
    MemoryResponse,
    generate_keys,
    script,
)

KEYS = generate_keys()


class Consumer:
    def __init__(self, pause_after: Optional[int] = None) -> None:
        self.data: list[bytes] = []
        self.producer: Optional[IPushProducer] = None
        self.pause_after = pause_after

    def registerProducer(self, producer: IPushProducer, streaming: bool) -> None:
        self.producer = producer

    def unregisterProducer(self) -> None:
        self.producer = None

    def write(self, data: bytes) -> None:
        self.data.append(data)
        if self.pause_after is not None and len(self.data) == self.pause_after:
            assert self.producer is not None
            self.producer.pauseProducing()


class MemoryHTTPClientTests(SynchronousTestCase):
    def test_records_as_sent(self) -> None:
        """
        A request is recorded as the real client would send it: query
        added, the header policy and credentials applied.
        """

        class Token:
            def authorization(self) -> Deferred[Optional[bytes]]:
                return succeed(b"Bearer gw")

        client = MemoryHTTPClient(
            script(MemoryResponse(201, b"ok", {"X-Answer": "1"})),
            headers={"X-Static": "s"},
            credentials=Token(),
        )
        self.assertTrue(verifyObject(IHTTPClient, client))
        response = self.successResultOf(
            client.request(
                "POST", "http://mimir/api?a=1", query=[("b", "x y")], body=b"data",
                headers={"X-Scope-OrgID": "evil", "Authorization": "Bearer client"},
                content_type="text/plain", tenant="team-a",
            )
        )
        self.assertTrue(verifyObject(IHTTPResponse, response))
        self.assertEqual((response.status, response.headers.getRawHeaders(b"x-answer")),
                         (201, [b"1"]))
        self.assertEqual(self.successResultOf(response.read(10)).data, b"ok")
        [sent] = client.requests
        self.assertEqual((sent.method, sent.url, sent.body),
                         ("POST", "http://mimir/api?a=1&b=x+y", b"data"))
        self.assertEqual(sent.header("X-Scope-OrgID"), "team-a")
        self.assertEqual(sent.header("Authorization"), "Bearer gw")
        self.assertEqual(sent.header("X-Static"), "s")
        self.assertEqual(sent.header("Content-Type"), "text/plain")

    def test_body_producer_collected(self) -> None:
        from io import BytesIO

        from twisted.internet.task import Cooperator

        clock = Clock()
        cooperator = Cooperator(scheduler=lambda f: clock.callLater(0, f))
        producer = FileBodyProducer(BytesIO(b"streamed"), cooperator=cooperator)
        client = MemoryHTTPClient(script(MemoryResponse(200)))
        d = client.request("POST", "http://u", body=producer)
        clock.advance(0)
        clock.advance(0)
        self.successResultOf(d)
        self.assertEqual(client.requests[0].body, b"streamed")

    def test_failures(self) -> None:
        client = MemoryHTTPClient(script(ConnectionRefusedError()))
        self.failureResultOf(client.request("GET", "http://u"), ConnectionRefusedError)

        class Broken:
            def authorization(self) -> Deferred[Optional[bytes]]:
                return fail(RuntimeError("secret"))

        client = MemoryHTTPClient(script(), credentials=Broken())
        self.failureResultOf(client.request("GET", "http://u"), CredentialsUnavailable)
        self.assertEqual(client.requests, [])

    def test_script_runs_out(self) -> None:
        client = MemoryHTTPClient(script())
        self.failureResultOf(client.request("GET", "http://u"), AssertionError)

    def test_cancel_pending(self) -> None:
        pending: Deferred[Any] = Deferred()
        client = MemoryHTTPClient(lambda request: pending)
        d = client.request("GET", "http://u")
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assertTrue(client.requests[0].cancelled)
        self.assertTrue(pending.called)

    def test_pending_answer(self) -> None:
        pending: Deferred[Any] = Deferred()
        client = MemoryHTTPClient(lambda request: pending)
        d = client.request("GET", "http://u")
        self.assertNoResult(d)
        pending.callback(MemoryResponse(204))
        self.assertEqual(self.successResultOf(d).status, 204)
        self.assertFalse(client.requests[0].cancelled)

    def test_read_capped_and_held(self) -> None:
        client = MemoryHTTPClient(script(MemoryResponse(200, b"abcdef"),
                                         MemoryResponse(200, b"ab", hold=True)))
        body = self.successResultOf(self.successResultOf(client.request("GET", "u")).read(4))
        self.assertEqual((body.data, body.truncated), (b"abcd", True))
        held = self.successResultOf(client.request("GET", "u")).read(4)
        self.assertNoResult(held)
        held.cancel()
        self.failureResultOf(held, CancelledError)

    def test_stream_honours_pauses(self) -> None:
        client = MemoryHTTPClient(script(MemoryResponse(200, b"abcdef", chunks=2)))
        response = self.successResultOf(client.request("GET", "u"))
        consumer = Consumer(pause_after=1)
        finished = response.stream(consumer)
        self.assertEqual(consumer.data, [b"ab"])
        self.assertNoResult(finished)
        assert consumer.producer is not None
        consumer.pause_after = None
        consumer.producer.resumeProducing()
        self.assertEqual(consumer.data, [b"ab", b"cd", b"ef"])
        self.assertEqual(self.successResultOf(finished), 6)
        self.assertIsNone(consumer.producer)

    def test_stream_stopped(self) -> None:
        client = MemoryHTTPClient(script(MemoryResponse(200, b"abcd", chunks=2, hold=True)))
        consumer = Consumer()
        finished = self.successResultOf(client.request("GET", "u")).stream(consumer)
        self.assertEqual(consumer.data, [b"ab", b"cd"])
        assert consumer.producer is not None
        consumer.producer.stopProducing()
        error = self.failureResultOf(finished, BodyReadFailed).value
        self.assertIsInstance(error.cause, StreamStopped)

    def test_close(self) -> None:
        client = MemoryHTTPClient(script())
        self.successResultOf(client.close())
        self.assertTrue(client.closed)


class MemoryIdentityProviderTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1000)
        self.idp = MemoryIdentityProvider(self.clock, keys=KEYS)
        self.client = self.idp.client()

    def get(self, path: str, token: Optional[str] = None) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        response = self.successResultOf(
            self.client.request("GET", self.idp.issuer + path, headers=headers)
        )
        body = self.successResultOf(response.read(1 << 20))
        if response.status != 200:
            return response.status, body.data
        return response.status, json.loads(body.data)

    def test_discovery_and_keys_verify_its_tokens(self) -> None:
        status, document = self.get("/.well-known/openid-configuration")
        self.assertEqual((status, document["issuer"]), (200, self.idp.issuer))
        self.assertEqual(document["jwks_uri"], self.idp.issuer + "/jwks")
        status, jwks = self.get("/jwks")
        keys = parse_jwks(jwks, 0.0)
        token = self.idp.issue()
        claims = verify_signature(token, keys.by_kid["rsa-1"], "RS256")
        self.assertEqual((claims["iat"], claims["exp"]), (1000, 1300))
        self.assertEqual(self.idp.requests, {"discovery": 1, "jwks": 1})

    def test_userinfo(self) -> None:
        self.idp.opaque["tok"] = {"sub": "me"}
        self.assertEqual(self.get("/userinfo", "tok"), (200, {"sub": "me"}))
        self.assertEqual(self.get("/userinfo", "other")[0], 401)

    def test_down_failing_overrides(self) -> None:
        self.idp.failing.add("jwks")
        self.assertEqual(self.get("/jwks")[0], 500)
        self.idp.overrides["discovery"] = (503, b"")
        self.assertEqual(self.get("/.well-known/openid-configuration")[0], 503)
        self.idp.down = True
        self.failureResultOf(
            self.client.request("GET", self.idp.issuer + "/jwks"), ConnectionRefusedError
        )

    def test_hold_per_request(self) -> None:
        """
        Held userinfo answers are released together, and one caller giving
        up does not cancel the others'.
        """
        self.idp.opaque["tok"] = {"sub": "me"}
        self.idp.userinfo_hold = Deferred()
        headers = {"Authorization": "Bearer tok"}
        first = self.client.request("GET", self.idp.issuer + "/userinfo", headers=headers)
        second = self.client.request("GET", self.idp.issuer + "/userinfo", headers=headers)
        first.cancel()
        self.failureResultOf(first, CancelledError)
        self.idp.userinfo_hold.callback(None)
        self.assertEqual(self.successResultOf(second).status, 200)

    def test_unknown_path(self) -> None:
        self.assertEqual(self.get("/nothing")[0], 404)
