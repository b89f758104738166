"""
The C{auth} section: which identity sources are enabled and the limits
that apply to the identities they yield.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Optional

import attr

from sealgw.config._rules import URL, AtLeast, Bytes, Count, Interval, OneOf, Path, Seconds, Tenant

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
class AuthConfig:
    """
    @ivar basic: whether C{Authorization: Basic} is accepted, with a token
        as the password and, optionally, a tenant as the username; for
        clients that cannot send a bearer token (Promtail, Alloy,
        Prometheus's C{basic_auth}).
    """

    token_file: Optional[TokenFileConfig] = None
    oidc: Optional[OIDCConfig] = None
    client_certificates: Optional[ClientCertConfig] = None
    default_limits: RateLimitConfig = RateLimitConfig()
    basic: bool = True
