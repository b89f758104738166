"""
OpenID Connect: issuer discovery, the issuer's signing keys (JWKS), local
JWT verification, and the checker that turns claims into an identity.
"""

from __future__ import annotations

from typing import Any, Optional

import attr
from twisted.application.service import Service
from twisted.cred.checkers import ICredentialsChecker
from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from sealgw.auth._bearer import IBearerToken
from sealgw.auth._errors import NotRecognised
from sealgw.auth._identity import IdentityProviderUnavailable, Principal, Unauthorized
from sealgw.auth._issuer import IdPUnreachable, get_json, idp_client
from sealgw.auth._jwt import (
    JWKS,
    check_claims,
    jwt_header,
    parse_jwks,
    unverified_issue_time,
    verify_signature,
)
from sealgw.auth._keys import SigningKeys
from sealgw.config import OIDCConfig
from sealgw.http import IHTTPClient
from sealgw.tenancy import TenantError, parse_tenant

DISCOVERY_PATH = "/.well-known/openid-configuration"

@attr.frozen
class ProviderMetadata:
    """
    What discovery told us about the issuer.
    """

    issuer: str
    jwks_uri: Optional[str]
    userinfo_endpoint: Optional[str]


class OIDCProvider(Service):
    """
    One OpenID Connect issuer: discovered at start and kept up to date.

    Discovery starts in L{startService} without blocking it and is retried
    every C{retry_interval} seconds until it succeeds; the same loop then
    refreshes the JWKS every C{jwks_refresh_interval}.  Until discovery
    succeeds, OIDC requests are refused with 503.  Keys are only ever
    replaced by a good new set: an unreachable issuer leaves the last good
    keys in force.  When and how often a token naming a key not held makes
    the keys be fetched again is L{SigningKeys}'s to decide.
    """

    log = Logger()
    retry_interval = 5.0

    def __init__(
        self, config: OIDCConfig, clock: IReactorTime, client: Optional[IHTTPClient] = None
    ) -> None:
        """
        @param clock: the reactor, or a C{Clock} in tests: every timer and
            timestamp comes from it.
        @param client: how the issuer is asked; by default an L{idp_client}
            over C{clock} (then the reactor), owned and closed on stop.  A
            client passed in is its giver's to close.
        """
        self.config = config
        self._clock = clock
        self._owned: Optional[IHTTPClient] = None
        if client is None:
            client = self._owned = idp_client(config, clock)
        self.client: IHTTPClient = client
        self.metadata: Optional[ProviderMetadata] = None
        self.keys = SigningKeys(
            self._fetch_keys,
            clock,
            interval=config.jwks_min_refresh_interval,
            burst=config.jwks_refresh_burst,
            retry_after=self.retry_interval,
        )
        self.last_error: Optional[str] = None
        self.last_success: Optional[float] = None
        self.last_failure: Optional[float] = None
        self._loop: Optional[LoopingCall] = None
        self._tick_in_flight: Optional[Deferred[None]] = None
        self._discovered: list[Deferred[None]] = []

    @property
    def jwks(self) -> Optional[JWKS]:
        """
        The issuer's keys as last fetched, if ever.
        """
        return self.keys.jwks

    @property
    def needs_keys(self) -> bool:
        return self.config.mode in ("auto", "jwt")

    # -- service -----------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        self._loop = LoopingCall(self._tick)
        self._loop.clock = self._clock
        self._loop.start(self.retry_interval, now=True).addErrback(
            lambda f: self.log.failure("OIDC maintenance loop stopped", f)
        )

    def stopService(self) -> Deferred[None]:
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        if self._tick_in_flight is not None:
            self._tick_in_flight.cancel()
        self.keys.stop()
        if self._owned is None:
            return succeed(None)
        return self._owned.close()

    def when_discovered(self) -> Deferred[None]:
        """
        Fires once discovery (and, for JWTs, the first key fetch) is done.
        """
        d: Deferred[None] = Deferred()
        if self.ready:
            d.callback(None)
        else:
            self._discovered.append(d)
        return d

    @property
    def ready(self) -> bool:
        return self.metadata is not None and (not self.needs_keys or self.jwks is not None)

    def _tick(self) -> Deferred[None]:
        # A LoopingCall stops for good when its call fails: every failure is
        # logged and swallowed here.
        d = Deferred.fromCoroutine(self._maintain())
        self._tick_in_flight = d

        def done(result: Any) -> None:
            self._tick_in_flight = None
            if isinstance(result, Failure) and not result.check(CancelledError):
                self.log.failure("OIDC maintenance failed", result)

        d.addBoth(done)
        return d

    async def _maintain(self) -> None:
        if self.metadata is None:
            await self.discover()
        elif self.needs_keys and self._keys_due():
            await self.refresh_keys()
        if self.ready:
            waiting, self._discovered = self._discovered, []
            for d in waiting:
                d.callback(None)

    def _keys_due(self) -> bool:
        now = self._clock.seconds()
        last = self.keys.last_fetch
        # A refresh that failed is tried again, but no sooner than
        # jwks_min_refresh_interval after the last fetch of any kind.
        if last is not None and now - last < self.config.jwks_min_refresh_interval:
            return False
        jwks = self.jwks
        return jwks is None or now - jwks.fetched_at >= self.config.jwks_refresh_interval

    # -- talking to the issuer ---------------------------------------------

    def get_json(self, url: str, bearer: Optional[str] = None) -> Deferred[tuple[int, Any]]:
        """
        GET C{url} from the issuer, within C{timeout}: see L{get_json}.
        """
        return get_json(self.client, self._clock, self.config.timeout, url, bearer)

    def note_success(self) -> None:
        self.last_success = self._clock.seconds()
        self.last_error = None

    def note_failure(self, what: str, error: Exception) -> None:
        self.last_failure = self._clock.seconds()
        self.last_error = f"{what}: {error}"
        self.log.warn(
            "identity provider {issuer}: {what} failed: {error}",
            issuer=self.config.issuer,
            what=what,
            error=str(error),
        )

    async def discover(self) -> bool:
        """
        Fetch the issuer's metadata, then (for JWTs) its keys.

        @return: whether discovery succeeded; failures are logged.
        """
        url = self.config.issuer.rstrip("/") + DISCOVERY_PATH
        try:
            status, doc = await self.get_json(url)
            if status != 200 or not isinstance(doc, dict):
                raise IdPUnreachable(f"discovery answered {status}")
            metadata = _metadata(doc, self.config)
        except (IdPUnreachable, ValueError) as e:
            self.note_failure("discovery", e)
            return False
        self.note_success()
        self.metadata = metadata
        self.log.info(
            "identity provider {issuer} discovered", issuer=self.config.issuer
        )
        if self.needs_keys:
            await self.refresh_keys()
        return True

    def refresh_keys(self) -> Deferred[bool]:
        """
        Fetch the JWKS now (the schedule's refresh, and the first fetch
        after discovery); a fetch already on its way is joined.

        @return: a Deferred firing with whether new keys were fetched.
        """
        if self.metadata is None or self.metadata.jwks_uri is None:
            return succeed(False)
        return self.keys.refresh()

    async def _fetch_keys(self) -> JWKS:
        """
        The issuer's JWKS, the outcome noted for health and the log.

        @raise IdPUnreachable: for no answer, a status but 200, or an
            answer that is not a JWKS.
        """
        assert self.metadata is not None and self.metadata.jwks_uri is not None
        try:
            status, doc = await self.get_json(self.metadata.jwks_uri)
            if status != 200:
                raise IdPUnreachable(f"JWKS answered {status}")
            jwks = parse_jwks(doc, self._clock.seconds())
        except (IdPUnreachable, ValueError) as e:
            self.note_failure("fetching the JWKS", e)
            raise IdPUnreachable(str(e)) from None
        self.note_success()
        return jwks

    # -- verification ------------------------------------------------------

    async def verify(self, token: str) -> dict[str, Any]:
        """
        The claims of a JWT signed by this issuer, with C{iss}, C{aud},
        C{exp} and C{nbf} checked.

        @raise Unauthorized: for any token that is not good.
        @raise IdentityProviderUnavailable: when the key needed is not held
            and could not be had from the issuer yet (L{SigningKeys}).
        """
        header = jwt_header(token)
        if header is None:
            raise Unauthorized("the token is not a JWT")
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self.config.algorithms:
            # Refusing here, before any key is chosen, is what stops "none"
            # and HMAC-with-the-public-key tokens.
            raise Unauthorized("the token's signing algorithm is not accepted")
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise Unauthorized("the token's key id is not a string")
        if self.metadata is None:
            raise IdentityProviderUnavailable(
                "the identity provider has not been reached yet", self.retry_interval
            )
        key = await self.keys.key_for(kid, alg, lambda: unverified_issue_time(token))
        claims = verify_signature(token, key, alg)
        check_claims(
            claims,
            issuer=self.metadata.issuer,
            audience=self.config.audience,
            now=self._clock.seconds(),
            leeway=self.config.leeway,
        )
        return claims

    def health(self) -> dict[str, Any]:
        now = self._clock.seconds()
        if not self.ready:
            status = "down"
        elif self.last_error is not None:
            # The issuer's last answer, or lack of one, was a failure.
            # Ordered by event, not time: on one clock tick a success and
            # a failure have the same timestamp.
            status = "degraded"
        else:
            status = "ok"
        return {
            "status": status,
            "issuer": self.config.issuer,
            "discovered": self.metadata is not None,
            "keys": len(self.jwks) if self.jwks is not None else 0,
            "jwks_age_seconds": (now - self.jwks.fetched_at) if self.jwks is not None else None,
            "error": self.last_error,
        }


def _metadata(doc: dict[str, Any], config: OIDCConfig) -> ProviderMetadata:
    issuer = doc.get("issuer")
    if not isinstance(issuer, str) or issuer.rstrip("/") != config.issuer.rstrip("/"):
        raise ValueError("the discovery document names another issuer")
    jwks_uri = doc.get("jwks_uri")
    userinfo = doc.get("userinfo_endpoint")
    if config.mode in ("auto", "jwt") and not isinstance(jwks_uri, str):
        raise ValueError("the discovery document has no jwks_uri")
    if config.mode == "userinfo" and not isinstance(userinfo, str):
        raise ValueError("the discovery document has no userinfo_endpoint")
    return ProviderMetadata(
        issuer=issuer,
        jwks_uri=jwks_uri if isinstance(jwks_uri, str) else None,
        userinfo_endpoint=userinfo if isinstance(userinfo, str) else None,
    )


def _strings(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list):
        return tuple(v for v in value if isinstance(v, str))
    return ()


def principal_from_claims(claims: dict[str, Any], config: OIDCConfig) -> Principal:
    """
    The identity named by C{name_claim} (else C{sub}), its tenants from
    C{tenants_claim} through C{group_tenants}, its limits from
    C{group_limits}.

    @raise Unauthorized: when the claims name nobody.
    """
    name = claims.get(config.name_claim)
    if not isinstance(name, str) or not name:
        name = claims.get("sub")
    if not isinstance(name, str) or not name:
        raise Unauthorized(f"the token names no identity (no {config.name_claim} or sub claim)")
    groups = _strings(claims.get(config.tenants_claim))
    tenants: list[str] = []
    if config.group_tenants:
        for group in groups:
            for tenant in config.group_tenants.get(group, ()):
                if tenant not in tenants:
                    tenants.append(tenant)
    else:
        # Without a map the groups are the tenants; a group that is not a
        # valid tenant id cannot be one and is left out.
        for group in groups:
            try:
                tenant = parse_tenant(group)
            except TenantError:
                continue
            if tenant not in tenants:
                tenants.append(tenant)
    limits = None
    for group, group_limits in config.group_limits.items():
        if group in groups:
            limits = group_limits
            break
    return Principal("oidc", name, tuple(tenants), limits)


@implementer(ICredentialsChecker)
class OIDCChecker:
    """
    Bearer tokens from an OpenID Connect issuer: JWTs verified locally,
    opaque tokens (or everything, in C{userinfo} mode) asked of userinfo.
    """

    credentialInterfaces = (IBearerToken,)
    name = "oidc"

    def __init__(self, provider: OIDCProvider, userinfo: Any) -> None:
        self.provider = provider
        self.userinfo = userinfo
        self.config = provider.config

    def requestAvatarId(self, credentials: Any) -> Deferred[Any]:
        # The avatar id is a Principal: richer than the bytes twisted.cred
        # suggests, and only ever handed to sealgw's own realm.
        return Deferred.fromCoroutine(self._check(credentials))

    async def _check(self, credentials: Any) -> Principal:
        mode = self.config.mode
        is_jwt = jwt_header(credentials.token) is not None
        if mode == "jwt" and not is_jwt:
            raise NotRecognised()
        if mode == "jwt" or (mode == "auto" and is_jwt):
            claims = await self.provider.verify(credentials.token)
        else:
            claims = await self.userinfo.lookup(credentials)
        return principal_from_claims(claims, self.config)
