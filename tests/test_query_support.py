"""
What the read-path tests share (no tests of its own): a gate over a token
file loaded the way the gateway loads its configuration, and the read
routes served in memory to C{StubTreq} with an in-memory upstream per API,
and an upstream for real sockets that compresses as Prometheus does.
"""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Mapping
from typing import Any, Optional

import yaml
from prometheus_client import CollectorRegistry
from treq.testing import StubTreq
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from sealgw.auth import Gate, build_gate
from sealgw.config import load
from sealgw.credentials import ICredentials
from sealgw.http import IHTTPClient
from sealgw.query import QuerySettings, ReadUpstream
from sealgw.testing import Handler, MemoryHTTPClient, MemoryResponse, SentRequest
from sealgw.web.query import QueryRoutes

SOLO = "solo-token-0123456789"
PAIR = "pair-token-0123456789"
TRIO = "trio-token-0123456789"

#: Identities: one with a single tenant, one with two, one with three.
TOKENS = [
    {"name": "solo", "token": SOLO, "tenants": ["team-a"]},
    {"name": "pair", "token": PAIR, "tenants": ["team-a", "team-b"]},
    {"name": "trio", "token": TRIO, "tenants": ["team-a", "team-b", "team-c"]},
]

#: Where the in-memory upstreams say they are.
MIMIR = "http://mimir.internal:8080"
LOKI = "http://loki.internal:3100"
TEMPO = "http://tempo.internal:3200"

JSON_OK = b'{"status":"success","data":[]}'


def write_config(
    directory: str, config: Optional[dict[str, Any]] = None, tokens: Any = TOKENS
) -> str:
    """
    Write a gateway configuration (with a listener, which the loader
    requires, and the token file) and the token file into C{directory}.
    """
    tokens_path = os.path.join(directory, "tokens.yaml")
    with open(tokens_path, "w", encoding="utf-8") as f:
        yaml.safe_dump(list(tokens), f)
    document: dict[str, Any] = {
        "listeners": [{"endpoint": "tcp:0:interface=127.0.0.1"}],
        "auth": {"token_file": {"path": tokens_path}},
    }
    document.update(config or {})
    path = os.path.join(directory, "sealgw.yaml")
    with open(path, "w", encoding="utf-8") as f:
        yaml.safe_dump(document, f)
    return path


def make_gate(
    test: SynchronousTestCase,
    federation: bool = True,
    clock: Any = None,
    tokens: Any = TOKENS,
    auth: Optional[dict[str, Any]] = None,
) -> Gate:
    """
    A gate over C{tokens}, with C{tenancy.federation} as given and
    C{auth} keys besides the token file (C{default_limits}).
    """
    directory = os.path.abspath(test.mktemp())
    os.makedirs(directory)
    path = write_config(directory, {"tenancy": {"federation": federation}}, tokens)
    if auth:
        with open(path, encoding="utf-8") as f:
            document = yaml.safe_load(f)
        document["auth"].update(auth)
        with open(path, "w", encoding="utf-8") as f:
            yaml.safe_dump(document, f)
    config = load(path)
    return build_gate(config, clock if clock is not None else Clock(), CollectorRegistry())


def ok_json(request: SentRequest) -> MemoryResponse:
    return MemoryResponse(200, JSON_OK, {"Content-Type": "application/json"})


class Reads:
    """
    The read routes over in-memory upstreams, served to C{StubTreq}.

    @ivar upstreams: the client of each API, by API name.
    """

    def __init__(
        self,
        test: SynchronousTestCase,
        handlers: Optional[Mapping[str, Handler]] = None,
        *,
        federation: bool = True,
        apis: tuple[str, ...] = ("prometheus", "loki", "tempo"),
        max_response_bytes: int = 1024 * 1024,
        max_form_bytes: int = 64 * 1024,
        prometheus_path: str = "/prometheus",
        credentials: Optional[ICredentials] = None,
        clients: Optional[Mapping[str, IHTTPClient]] = None,
        tenant_label: Optional[str] = None,
        tokens: Any = TOKENS,
        auth: Optional[dict[str, Any]] = None,
        clock: Any = None,
    ) -> None:
        self.test = test
        handlers = dict(handlers or {})
        self.upstreams: dict[str, Any] = {
            api: MemoryHTTPClient(handlers.get(api, ok_json), name=api, credentials=credentials)
            for api in apis
        }
        self.upstreams.update(clients or {})
        urls = {"prometheus": MIMIR, "loki": LOKI, "tempo": TEMPO}
        paths = {"prometheus": prometheus_path, "loki": "", "tempo": ""}
        upstreams = {
            api: ReadUpstream(
                client=client,
                url=urls[api],
                path=paths[api],
                max_response_bytes=max_response_bytes,
                tenant_label=tenant_label if api == "prometheus" else None,
            )
            for api, client in self.upstreams.items()
        }
        self.settings = QuerySettings(max_form_bytes=max_form_bytes, **upstreams)
        self.gate = make_gate(test, federation=federation, clock=clock, tokens=tokens, auth=auth)
        self.routes = QueryRoutes(self.settings, self.gate)
        self.stub = StubTreq(self.routes.app.resource())

    def sent(self, api: str = "prometheus") -> list[SentRequest]:
        return self.upstreams[api].requests

    def request(
        self,
        method: str,
        path: str,
        token: Optional[str] = SOLO,
        headers: Optional[dict[str, Any]] = None,
        data: Any = None,
    ) -> tuple[Any, bytes]:
        """
        Send a request and return the response and its whole body.
        """
        all_headers: dict[Any, Any] = {}
        if token is not None:
            all_headers["Authorization"] = [f"Bearer {token}"]
        all_headers.update(headers or {})
        d = self.stub.request(
            method, "http://gateway.example" + path, headers=all_headers, data=data
        )
        self.stub.flush()
        response = self.test.successResultOf(d)
        body = self.test.successResultOf(response.content())
        return response, body

    def get(self, path: str, **kw: Any) -> tuple[Any, bytes]:
        return self.request("GET", path, **kw)

    def post(self, path: str, **kw: Any) -> tuple[Any, bytes]:
        return self.request("POST", path, **kw)


def header(response: Any, name: str) -> Optional[str]:
    values = response.headers.getRawHeaders(name)
    return values[-1] if values else None


def document(body: bytes) -> Any:
    return json.loads(body)


def names_gzip(accept_encoding: Optional[list[bytes]]) -> bool:
    """
    Whether C{Accept-Encoding} lines accept gzip (a C{q=0} is not taken
    for a refusal: no test sends one).
    """
    return any(
        coding.split(b";")[0].strip().lower() == b"gzip"
        for line in accept_encoding or ()
        for coding in line.split(b",")
    )


class GzipWhenAsked(Resource):
    """
    An upstream that negotiates as Prometheus does: C{body} gzipped, with
    C{Content-Encoding: gzip} and C{Vary: Accept-Encoding}, when the
    request's C{Accept-Encoding} names gzip; plain, with no
    C{Content-Encoding}, otherwise.  Answers have a C{Content-Length},
    or with C{chunked} are written in 64 KiB pieces with none.

    @ivar accept_encodings: each request's C{Accept-Encoding} lines, as
        received (L{None} when it had none).
    """

    isLeaf = True

    def __init__(self, body: bytes, chunked: bool = False) -> None:
        super().__init__()
        self.body = body
        self.gzipped = gzip.compress(body, mtime=0)
        self.chunked = chunked
        self.accept_encodings: list[Optional[list[bytes]]] = []

    def render(self, request: Request) -> Any:
        asked = request.requestHeaders.getRawHeaders(b"accept-encoding")
        self.accept_encodings.append(asked)
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"vary", b"Accept-Encoding")
        answer = self.body
        if names_gzip(asked):
            request.setHeader(b"content-encoding", b"gzip")
            answer = self.gzipped
        if not self.chunked:
            return answer
        for start in range(0, len(answer), 65536):
            request.write(answer[start:start + 65536])
        request.finish()
        return NOT_DONE_YET
