"""
The C{auth} section: which identity sources are enabled and the limits
that apply to the identities they yield.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Optional
from urllib.parse import parse_qs, unquote, urlsplit

import attr

from sealgw.config._problems import Invalid
from sealgw.config._rules import (
    URL,
    AtLeast,
    Bytes,
    Count,
    Duration,
    Interval,
    OneOf,
    Path,
    Rule,
    Seconds,
    SourceFile,
    Tenant,
)
from sealgw.config._secret import Secret

ALGORITHMS = ("RS256", "RS384", "RS512", "ES256", "ES384", "PS256", "EdDSA")
"""The JWT signature algorithms that C{auth.oidc.algorithms} may name
(C{EdDSA} with Ed25519 keys only)."""


@attr.frozen
class ReadLimitConfig:
    """
    Limits per identity on reads (the query routes), apart from those on
    pushes: a query can cost the upstream far more than a push, so reads
    get a smaller allowance of their own.  L{None} means unlimited.

    Form bodies are small and bounded by C{query.max_form_bytes}, so reads
    have no byte rate.

    @ivar requests_per_second: sustained reads a second, bursting to
        C{burst} (by default one second's worth, rounded up).
    @ivar max_concurrent: reads in flight at once (a read is in flight
        until its answer has been streamed).
    """

    requests_per_second: Optional[Annotated[float, AtLeast(0.001, whole=False)]] = None
    burst: Optional[Count] = None
    max_concurrent: Optional[Count] = None

    def as_rate_limits(self) -> RateLimitConfig:
        """
        The same limits in the shape the limiter counts with.
        """
        return RateLimitConfig(
            requests_per_second=self.requests_per_second,
            burst=self.burst,
            max_concurrent=self.max_concurrent,
        )


@attr.frozen
class SampleLimitsConfig:
    """
    Limits per identity on the series a push carries, modelled on Mimir's
    per-tenant distributor limits.  One far-future sample makes a shared
    Prometheus refuse every later sample of every tenant ("out of
    bounds") until its head block is cut, and a series with thousands of
    labels or a huge value costs every tenant's queries: so these hold
    wherever sealgw decodes series (see docs/limits.rst for the routes).

    A series over a limit is dropped and the rest relayed; the push is
    then answered 400 naming what was dropped.  C{max_series_per_push}
    is about the request, so it refuses the whole push.  Label names
    starting with C{__} (other than C{__name__}) are always refused: they
    are Prometheus's own.

    @ivar max_future: how far ahead of the gateway's clock a sample's
        timestamp may be (Mimir's C{creation_grace_period}); C{0} turns
        the check off.
    @ivar max_past: how far behind it may be (Mimir's
        C{past_grace_period}); C{0}, the default, turns the check off:
        an old sample is refused by the store for its own series only,
        and a sender catching up after an outage sends old ones.
    @ivar max_labels_per_series: labels on one series, C{__name__}
        included (Mimir's C{max_label_names_per_series}).
    @ivar max_label_name_length: bytes in one label name.
    @ivar max_label_value_length: bytes in one label value.
    @ivar max_series_per_push: series in one push (after seal and
        Pushgateway bodies are converted); Prometheus sends at most 2,000
        samples a request by default, vmagent about 10,000.
    """

    max_future: Interval = 600.0
    max_past: Interval = 0.0
    max_labels_per_series: Count = 30
    max_label_name_length: Count = 1024
    max_label_value_length: Count = 2048
    max_series_per_push: Count = 50_000


@attr.frozen
class RateLimitConfig:
    """
    Limits per identity; L{None} means unlimited.

    @ivar requests_per_second: sustained request rate, bursting to C{burst}.
    @ivar bytes_per_second: sustained request-body bytes, bursting to
        C{burst_bytes} (by default one second's worth).
    @ivar max_concurrent: requests in flight at once.
    @ivar reads: the limits on reads, which the others do not count; when
        L{None}, those of C{auth.default_limits} (an identity's own
        C{limits} replace the default push limits as a whole, and its
        C{reads}, when given, the default read limits as a whole).
    @ivar samples: the limits on the series of pushes; when L{None},
        those of C{auth.default_limits}, else L{SampleLimitsConfig}'s
        defaults (replaced as a whole, like C{reads}).
    """

    requests_per_second: Optional[Annotated[float, AtLeast(0.001, whole=False)]] = None
    burst: Optional[Count] = None
    bytes_per_second: Optional[Bytes] = None
    burst_bytes: Optional[Bytes] = None
    max_concurrent: Optional[Count] = None
    reads: Optional[ReadLimitConfig] = None
    samples: Optional[SampleLimitsConfig] = None


@attr.frozen
class TokenFileConfig:
    """
    @ivar path: seal-proxy's C{bearer-tokens.yaml}, or its sealgw extension.
    @ivar watch_interval: how often the file is checked for changes.
    """

    path: Path
    watch_interval: Seconds = 5.0


@attr.frozen
class OIDCConfig:
    """
    @ivar mode: C{"jwt"} verifies tokens locally against the issuer's JWKS,
        C{"userinfo"} asks the userinfo endpoint (opaque tokens), C{"auto"}
        verifies what looks like a JWT and asks userinfo for the rest.
    @ivar group_tenants: maps a group (from C{tenants_claim}) to tenants;
        when empty the claim's values are the tenants themselves.
    @ivar group_limits: limits for identities in a group; the first group
        listed that the identity belongs to wins.
    @ivar jwks_min_refresh_interval: the JWKS is fetched again when a
        token names a key the gateway does not hold; those fetches come
        from a bucket of C{jwks_refresh_burst} that refills one fetch per
        this interval, so forged key ids cannot make the gateway hammer
        the issuer (L{sealgw.auth._keys}).  A failed scheduled refresh is
        also retried after this long.
    @ivar jwks_refresh_burst: how many such fetches may happen back to back.
    @ivar jwks_refresh_interval: the JWKS is also fetched this often, so a
        key the issuer withdrew stops being accepted.
    """

    issuer: URL
    audience: tuple[str, ...] = ()
    mode: Annotated[str, OneOf(("auto", "jwt", "userinfo"))] = "auto"
    name_claim: str = "email"
    tenants_claim: str = "groups"
    group_tenants: Mapping[str, tuple[Tenant, ...]] = attr.field(factory=dict)
    group_limits: Mapping[str, RateLimitConfig] = attr.field(factory=dict)
    algorithms: tuple[
        Annotated[str, OneOf(ALGORITHMS, what="an accepted signature algorithm")], ...
    ] = ("RS256", "ES256")
    leeway: Interval = 30.0
    cache_ttl: Seconds = 300.0
    timeout: Seconds = 5.0
    jwks_min_refresh_interval: Seconds = 10.0
    jwks_refresh_burst: Count = 3
    jwks_refresh_interval: Seconds = 3600.0
    ca_file: Optional[Path] = None


@attr.frozen
class ClientCertIdentity:
    tenants: tuple[Tenant, ...] = ()
    limits: Optional[RateLimitConfig] = None


@attr.frozen
class ClientCertConfig:
    """
    @ivar name_from: C{"cn"} (subject common name) or C{"san"} (the first
        DNS or e-mail subject alternative name).
    @ivar identities: the certificate names that are let in, with their
        tenants; a verified certificate whose name is not listed is refused.
    """

    name_from: Annotated[str, OneOf(("cn", "san"))] = "cn"
    identities: Mapping[str, ClientCertIdentity] = attr.field(factory=dict)


@attr.frozen
class RedisAddress:
    """
    Where a Redis (or Valkey) listens, taken apart from its URL.

    @ivar tls: C{rediss://}: TLS, verified against the system's roots.
    @ivar path: a unix socket's path (C{unix://}); then C{host} is L{None}.
    @ivar db: the database number (the URL's path, or C{?db=} for a socket).
    """

    url: str
    host: Optional[str] = None
    port: int = 6379
    path: Optional[str] = None
    db: int = 0
    tls: bool = False
    username: Optional[str] = None


def parse_redis_url(url: str) -> RedisAddress:
    """
    C{redis://host[:port][/db]}, C{rediss://...} for TLS, or
    C{unix:///path[?db=N]}.  A password in the URL is refused: the URL is
    logged and shown in C{/health}, so the password goes in C{password}.

    @raise Invalid: saying what is wrong with C{url}.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss", "unix"):
        raise Invalid(f"{url!r} is not a redis://, rediss:// or unix:// URL")
    if parts.password is not None:
        raise Invalid(
            "a password in the URL would be logged: give it as password "
            "(inline, {file: PATH} or {env: NAME}) instead"
        )
    username = unquote(parts.username) if parts.username else None
    if parts.scheme == "unix":
        if not parts.path:
            raise Invalid(f"{url!r}: a unix:// URL needs a socket path (unix:///run/redis.sock)")
        db = parse_qs(parts.query).get("db", ["0"])[-1]
        return RedisAddress(url, path=parts.path, db=_db(db), username=username)
    if not parts.hostname:
        raise Invalid(f"{url!r} names no host")
    try:
        port = parts.port or 6379
    except ValueError:
        raise Invalid(f"{url!r}: bad port") from None
    return RedisAddress(
        url,
        host=parts.hostname,
        port=port,
        db=_db(parts.path.lstrip("/") or "0"),
        tls=parts.scheme == "rediss",
        username=username,
    )


def _db(text: str) -> int:
    if not text.isdigit():
        raise Invalid(f"the database must be a number, got {text!r}")
    return int(text)


@attr.frozen
class RedisURL(Rule):
    def structure(self, value: object, file: SourceFile) -> RedisAddress:
        if not isinstance(value, str):
            raise Invalid("expected a redis://, rediss:// or unix:// URL")
        return parse_redis_url(value)


@attr.frozen
class KeyPrefix(Rule):
    """
    The start of every key: letters, digits and C{_-.:}, so that it cannot
    hide a Redis Cluster hash tag or look like another key's.
    """

    def structure(self, value: object, file: SourceFile) -> str:
        if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z0-9_.:-]{1,64}", value):
            raise Invalid("must be 1 to 64 letters, digits or _-.:")
        return value


@attr.frozen
class DecisionTimeout(Duration):
    """
    At most a second: past it, a store that does not answer would hold
    every request for longer than the fallback is meant to take.
    """

    def structure(self, value: object, file: SourceFile) -> float:
        seconds = super().structure(value, file)
        if seconds > 1.0:
            raise Invalid("must be at most 1s (each admitted request waits for it)")
        return seconds


@attr.frozen
class SharedLimitsConfig:
    """
    Limits kept in a Redis (or Valkey) that every process and instance
    shares, so that each identity's limits hold for the fleet as written
    rather than once per process (docs/limits.rst).

    @ivar redis: where the store listens.
    @ivar password: the store's password (C{AUTH}); inline, or
        C{{file: PATH}} / C{{env: NAME}}.
    @ivar key_prefix: the start of every key the gateway writes, so that
        several gateways (or other users) can share one store.
    @ivar timeout: how long a decision waits for the store before the
        process decides alone with its local share; kept short, as every
        admitted request waits for it.
    """

    redis: Annotated[RedisAddress, RedisURL()]
    password: Optional[Secret] = None
    key_prefix: Annotated[str, KeyPrefix()] = "sealgw"
    timeout: Annotated[float, DecisionTimeout()] = 0.05


@attr.frozen
class AuthConfig:
    """
    @ivar basic: whether C{Authorization: Basic} is accepted, with a token
        as the password and, optionally, a tenant as the username; for
        clients that cannot send a bearer token (Promtail, Alloy,
        Prometheus's C{basic_auth}).
    @ivar shared_limits: a store that makes every identity's limits hold
        across processes and instances; without it, each process enforces
        its share of each host's limits.
    """

    token_file: Optional[TokenFileConfig] = None
    oidc: Optional[OIDCConfig] = None
    client_certificates: Optional[ClientCertConfig] = None
    default_limits: RateLimitConfig = RateLimitConfig()
    basic: bool = True
    shared_limits: Optional[SharedLimitsConfig] = None
