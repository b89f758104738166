"""
Tests for L{sealgw.http._verdict}: the one failure-to-status mapping, and
that the push relay and the read path both answer by it.
"""

from __future__ import annotations

from OpenSSL import SSL
from twisted.internet import error as ierror
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.client import (
    RequestGenerationFailed,
    RequestTransmissionFailed,
    ResponseFailed,
    ResponseNeverReceived,
)
from twisted.web.http_headers import Headers

from sealgw.http import (
    DEFAULT_RETRY_AFTER,
    UNSENT,
    Body,
    CredentialsUnavailable,
    OperationTimedOut,
    SlotRefused,
    failure_verdict,
    status_verdict,
)
from sealgw.query import ReadRefused, answer_status, failure_refusal
from sealgw.relay import UpstreamRejected, UpstreamUnavailable
from sealgw.relay._outcome import failure_outcome, response_outcome

NO_HEADERS = Headers()

#: upstream status: (client status, the upstream's answer passes, retried)
STATUS_TABLE = {
    200: (200, True, None),
    204: (204, True, None),
    400: (400, True, None),
    401: (502, False, None),
    403: (502, False, None),
    404: (404, True, None),
    407: (502, False, None),
    408: (504, False, "timeout"),
    413: (413, True, None),
    422: (422, True, None),
    429: (429, True, "429"),
    499: (499, True, None),
    500: (502, True, "5xx"),
    501: (502, True, "5xx"),
    502: (502, True, "5xx"),
    503: (503, True, "5xx"),
    504: (504, True, "5xx"),
    599: (502, True, "5xx"),
    100: (502, False, None),
    301: (502, False, None),
    304: (502, False, None),
    600: (502, False, None),
    0: (502, False, None),
}


def _tls_error() -> Exception:
    return ResponseNeverReceived([Failure(SSL.Error([("SSL", "", "certificate verify failed")]))])


#: failure: (client status, label, retried)
FAILURE_TABLE: list[tuple[Exception, int, str, object]] = [
    (OperationTimedOut("waiting for the response", 30), 504, "timeout", "timeout"),
    (ierror.TimeoutError(), 504, "timeout", "timeout"),
    (ierror.TCPTimedOutError(), 504, "timeout", "timeout"),
    (ierror.ConnectionRefusedError("111: Connection refused"), 503, "connection_error",
     "connection_error"),
    (ierror.DNSLookupError("mimir.internal"), 503, "connection_error", "connection_error"),
    (ierror.ConnectingCancelledError(None), 503, "connection_error", "connection_error"),
    (ResponseNeverReceived([Failure(ierror.ConnectionLost())]), 503, "connection_error",
     "connection_error"),
    (RequestTransmissionFailed([Failure(ierror.ConnectionLost())]), 503, "connection_error",
     "connection_error"),
    (ResponseFailed([Failure(ierror.ConnectionLost())]), 502, "connection_error",
     "connection_error"),
    (_tls_error(), 502, "tls_error", None),
    (RequestGenerationFailed([Failure(ValueError("bad producer"))]), 502, "error", None),
    (CredentialsUnavailable("no token", retry_after=12.0), 503, UNSENT, None),
    (SlotRefused(429, "tenant_queue_full", "tenant 'a' has its share", 3.0), 429, UNSENT, None),
    (SlotRefused(503, "upstream_queue_full", "upstream 'm' is full", 3.0), 503, UNSENT, None),
]


class StatusTableTests(SynchronousTestCase):
    def test_table(self) -> None:
        for status, (client, passes, retry) in STATUS_TABLE.items():
            verdict = status_verdict(status, NO_HEADERS, 0.0)
            self.assertEqual((verdict.status, verdict.passes, verdict.retry),
                             (client, passes, retry), status)
            # Never 2xx for a failure; a 4xx only as the upstream's own.
            if not 200 <= status < 300:
                self.assertFalse(verdict.delivered, status)
            if 400 <= verdict.status < 500:
                self.assertEqual(verdict.status, status)

    def test_retry_after(self) -> None:
        """
        Every 429 and 503 has a C{Retry-After}: the upstream's, or the
        default.
        """
        given = Headers({b"Retry-After": [b"7"]})
        for status in (429, 503):
            self.assertEqual(status_verdict(status, given, 0.0).client_retry_after(), 7.0)
            verdict = status_verdict(status, NO_HEADERS, 0.0)
            self.assertIsNone(verdict.retry_after)
            self.assertEqual(verdict.client_retry_after(), DEFAULT_RETRY_AFTER)
        self.assertIsNone(status_verdict(502, given, 0.0).client_retry_after())

    def test_labels(self) -> None:
        self.assertEqual(status_verdict(204, NO_HEADERS, 0.0).label, "204")
        self.assertEqual(status_verdict(600, NO_HEADERS, 0.0).label, "invalid")

    def test_names_the_upstream(self) -> None:
        verdict = status_verdict(401, NO_HEADERS, 0.0, who="the loki upstream")
        self.assertEqual(
            verdict.message, "the loki upstream refused the gateway's credentials (401)"
        )


class FailureTableTests(SynchronousTestCase):
    def test_table(self) -> None:
        for exc, status, label, retry in FAILURE_TABLE:
            verdict = failure_verdict(exc, who="the tempo upstream")
            self.assertEqual((verdict.status, verdict.label, verdict.retry),
                             (status, label, retry), exc)
            self.assertFalse(verdict.delivered)
            # Never the upstream's address or error text for the client.
            self.assertNotIn("mimir.internal", verdict.message)
            self.assertNotIn("111", verdict.message)
            if status in (429, 503):
                self.assertIsNotNone(verdict.client_retry_after(), exc)

    def test_retry_after_of_the_gateway(self) -> None:
        self.assertEqual(
            failure_verdict(CredentialsUnavailable("x", retry_after=12.0)).client_retry_after(),
            12.0,
        )
        refused = ierror.ConnectionRefusedError()
        self.assertEqual(failure_verdict(refused).client_retry_after(), DEFAULT_RETRY_AFTER)

    def test_slot_refusal_message(self) -> None:
        exc = SlotRefused(429, "tenant_queue_full", "tenant 'a' has its share", 3.0)
        self.assertEqual(failure_verdict(exc).message, "tenant 'a' has its share")

    def test_unforeseen_logged(self) -> None:
        verdict = failure_verdict(ValueError("surprise"))
        self.assertEqual((verdict.status, verdict.label), (502, "error"))
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)


class BothPathsTests(SynchronousTestCase):
    """
    The relay and the read path answer every upstream status and every
    failure with the status of the one table.
    """

    def push_status(self, status: int) -> int:
        outcome = response_outcome(status, NO_HEADERS, Body(b"", truncated=False), 0.0)
        if outcome.delivery is not None:
            return outcome.delivery.status
        assert outcome.error is not None
        if 400 <= status < 500 and outcome.error.status == status and status != 429:
            self.assertIsInstance(outcome.error, UpstreamRejected)
        return outcome.error.status

    def read_status(self, status: int) -> int:
        try:
            return answer_status(status, "loki")
        except ReadRefused as e:
            return e.status

    def test_statuses(self) -> None:
        for status, (client, _, _) in STATUS_TABLE.items():
            self.assertEqual(
                (self.push_status(status), self.read_status(status)), (client, client), status
            )

    def test_failures(self) -> None:
        for exc, status, label, retry in FAILURE_TABLE:
            outcome = failure_outcome(exc)
            assert outcome.error is not None
            self.assertIsInstance(outcome.error, UpstreamUnavailable)
            self.assertEqual(
                (outcome.error.status, outcome.label, outcome.retry_reason),
                (status, label, retry),
                exc,
            )
            refused = failure_refusal(exc, "loki")
            self.assertEqual(refused.status, status, exc)
            if status in (429, 503):
                self.assertIn("Retry-After", refused.headers, exc)

    def test_read_refusal_gains_retry_after(self) -> None:
        refused = failure_refusal(ierror.ConnectionRefusedError(), "loki")
        self.assertEqual(refused.headers, {"Retry-After": "5"})
