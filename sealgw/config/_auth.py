"""
The C{auth} section: which identity sources are enabled and the limits
that apply to the identities they yield.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Optional

import attr

from sealgw.config._reader import Table
from sealgw.tenancy import TenantError, parse_tenant


@attr.frozen
class RateLimitConfig:
    """
    Limits per identity; L{None} means unlimited.

    @ivar requests_per_second: sustained request rate, bursting to C{burst}.
    @ivar bytes_per_second: sustained request-body bytes, bursting to
        C{burst_bytes} (by default one second's worth).
    @ivar max_concurrent: requests in flight at once.
    """

    requests_per_second: Optional[float] = None
    burst: Optional[int] = None
    bytes_per_second: Optional[int] = None
    burst_bytes: Optional[int] = None
    max_concurrent: Optional[int] = None


@attr.frozen
class TokenFileConfig:
    """
    @ivar path: seal-proxy's C{bearer-tokens.yaml}, or its sealgw extension.
    @ivar watch_interval: how often the file is checked for changes.
    """

    path: str
    watch_interval: float = 5.0


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
    @ivar jwks_min_refresh_interval: the JWKS is fetched again on an
        unknown C{kid}, but no more often than this.
    @ivar jwks_refresh_interval: the JWKS is also fetched this often, so a
        key the issuer withdrew stops being accepted.
    """

    issuer: str
    audience: tuple[str, ...] = ()
    mode: str = "auto"
    name_claim: str = "email"
    tenants_claim: str = "groups"
    group_tenants: Mapping[str, tuple[str, ...]] = attr.field(factory=dict)
    group_limits: Mapping[str, RateLimitConfig] = attr.field(factory=dict)
    algorithms: tuple[str, ...] = ("RS256", "ES256")
    leeway: float = 30.0
    cache_ttl: float = 300.0
    timeout: float = 5.0
    jwks_min_refresh_interval: float = 30.0
    jwks_refresh_interval: float = 3600.0
    ca_file: Optional[str] = None


@attr.frozen
class ClientCertIdentity:
    tenants: tuple[str, ...] = ()
    limits: Optional[RateLimitConfig] = None


@attr.frozen
class ClientCertConfig:
    """
    @ivar name_from: C{"cn"} (subject common name) or C{"san"} (the first
        DNS or e-mail subject alternative name).
    @ivar identities: the certificate names that are let in, with their
        tenants; a verified certificate whose name is not listed is refused.
    """

    name_from: str = "cn"
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


def _check_tenants(t: Table, key: str, tenants: Optional[tuple[str, ...]]) -> None:
    for i, tenant in enumerate(tenants or ()):
        try:
            parse_tenant(tenant)
        except TenantError as e:
            t.reader.problem(f"{t.at(key)}[{i}]", str(e))


def read_rate_limit(t: Optional[Table]) -> Optional[RateLimitConfig]:
    if t is None:
        return None
    return RateLimitConfig(
        requests_per_second=t.number("requests_per_second", None, minimum=0.001),
        burst=t.int("burst", None, minimum=1),
        bytes_per_second=t.size("bytes_per_second", None),
        burst_bytes=t.size("burst_bytes", None),
        max_concurrent=t.int("max_concurrent", None, minimum=1),
    )


RATE_LIMIT_KEYS = (
    "requests_per_second",
    "burst",
    "bytes_per_second",
    "burst_bytes",
    "max_concurrent",
)


def read_auth(t: Optional[Table]) -> AuthConfig:
    """
    Read the C{auth} section; problems are collected on the table's reader.
    """
    if t is None:
        return AuthConfig()
    token_file = None
    tf = t.table("token_file", ["path", "watch_interval"])
    if tf is not None:
        path = tf.path_("path")
        token_file = TokenFileConfig(
            path=path or "", watch_interval=tf.duration("watch_interval", 5.0)
        )
    oidc = None
    ot = t.table(
        "oidc",
        [
            "issuer",
            "audience",
            "mode",
            "name_claim",
            "tenants_claim",
            "group_tenants",
            "group_limits",
            "algorithms",
            "leeway",
            "cache_ttl",
            "timeout",
            "jwks_min_refresh_interval",
            "jwks_refresh_interval",
            "ca_file",
        ],
    )
    if ot is not None:
        group_tenants: dict[str, tuple[str, ...]] = {}
        # Any group name is a valid key here.
        gt = ot.table("group_tenants", None)
        if gt is not None:
            for group in gt.keys():
                group_tenants[group] = gt.str_list(group) or ()
                _check_tenants(gt, group, group_tenants[group])
        group_limits: dict[str, RateLimitConfig] = {}
        for group, lt in ot.named_tables("group_limits", RATE_LIMIT_KEYS).items():
            limits = read_rate_limit(lt)
            if limits is not None:
                group_limits[group] = limits
        algorithms = ot.str_list("algorithms", ("RS256", "ES256"))
        for alg in algorithms or ():
            if alg not in ("RS256", "RS384", "RS512", "ES256", "ES384", "PS256"):
                ot.problem("algorithms", f"{alg!r} is not an accepted signature algorithm")
        oidc = OIDCConfig(
            issuer=ot.url("issuer") or "",
            audience=ot.str_list("audience", ()),
            mode=ot.choice("mode", ["auto", "jwt", "userinfo"], "auto"),
            name_claim=ot.str("name_claim", "email"),
            tenants_claim=ot.str("tenants_claim", "groups"),
            group_tenants=group_tenants,
            group_limits=group_limits,
            algorithms=tuple(algorithms or ()),
            leeway=ot.duration("leeway", 30.0, positive=False),
            cache_ttl=ot.duration("cache_ttl", 300.0),
            timeout=ot.duration("timeout", 5.0),
            jwks_min_refresh_interval=ot.duration("jwks_min_refresh_interval", 30.0),
            jwks_refresh_interval=ot.duration("jwks_refresh_interval", 3600.0),
            ca_file=ot.path_("ca_file", None),
        )
        if oidc.mode in ("auto", "jwt") and not oidc.audience:
            ot.problem("audience", "required when JWTs are verified locally")
    client_certs = None
    ct = t.table("client_certificates", ["name_from", "identities"])
    if ct is not None:
        identities: dict[str, ClientCertIdentity] = {}
        for name, it in ct.named_tables("identities", ["tenants", "limits"]).items():
            _check_tenants(it, "tenants", it.str_list("tenants", ()))
            identities[name] = ClientCertIdentity(
                tenants=it.str_list("tenants", ()),
                limits=read_rate_limit(it.table("limits", RATE_LIMIT_KEYS)),
            )
        client_certs = ClientCertConfig(
            name_from=ct.choice("name_from", ["cn", "san"], "cn"),
            identities=identities,
        )
    default_limits = read_rate_limit(t.table("default_limits", RATE_LIMIT_KEYS))
    return AuthConfig(
        token_file=token_file,
        oidc=oidc,
        client_certificates=client_certs,
        default_limits=default_limits or RateLimitConfig(),
        basic=t.bool("basic", True),
    )


AUTH_KEYS = ("token_file", "oidc", "client_certificates", "default_limits", "basic")
