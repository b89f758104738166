"""
Tests for L{sealgw.signals._media}: how push routes read C{Content-Type}.
"""

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from sealgw.signals._media import parse_media_type


class ParseMediaTypeTests(SynchronousTestCase):
    def test_missing(self) -> None:
        self.assertEqual(parse_media_type(None), ("", {}))
        self.assertEqual(parse_media_type(""), ("", {}))

    def test_essence_lower_case(self) -> None:
        self.assertEqual(
            parse_media_type("Application/X-Protobuf"), ("application/x-protobuf", {})
        )

    def test_parameters(self) -> None:
        self.assertEqual(
            parse_media_type(
                "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; "
                "encoding=delimited"
            ),
            (
                "application/vnd.google.protobuf",
                {"proto": "io.prometheus.client.MetricFamily", "encoding": "delimited"},
            ),
        )

    def test_semicolon_inside_quotes(self) -> None:
        """
        A C{;} inside a quoted value is part of the value, and does not
        start a parameter of its own.
        """
        self.assertEqual(
            parse_media_type('application/x-protobuf; note="a;proto=x"; proto=prometheus.WriteRequest'),
            ("application/x-protobuf", {"note": "a;proto=x", "proto": "prometheus.WriteRequest"}),
        )

    def test_escapes_in_quotes(self) -> None:
        self.assertEqual(parse_media_type(r'a/b; q="x\"y\\z"'), ("a/b", {"q": 'x"y\\z'}))

    def test_names_lower_case(self) -> None:
        self.assertEqual(parse_media_type("a/b; Charset=UTF-8"), ("a/b", {"charset": "UTF-8"}))

    def test_junk_skipped(self) -> None:
        self.assertEqual(parse_media_type("a/b;; nonsense ;x=1;"), ("a/b", {"x": "1"}))

    @given(
        st.dictionaries(
            st.from_regex(r"[a-z][a-z0-9-]{0,8}", fullmatch=True),
            st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=20),
            max_size=4,
        )
    )
    def test_quoted_round_trip(self, params: dict[str, str]) -> None:
        """
        Any printable value, quoted and escaped as a sender would, reads
        back as it was.
        """
        header = "application/json" + "".join(
            '; {}="{}"'.format(name, value.replace("\\", "\\\\").replace('"', '\\"'))
            for name, value in params.items()
        )
        self.assertEqual(parse_media_type(header), ("application/json", params))
