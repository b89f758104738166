"""
The clients bench/isolation.py measures with: one kept-alive connection
asking one question at a time, as a dashboard panel or a health check
does, and the latencies and statuses it met.
"""

from __future__ import annotations

import http.client
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Optional
from urllib.parse import urlsplit

import attr

from bench.load import LoadError
from bench.query import percentile

FORM_HEADERS = {"Content-Type": "application/x-www-form-urlencoded"}


@attr.frozen
class Latencies:
    """
    What one client measured: each answer's latency in milliseconds
    (request sent to answer read whole) and the answers by status (0: the
    connection failed).
    """

    ms: tuple[float, ...]
    statuses: Mapping[int, int]

    @property
    def failed(self) -> int:
        return sum(n for status, n in self.statuses.items() if status // 100 != 2)

    def summary(self) -> dict[str, Any]:
        if not self.ms:
            return {"requests": 0, "statuses": _keyed(self.statuses)}
        return {
            "requests": len(self.ms),
            "p50_ms": round(percentile(list(self.ms), 50), 3),
            "p90_ms": round(percentile(list(self.ms), 90), 3),
            "p99_ms": round(percentile(list(self.ms), 99), 3),
            "max_ms": round(max(self.ms), 3),
            "statuses": _keyed(self.statuses),
        }


def _keyed(statuses: Mapping[int, int]) -> dict[str, int]:
    # JSON's keys are strings; sorted, so that 200 comes first.
    return {str(status): n for status, n in sorted(statuses.items())}


class Client:
    """
    One kept-alive connection, one request at a time, as a dashboard's
    panel asks; a failed connection is counted as status 0 and opened
    again for the next request.
    """

    def __init__(self, base: str, token: Optional[str], timeout: float = 60.0) -> None:
        parts = urlsplit(base)
        self.connection = http.client.HTTPConnection(
            parts.hostname or "127.0.0.1", parts.port, timeout=timeout
        )
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}

    def ask(self, method: str, path: str, body: Optional[bytes] = None) -> tuple[int, bytes]:
        headers = dict(self.headers)
        if body is not None:
            headers.update(FORM_HEADERS)
        try:
            self.connection.request(method, path, body=body, headers=headers)
            response = self.connection.getresponse()
            return response.status, response.read()
        except (OSError, http.client.HTTPException):
            self.connection.close()
            return 0, b""

    def close(self) -> None:
        self.connection.close()


def measure(
    ask: Callable[[], int], seconds: float, interval: float = 0.0,
    stop: Optional[threading.Event] = None,
) -> Latencies:
    """
    Ask again and again for C{seconds} (or until C{stop} is set), at most
    once every C{interval} (a late answer is not made up for by a burst);
    answer the latencies and statuses.
    """
    ms: list[float] = []
    statuses: dict[int, int] = {}
    began = time.monotonic()
    deadline = began + seconds
    due = began
    while time.monotonic() < deadline and not (stop is not None and stop.is_set()):
        wait = due - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        sent = time.perf_counter()
        status = ask()
        ms.append((time.perf_counter() - sent) * 1000)
        statuses[status] = statuses.get(status, 0) + 1
        due = max(due + interval, time.monotonic()) if interval else 0.0
    return Latencies(tuple(ms), statuses)


def in_background(work: Callable[[], Latencies]) -> Callable[[], Latencies]:
    """
    Run C{work} on a thread; answer a function that waits for it (as long
    as one request may take, and 30 s more) and answers what it measured.
    """
    found: list[Latencies] = []
    failed: list[BaseException] = []

    def run() -> None:
        try:
            found.append(work())
        except BaseException as e:  # reported by the waiter, on the main thread
            failed.append(e)

    thread = threading.Thread(target=run, name="bench-background", daemon=True)
    thread.start()

    def wait() -> Latencies:
        thread.join(90)
        if failed:
            raise failed[0]
        if not found:
            raise LoadError("a background client did not finish within 90 s")
        return found[0]

    return wait
