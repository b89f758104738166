"""
Upstream URLs: a configured base plus a route's path, and the form treq
sends them in, computed once.

treq turns the URL of every request into its URI form (percent-encoding,
IDNA for the host) and then into text, from scratch each time: about
30 µs, a twentieth of a relayed push's CPU, for a URL that is the same
for every push to an upstream.  A L{SentURL} is a URL already in that
form which says so, so the work is done once per URL.
"""

from __future__ import annotations

import functools
from typing import Optional
from urllib.parse import urlsplit, urlunsplit

from hyperlink import URL, EncodedURL


def join_url(base: str, path: str) -> str:
    """
    C{base} with C{path} appended to its path, keeping C{base}'s query
    (Azure Monitor's C{?api-version=}) before any of C{path}'s own.
    """
    if not path:
        return base
    parts = urlsplit(base)
    path, _, query = path.partition("?")
    joined = parts.path.rstrip("/") + "/" + path.lstrip("/")
    queries = "&".join(q for q in (parts.query, query) if q)
    return urlunsplit((parts.scheme, parts.netloc, joined, queries, parts.fragment))


class SentURL(URL):
    """
    A URL in URI form (ASCII, percent-encoded), whose URI form is itself
    and whose text is kept once made.

    Only for URLs sent as they are: one given query parameters by treq is
    rebuilt with hyperlink's general rules (see L{sendable}).
    """

    _text: Optional[str] = None

    def to_uri(self) -> SentURL:
        return self

    def to_text(self, with_password: bool = False) -> str:
        if with_password:
            return str(super().to_text(with_password=True))
        text = self._text
        if text is None:
            text = self._text = str(super().to_text())
        return text


@functools.lru_cache(maxsize=512)
def _sent(text: str) -> SentURL:
    # The read routes build URLs from request paths, so the cache is
    # bounded; the push routes use a handful that never leave it.
    uri = EncodedURL.from_text(text).to_uri().to_text(with_password=True)
    sent = SentURL.from_text(uri)
    assert isinstance(sent, SentURL)  # from_text builds the class it is asked on
    return sent


def sendable(url: str | EncodedURL) -> SentURL:
    """
    C{url} in the form treq sends, from a cache of recent ones.
    """
    if isinstance(url, SentURL):
        return url
    return _sent(url if isinstance(url, str) else url.to_text(with_password=True))
