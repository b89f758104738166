"""
Limits owned by the main process and leased to its workers over the
pipes they already share: a worker asks for each decision (its
L{LeaseClient} is the L{sealgw.limits.ILimitStore} of a
L{sealgw.limits.SharedLimiter}), the main process answers from its
L{sealgw.limits.LimitOwner} (L{LeaseServer}).  A worker's places in
flight are leases under its pid, freed at once when it ends.

Each message is one JSON line: a worker writes C{{"id", "op", ...}} on
L{sealgw.daemon._handoff.TO_MAIN}; the main process answers a C{decide}
or C{ping} with C{{"reply": id, "refusal": [reason, seconds] | null}}
(or C{"error"}) on L{sealgw.daemon._handoff.FROM_MAIN}, between the
daemon's states.
"""

from __future__ import annotations

import json
import os
from typing import Any, Optional

import attr
from twisted.internet.defer import Deferred, fail, succeed
from twisted.logger import Logger
from zope.interface import implementer

from sealgw.config import RateLimitConfig
from sealgw.limits import ILimitStore, LimitKey, Refusal
from sealgw.limits._owner import LimitOwner

#: A line longer than this could be written in parts, interleaved with
#: another's: such a request is decided by the worker alone.
MAX_LINE = 4096
#: Requests a worker waits on at once; past it, the main process is not
#: keeping up and the worker decides alone.
MAX_PENDING = 10_000
#: How long a worker waits for the main process's decision.
TIMEOUT = 0.05

_FIELDS = ("requests_per_second", "burst", "bytes_per_second", "burst_bytes", "max_concurrent")


class MainProcessGone(ConnectionError):
    """
    The main process did not take or answer a request.
    """


def _limits_to_wire(limits: RateLimitConfig) -> list[Any]:
    return [getattr(limits, name) for name in _FIELDS]


def _limits_from_wire(values: Any) -> RateLimitConfig:
    if not isinstance(values, list) or len(values) != len(_FIELDS):
        raise ValueError("limits must be a list of five")
    for value in values:
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise ValueError("a limit must be a number or null")
    return RateLimitConfig(**dict(zip(_FIELDS, values, strict=True)))


def _key_from_wire(values: Any) -> LimitKey:
    if (
        not isinstance(values, list)
        or len(values) != 3
        or not all(isinstance(v, str) for v in values)
    ):
        raise ValueError("key must be three strings")
    return (values[0], values[1], values[2])


@implementer(ILimitStore)
class LeaseClient:
    """
    A worker's side: requests written to the main process's pipe, answers
    matched by id as the control channel reads them (L{answer}).
    """

    log = Logger()

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._serial = 0
        self._pending: dict[int, Deferred[Any]] = {}
        self._closed = False

    def _send(self, message: dict[str, Any], answered: bool) -> Deferred[Any]:
        if self._closed:
            return fail(MainProcessGone("the worker is stopping"))
        if answered and len(self._pending) >= MAX_PENDING:
            return fail(MainProcessGone(f"{MAX_PENDING} requests wait on the main process"))
        self._serial += 1
        message["id"] = self._serial if answered else None
        line = json.dumps(message, separators=(",", ":")).encode("utf-8") + b"\n"
        if len(line) > MAX_LINE:
            return fail(MainProcessGone("the request is too long for the pipe"))
        try:
            # Never blocks: the pipe is non-blocking, and a full one (the
            # main process not reading) is a failure like any other.
            os.write(self._fd, line)
        except OSError as e:
            return fail(MainProcessGone(f"cannot write to the main process: {e.strerror}"))
        if not answered:
            return succeed(None)
        d: Deferred[Any] = Deferred()
        self._pending[self._serial] = d
        return d

    def answer(self, message: dict[str, Any]) -> None:
        """
        The main process's answer to one request.
        """
        d = self._pending.pop(message.get("reply", -1), None)
        if d is None:
            return  # answered after the worker stopped waiting for it
        if "error" in message:
            d.errback(MainProcessGone(f"the main process refused the request: {message['error']}"))
            return
        refusal = message.get("refusal")
        d.callback(None if refusal is None else (str(refusal[0]), float(refusal[1])))

    def decide(
        self, key: LimitKey, limits: RateLimitConfig, body_size: int, lease: str
    ) -> Deferred[Refusal]:
        return self._send(
            {
                "op": "decide",
                "key": list(key),
                "limits": _limits_to_wire(limits),
                "body": body_size,
                "lease": lease,
            },
            answered=True,
        )

    def release(self, key: LimitKey, lease: str) -> Deferred[None]:
        return self._send({"op": "release", "key": list(key), "lease": lease}, answered=False)

    def renew(self, key: LimitKey, leases: list[str]) -> Deferred[None]:
        return self._send({"op": "renew", "key": list(key), "leases": leases}, answered=False)

    def ping(self) -> Deferred[None]:
        d: Deferred[Any] = self._send({"op": "ping"}, answered=True)
        return d.addCallback(lambda _: None)

    def connect(self) -> None:
        os.set_blocking(self._fd, False)

    def close(self) -> Deferred[None]:
        self._closed = True
        pending, self._pending = self._pending, {}
        for d in pending.values():
            d.errback(MainProcessGone("the worker is stopping"))
        return succeed(None)


@attr.define
class LeaseServer:
    """
    The main process's side: every worker's requests, decided by one
    L{LimitOwner}.
    """

    owner: LimitOwner
    log = Logger()

    def handle(self, line: bytes) -> Optional[bytes]:
        """
        One request line from a worker; the answer line to send back, if
        the request wants one.
        """
        try:
            message = json.loads(line)
        except ValueError as e:
            self.log.error("limits: a worker's request could not be read: {error}", error=e)
            return None
        if not isinstance(message, dict):
            self.log.error("limits: a worker's request is not an object")
            return None
        ident = message.get("id")
        try:
            op = message.get("op")
            if op == "decide":
                body = message.get("body")
                if not isinstance(body, int) or body < 0:
                    raise ValueError("body must be a whole number")
                refusal = self.owner.decide(
                    _key_from_wire(message.get("key")),
                    _limits_from_wire(message.get("limits")),
                    body,
                    str(message.get("lease", "")),
                )
                return _reply({"reply": ident, "refusal": refusal})
            if op == "release":
                self.owner.release(_key_from_wire(message.get("key")), str(message.get("lease")))
                return None
            if op == "renew":
                leases = message.get("leases")
                if not isinstance(leases, list):
                    raise ValueError("leases must be a list")
                self.owner.renew(_key_from_wire(message.get("key")), [str(x) for x in leases])
                return None
            if op == "ping":
                return _reply({"reply": ident, "refusal": None})
            raise ValueError(f"unknown op {op!r}")
        except (ValueError, TypeError) as e:
            self.log.error("limits: a worker's request could not be read: {error}", error=e)
            return _reply({"reply": ident, "error": str(e)}) if ident is not None else None

    def worker_ended(self, pid: int) -> None:
        """
        Free the places a worker held: it will not release them.
        """
        self.owner.release_all(f"{pid}.")


def _reply(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode("utf-8") + b"\n"
