"""
Tests for L{sealgw.daemon._logging}: the text and JSON log formats.
"""

import io
import json

from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from sealgw.daemon import make_observer


def _emit(observer, level=LogLevel.info, fmt="{method} {path} {status}", **fields):
    log = Logger(namespace="sealgw.access", observer=observer)
    log.emit(level, fmt, **fields)


class JSONLinesTests(SynchronousTestCase):
    def test_one_object_per_event(self) -> None:
        """
        Each event is one line holding C{time}, C{level}, C{logger},
        C{message} and the fields logged with it, and none of Twisted's
        internal C{log_*} keys.
        """
        out = io.StringIO()
        observer = make_observer(out, "json")
        _emit(observer, method="POST", path="/api/v1/push", status=204, access=True)
        _emit(observer, method="GET", path="/health", status=200)
        lines = out.getvalue().splitlines()
        self.assertEqual(len(lines), 2)
        first = json.loads(lines[0])
        self.assertEqual(first["level"], "info")
        self.assertEqual(first["logger"], "sealgw.access")
        self.assertEqual(first["message"], "POST /api/v1/push 204")
        self.assertEqual((first["method"], first["status"], first["access"]), ("POST", 204, True))
        self.assertRegex(first["time"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
        self.assertEqual([k for k in first if k.startswith("log_")], [])

    def test_failure(self) -> None:
        """
        A logged failure becomes an C{error} field with its traceback.
        """
        out = io.StringIO()
        observer = make_observer(out, "json")
        log = Logger(namespace="sealgw.relay", observer=observer)
        try:
            raise ZeroDivisionError("no")
        except ZeroDivisionError:
            log.failure("relay to {upstream} failed", Failure(), upstream="mimir")
        line = json.loads(out.getvalue())
        self.assertEqual(line["level"], "critical")
        self.assertEqual(line["message"], "relay to mimir failed")
        self.assertEqual(line["upstream"], "mimir")
        self.assertIn("ZeroDivisionError", line["error"])

    def test_not_json_values(self) -> None:
        """
        A field JSON cannot carry is written as its C{repr} rather than
        losing the line.
        """
        out = io.StringIO()
        _emit(make_observer(out, "json"), fmt="peer {peer}", peer=object())
        self.assertIn("<object object", json.loads(out.getvalue())["peer"])

    def test_level_filter(self) -> None:
        out = io.StringIO()
        observer = make_observer(out, "json", level="warn")
        _emit(observer, LogLevel.info, method="GET", path="/", status=200)
        _emit(observer, LogLevel.warn, fmt="careful")
        [line] = out.getvalue().splitlines()
        self.assertEqual(json.loads(line)["level"], "warn")

    def test_text(self) -> None:
        out = io.StringIO()
        _emit(make_observer(out, "text"), method="GET", path="/health", status=200)
        self.assertIn("[sealgw.access#info] GET /health 200", out.getvalue())
