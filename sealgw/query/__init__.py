"""
The read path: Prometheus/Mimir, Loki and Tempo query APIs passed to their
upstreams with the tenant the gate decided.

  - L{match_read_path}: the allow-list of read routes per API, matched on
    the path exactly as it came (anything not canonical is refused);
  - L{forwarded_headers} and L{answer_headers}: the header policy both
    ways;
  - L{proxy_read}: one read relayed on the upstream's
    L{sealgw.http.IHTTPClient}, its answer streamed back under a cap;
  - L{QuerySettings}: an upstream per API, built by the gateway from its
    configuration;
  - L{label_read}: a read of a store without tenants, held to its tenant
    by a label on every selector (L{sealgw.tenancy.enforce_query}), by
    way of a L{LabelEnforcer}: the query's bounds, a cache of rewrites,
    and a L{ParserPool} of child processes for the queries that could
    stall the reactor;
  - L{TailSession}: a Loki live tail, the client's WebSocket joined to
    one L{TailUpstream} opens to Loki, under L{TailLimits}.

The tenant decision is the gate's (L{sealgw.auth.Gate.admit} with
C{federation=True}): one tenant the identity may use, or C{a|b} only with
C{tenancy.federation} on and only when the identity may use every tenant
named.  Nothing here reads a Twisted web request; L{sealgw.web.query}
does.
"""

from sealgw.query._enforcer import LabelEnforcer, RewriteCache
from sealgw.query._headers import (
    CACHE_CONTROL,
    FORWARDED_REQUEST_HEADERS,
    PASSED_RESPONSE_HEADERS,
    answer_headers,
    forwarded_headers,
)
from sealgw.query._labels import (
    PLAIN_ROUTES,
    QUERY_ROUTES,
    SELECTOR_ROUTES,
    encode_form,
    label_read,
    parse_form,
)
from sealgw.query._outcome import CREDENTIAL_STATUSES, ReadRefused, answer_status, failure_refusal
from sealgw.query._pool import (
    InlineParser,
    IPromQLParser,
    ParseBudgetExceeded,
    ParserPool,
    ParserUnavailable,
)
from sealgw.query._proxy import CappedConsumer, IDownstream, proxy_read
from sealgw.query._request import FORM, ReadRequest, form_body, query_string
from sealgw.query._routes import (
    PREFIXES,
    READ_APIS,
    READ_ROUTES,
    NotCanonical,
    ReadMatch,
    ReadRoute,
    canonical_segments,
    klein_rules,
    match_read_path,
)
from sealgw.query._settings import (
    DEFAULT_MAX_FORM_BYTES,
    DEFAULT_MAX_RESPONSE_BYTES,
    QuerySettings,
    ReadClients,
    ReadUpstream,
    build_reads,
)
from sealgw.query._tail import ITailEnd, OpenTails, TailLimits, TailOutcome, TailSession
from sealgw.query._tail_upstream import TailUpstream

__all__ = [
    "build_reads",
    "CACHE_CONTROL",
    "CREDENTIAL_STATUSES",
    "DEFAULT_MAX_FORM_BYTES",
    "DEFAULT_MAX_RESPONSE_BYTES",
    "FORM",
    "FORWARDED_REQUEST_HEADERS",
    "PASSED_RESPONSE_HEADERS",
    "PLAIN_ROUTES",
    "QUERY_ROUTES",
    "SELECTOR_ROUTES",
    "PREFIXES",
    "READ_APIS",
    "READ_ROUTES",
    "CappedConsumer",
    "ITailEnd",
    "OpenTails",
    "TailLimits",
    "TailOutcome",
    "TailSession",
    "TailUpstream",
    "IDownstream",
    "InlineParser",
    "IPromQLParser",
    "LabelEnforcer",
    "ParseBudgetExceeded",
    "ParserPool",
    "ParserUnavailable",
    "RewriteCache",
    "NotCanonical",
    "QuerySettings",
    "ReadClients",
    "ReadMatch",
    "ReadRefused",
    "ReadRequest",
    "ReadRoute",
    "ReadUpstream",
    "answer_headers",
    "answer_status",
    "canonical_segments",
    "encode_form",
    "failure_refusal",
    "form_body",
    "forwarded_headers",
    "klein_rules",
    "label_read",
    "match_read_path",
    "parse_form",
    "proxy_read",
    "query_string",
]
