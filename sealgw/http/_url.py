"""
Upstream URLs: a configured base plus a route's path.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit


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
