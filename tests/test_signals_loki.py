"""
Tests for L{sealgw.signals.loki}: Loki pushes in JSON and protobuf, and the
label-set syntax.
"""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from sealgw.signals import loki
from sealgw.signals.compression import snappy_compress, snappy_decompress
from sealgw.signals.errors import DecodeError, PayloadTooLarge, UnsupportedMediaType
from sealgw.signals.loki import Entry, LokiPush, Stream, format_label_set, parse_label_set
from sealgw.signals.proto.logproto_pb2 import PushRequest

FUZZ = settings(derandomize=True, deadline=None, max_examples=300)
JSON = "application/json"
PROTOBUF = "application/x-protobuf"

PUSH = {
    "streams": [
        {
            "stream": {"job": "api", "level": "info"},
            "values": [
                ["1700000000000000001", "started"],
                ["1700000000000000002", "request done", {"trace_id": "abc", "user": "u1"}],
            ],
        },
        {"stream": {"job": "db"}, "values": [["1", 'quote " and \\ backslash']]},
    ]
}

EXPECTED = LokiPush(
    streams=(
        Stream(
            labels={"job": "api", "level": "info"},
            entries=(
                Entry(1700000000000000001, "started"),
                Entry(1700000000000000002, "request done", (("trace_id", "abc"), ("user", "u1"))),
            ),
        ),
        Stream(labels={"job": "db"}, entries=(Entry(1, 'quote " and \\ backslash'),)),
    )
)


def protobuf_body(request: PushRequest) -> bytes:
    return snappy_compress(request.SerializeToString())


class JsonTests(SynchronousTestCase):
    def test_decode(self) -> None:
        push = loki.decode(json.dumps(PUSH).encode(), "application/json; charset=utf-8")
        self.assertEqual(push, EXPECTED)
        self.assertEqual(push.entry_count, 3)

    def test_records(self) -> None:
        push = loki.decode(json.dumps(PUSH).encode(), JSON)
        self.assertEqual(push.to_records(), PUSH["streams"])

    def test_empty(self) -> None:
        push = loki.decode(b'{"streams": []}', JSON)
        self.assertEqual((push.streams, push.entry_count), ((), 0))

    def assertBad(self, doc: object, message: str) -> None:
        body = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
        error = self.assertRaises(DecodeError, loki.decode, body, JSON)
        self.assertEqual(error.message, message)

    def stream(self, *values: object, labels: object = None) -> dict:
        return {"streams": [{"stream": labels or {"job": "x"}, "values": list(values)}]}

    def test_timestamps(self) -> None:
        message = (
            "loki push: streams[0].values[0]: timestamp must be a string of decimal nanoseconds"
        )
        for bad in (1700000000, "1.5", "-1", "", " 1", "1e9", "12345678901234567890"):
            self.assertBad(self.stream([bad, "line"]), message)
        self.assertBad(
            self.stream(["9223372036854775808", "x"]),
            "loki push: streams[0].values[0]: timestamp is out of range",
        )
        push = loki.decode(json.dumps(self.stream(["9223372036854775807", "x"])).encode(), JSON)
        self.assertEqual(push.streams[0].entries[0].timestamp_ns, 2**63 - 1)

    def test_entries(self) -> None:
        shape = "must be [timestamp, line] or [timestamp, line, metadata]"
        self.assertBad(self.stream(["1"]), f"loki push: streams[0].values[0]: {shape}")
        self.assertBad(self.stream(["1", "a", {}, 4]), f"loki push: streams[0].values[0]: {shape}")
        self.assertBad(
            self.stream(["1", "a"], ["2", 3]),
            "loki push: streams[0].values[1]: line must be a string of valid UTF-8",
        )
        self.assertBad(
            b'{"streams": [{"stream": {"a": "b"}, "values": [["1", "\\ud800"]]}]}',
            "loki push: streams[0].values[0]: line must be a string of valid UTF-8",
        )
        self.assertBad(
            self.stream(["1", "a", {"k": 1}]),
            "loki push: streams[0].values[0]: structured metadata: must be an object of strings",
        )

    def test_labels(self) -> None:
        self.assertBad(
            self.stream(labels={"": "x"}), "loki push: streams[0].stream: invalid label name ''"
        )
        self.assertBad(
            {"streams": [{"stream": {}, "values": []}]},
            "loki push: streams[0].stream: a stream needs at least one label",
        )
        self.assertBad(
            self.stream(labels={"service.name": "x"}),
            "loki push: streams[0].stream: invalid label name 'service.name'",
        )
        self.assertBad(
            self.stream(labels={"a": 1}),
            "loki push: streams[0].stream: must be an object of strings",
        )

    def test_shapes(self) -> None:
        self.assertBad({"stream": []}, 'loki push: body must be an object with a "streams" array')
        self.assertBad(b"[", "loki push: body is not valid JSON")
        self.assertBad({"streams": [1]}, "loki push: streams[0]: not an object")
        self.assertBad(
            {"streams": [{"stream": {"a": "b"}, "values": {}}]},
            "loki push: streams[0].values: not an array",
        )


class ProtobufTests(SynchronousTestCase):
    def request(self) -> PushRequest:
        request = PushRequest()
        stream = request.streams.add(labels='{job="api", level="info"}')
        entry = stream.entries.add(line=b"started")
        entry.timestamp.seconds, entry.timestamp.nanos = 1700000000, 1
        entry = stream.entries.add(line=b"request done")
        entry.timestamp.seconds, entry.timestamp.nanos = 1700000000, 2
        entry.structured_metadata.add(name="trace_id", value="abc")
        entry.structured_metadata.add(name="user", value="u1")
        stream = request.streams.add(labels='{job="db"}')
        stream.entries.add(line=b'quote " and \\ backslash').timestamp.nanos = 1
        return request

    def test_decode(self) -> None:
        self.assertEqual(loki.decode(protobuf_body(self.request()), PROTOBUF), EXPECTED)

    def test_no_content_type_is_protobuf(self) -> None:
        self.assertEqual(loki.decode(protobuf_body(self.request()), None), EXPECTED)

    def test_to_protobuf(self) -> None:
        """
        Canonical protobuf from either encoding decodes to the same push.
        """
        from_json = loki.decode(json.dumps(PUSH).encode(), JSON)
        body = from_json.to_protobuf()
        self.assertEqual(loki.decode(body, PROTOBUF), EXPECTED)
        raw = PushRequest.FromString(snappy_decompress(body, 1 << 20))
        self.assertEqual(
            [s.labels for s in raw.streams], ['{job="api", level="info"}', '{job="db"}']
        )

    def test_bad_utf8_line_replaced(self) -> None:
        request = PushRequest()
        request.streams.add(labels='{a="b"}').entries.add(line=b"ok \xff end")
        push = loki.decode(protobuf_body(request), PROTOBUF)
        self.assertEqual(push.streams[0].entries[0].line, "ok \ufffd end")

    def test_bad_labels(self) -> None:
        request = PushRequest()
        request.streams.add(labels='{a="b"}')
        request.streams.add(labels='{a="b"')
        error = self.assertRaises(DecodeError, loki.decode, protobuf_body(request), PROTOBUF)
        self.assertEqual(
            error.message, "loki push: streams[1]: labels: expected ',' or '}' at the end"
        )

    def test_empty_labels(self) -> None:
        request = PushRequest()
        request.streams.add(labels="{}")
        error = self.assertRaises(DecodeError, loki.decode, protobuf_body(request), PROTOBUF)
        self.assertEqual(
            error.message, "loki push: streams[0]: labels: a stream needs at least one label"
        )

    def test_bad_timestamp(self) -> None:
        request = PushRequest()
        request.streams.add(labels='{a="b"}').entries.add().timestamp.seconds = -1
        error = self.assertRaises(DecodeError, loki.decode, protobuf_body(request), PROTOBUF)
        self.assertEqual(
            error.message, "loki push: streams[0].entries[0]: timestamp is out of range"
        )

    def test_malformed(self) -> None:
        error = self.assertRaises(
            DecodeError, loki.decode, snappy_compress(b"\x0a\x05ab"), PROTOBUF
        )
        self.assertEqual(error.message, "loki push: body is not a valid PushRequest protobuf")

    def test_not_snappy(self) -> None:
        raw = self.request().SerializeToString()
        self.assertRaises(DecodeError, loki.decode, raw, PROTOBUF)

    def test_limit(self) -> None:
        self.assertRaises(
            PayloadTooLarge, loki.decode, protobuf_body(self.request()), PROTOBUF, limit=10
        )

    def test_content_type(self) -> None:
        error = self.assertRaises(UnsupportedMediaType, loki.decode, b"", "text/plain")
        self.assertEqual(error.status, 415)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(["streams", "stream", "values", "job", "a"]), inner, max_size=4
        )
    ),
    max_leaves=20,
)


class FuzzTests(SynchronousTestCase):
    @FUZZ
    @given(JSON_VALUES)
    def test_json_shapes(self, doc: object) -> None:
        """
        Any JSON document decodes or raises DecodeError, nothing else.
        """
        try:
            loki.decode(json.dumps(doc).encode(), JSON)
        except DecodeError:
            pass

    @FUZZ
    @given(st.binary(max_size=200))
    def test_protobuf_bytes(self, raw: bytes) -> None:
        try:
            push = loki.decode(snappy_compress(raw), PROTOBUF)
        except DecodeError:
            return
        self.assertEqual(loki.decode(push.to_protobuf(), PROTOBUF), push)


class LabelSetTests(SynchronousTestCase):
    def test_simple(self) -> None:
        self.assertEqual(parse_label_set('{job="x", level="info"}'), {"job": "x", "level": "info"})

    def test_spacing_and_trailing_comma(self) -> None:
        self.assertEqual(parse_label_set(' { a = "1" ,b="2", } '), {"a": "1", "b": "2"})

    def test_empty(self) -> None:
        self.assertEqual(parse_label_set("{}"), {})

    def test_escapes(self) -> None:
        self.assertEqual(
            parse_label_set(r'{a="q\"b\\n\nt\tx\x41o\101u\u00e9U\U0001F600"}'),
            {"a": 'q"b\\n\nt\txAoAu\u00e9U\U0001f600'},
        )

    def test_byte_escapes_make_utf8(self) -> None:
        self.assertEqual(parse_label_set(r'{a="\xc3\xa9"}'), {"a": "\u00e9"})
        self.assertRaises(DecodeError, parse_label_set, r'{a="\xff"}')

    def test_raw_string(self) -> None:
        self.assertEqual(parse_label_set('{a=`c:\\dir "x"`}'), {"a": 'c:\\dir "x"'})

    def test_errors(self) -> None:
        cases = {
            "": "expected '{' at the end",
            "{": "expected a label name at the end",
            "{a=": "expected a quoted value at the end",
            'job="x"': "expected '{' at character 0",
            '{job="x"': "expected ',' or '}' at the end",
            '{job=~"x"}': "expected a quoted value at character 5",
            '{job!="x"}': "expected '=' at character 4",
            '{"x"}': "expected a label name at character 1",
            '{0a="x"}': "expected a label name at character 1",
            '{a="x" b="y"}': "expected ',' or '}' at character 7",
            '{a="x"} z': "unexpected text after '}' at character 8",
            '{a="x\ny"}': "unterminated string at character 3",
            '{a="x': "unterminated string at character 3",
            "{a=`x}": "unterminated string at character 3",
            r'{a="\q"}': "unknown escape at character 4",
            r'{a="\'"}': "unknown escape at character 4",
            r'{a="\x4"}': "bad \\x escape at character 4",
            r'{a="\400"}': "bad octal escape at character 4",
            r'{a="\ud800"}': "escape at character 4 is not a valid code point",
            r'{a="\U00110000"}': "escape at character 4 is not a valid code point",
            '{a="1", a="2"}': "label 'a' appears twice",
        }
        got = {}
        for text in cases:
            try:
                parse_label_set(text)
            except DecodeError as e:
                got[text] = e.message
        self.assertEqual(got, cases)

    def test_format(self) -> None:
        self.assertEqual(
            format_label_set({"level": "info", "job": 'a"b\\c\nd\x01'}),
            '{job="a\\"b\\\\c\\nd\\x01", level="info"}',
        )
        self.assertEqual(format_label_set({}), "{}")

    @FUZZ
    @given(st.text(max_size=60))
    def test_arbitrary_text(self, text: str) -> None:
        """
        Nothing but DecodeError, whatever the text.
        """
        try:
            parse_label_set(text)
        except DecodeError:
            pass

    @FUZZ
    @given(st.text(alphabet='{}=,"`\\ abx01uU\n', max_size=40))
    def test_arbitrary_syntax(self, text: str) -> None:
        """
        The same, over text made mostly of the syntax's own characters.
        """
        try:
            labels = parse_label_set(text)
        except DecodeError:
            return
        self.assertEqual(parse_label_set(format_label_set(labels)), labels)

    @FUZZ
    @given(
        st.dictionaries(
            st.from_regex(r"[a-zA-Z_][a-zA-Z0-9_]{0,10}", fullmatch=True),
            st.text(st.characters(exclude_categories=["Cs"]), max_size=20),
            max_size=6,
        )
    )
    def test_round_trip(self, labels: dict[str, str]) -> None:
        self.assertEqual(parse_label_set(format_label_set(labels)), labels)
