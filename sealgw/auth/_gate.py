"""
The gate every request passes before it is relayed: who is asking
(twisted.cred), as which tenant, within which limits, written to the audit
log either way.
"""

from __future__ import annotations

from typing import Any, Literal, Optional

from prometheus_client import CollectorRegistry
from twisted.application.internet import TimerService
from twisted.application.service import MultiService
from twisted.cred.error import LoginFailed, UnauthorizedLogin, UnhandledCredentials
from twisted.cred.portal import Portal
from twisted.internet.defer import CancelledError, Deferred
from twisted.logger import Logger

from sealgw.auth._anonymous import anonymous_identity
from sealgw.auth._audit import Audit
from sealgw.auth._basic import BASIC_CHALLENGE, BasicTokenCredentialFactory
from sealgw.auth._bearer import BearerCredentialFactory, split_authorization
from sealgw.auth._chain import FirstRecognises
from sealgw.auth._clientcert import ClientCertificate, ClientCertificateChecker, peer_certificate
from sealgw.auth._development import DevelopmentTokenChecker
from sealgw.auth._identity import (
    Admission,
    AuthError,
    BadTenant,
    Forbidden,
    Identity,
    IIdentity,
    Unauthorized,
)
from sealgw.auth._limits import Limiter
from sealgw.auth._oidc import OIDCChecker, OIDCProvider
from sealgw.auth._realm import IdentityRealm
from sealgw.auth._tokenfile import TokenFile, TokenFileChecker
from sealgw.auth._userinfo import UserinfoCache
from sealgw.config import Config, RateLimitConfig
from sealgw.http import IHTTPClient
from sealgw.limits import ILimitStore, LocalLimiter, SharedLimiter, shared_limiter
from sealgw.tenancy import (
    TenantConflict,
    TenantError,
    TenantForbidden,
    TenantRequired,
    UsernameTenantError,
    choose_tenant,
)

_UNLIMITED = RateLimitConfig()


class Gate(MultiService):
    """
    Authentication, tenancy and limits for the web layer.

    Bearer tokens are offered to the identity sources in a fixed order —
    the development token, the token file, then OIDC — and the first that
    recognises a token decides; the local sources come first so that an
    unreachable identity provider never delays a token-file client.  A
    request with both a bearer token and a client certificate is decided by
    the token.

    Unless C{auth.basic} is off, C{Authorization: Basic} is read too: its
    password is offered to the same sources as a bearer token, and its
    username, when not empty, chooses the tenant as the tenant header does.

    Its children are the token file watch, the OIDC provider and the
    shared limits' connection, started and stopped with it.
    """

    log = Logger()

    def __init__(
        self,
        config: Config,
        reactor: Any,
        registry: Optional[CollectorRegistry] = None,
        idp_client: Optional[IHTTPClient] = None,
    ) -> None:
        super().__init__()
        self.config = config
        self._reactor = reactor
        self.registry = registry if registry is not None else CollectorRegistry()
        self.audit = Audit(self.registry)
        self.realm = IdentityRealm(config.tenancy.default_tenant, config.auth.default_limits)
        self.limiter = Limiter(reactor)
        #: The limiter that asks a store shared with other processes, if any.
        self.shared_limits: Optional[SharedLimiter] = None
        if config.auth.shared_limits is not None:
            # One limit for the fleet; started and stopped with the gate.
            self._share_limits(
                shared_limiter(config.auth.shared_limits, reactor, self.registry)
            )
        self.credential_factory = BearerCredentialFactory()
        self.basic_factory: Optional[BasicTokenCredentialFactory] = (
            BasicTokenCredentialFactory() if config.auth.basic else None
        )
        self.portal = Portal(self.realm)

        bearer: list[Any] = []
        if config.development_token is not None:
            bearer.append(DevelopmentTokenChecker(config.development_token))

        self.token_file: Optional[TokenFile] = None
        if config.auth.token_file is not None:
            # Raises ConfigError: a broken token file stops the start-up.
            self.token_file = TokenFile(config.auth.token_file, reactor)
            bearer.append(TokenFileChecker(self.token_file))
            watch = TimerService(config.auth.token_file.watch_interval, self.token_file.check)
            watch.clock = reactor
            watch.setName("token_file_watch")
            watch.setServiceParent(self)

        self.oidc: Optional[OIDCProvider] = None
        self.userinfo: Optional[UserinfoCache] = None
        if config.auth.oidc is not None:
            self.oidc = OIDCProvider(config.auth.oidc, reactor, client=idp_client)
            self.oidc.setName("oidc")
            self.oidc.setServiceParent(self)
            self.userinfo = UserinfoCache(self.oidc, reactor)
            bearer.append(OIDCChecker(self.oidc, self.userinfo))

        if bearer:
            self.portal.registerChecker(FirstRecognises(bearer))
        self.client_certificates: Optional[ClientCertificateChecker] = None
        if config.auth.client_certificates is not None:
            self.client_certificates = ClientCertificateChecker(config.auth.client_certificates)
            self.portal.registerChecker(self.client_certificates)
        if (
            not bearer
            and self.client_certificates is None
            and all(listener.auth != "none" for listener in config.listeners)
        ):
            self.log.warn(
                "{source}: no identity source is configured (auth.token_file, auth.oidc "
                "or auth.client_certificates): every request will be refused",
                source=config.source,
            )

    def _share_limits(self, shared: SharedLimiter) -> None:
        shared.setName("shared_limits")
        shared.setServiceParent(self)
        self.shared_limits = shared
        self.limiter = Limiter(self._reactor, backend=shared)

    def lease_limits(self, store: ILimitStore, where: str, timeout: float) -> None:
        """
        Ask C{store} (the main process, for a worker) for every limit
        decision, this process's share deciding when it cannot answer in
        C{timeout}; unless C{auth.shared_limits} already shares them.
        Called before the gate starts.
        """
        if self.shared_limits is not None:
            return
        self._share_limits(
            SharedLimiter(
                store, LocalLimiter(self._reactor), self._reactor, timeout, self.registry, where
            )
        )

    def stopService(self) -> Deferred[Any]:
        if self.userinfo is not None:
            self.userinfo.stop()
        d: Deferred[Any] = super().stopService()
        return d

    # -- the web layer's entry point ------------------------------------

    async def admit(
        self,
        request: Any,
        *,
        route: str,
        body_size: int,
        federation: bool = False,
        kind: Literal["push", "read"] = "push",
        listener_identity: Optional[str] = None,
    ) -> Admission:
        """
        Decide whether C{request} goes on, and as which tenant.

        @param route: names the route in the audit log and metrics.
        @param body_size: the request body's size as received, for the
            bytes-per-second limit.
        @param federation: whether this route may query several tenants at
            once (C{a|b}); it takes effect only when C{tenancy.federation}
            is enabled too.
        @param kind: which of the identity's limit sets counts the request:
            its push limits, or its read limits (C{reads}), which are kept
            apart so that expensive queries have an allowance of their own.
        @param listener_identity: set on an C{auth: none} listener: the
            request is this identity, with the default tenant and limits,
            and no credentials are asked (L{sealgw.auth._anonymous}).
        @return: the admission; call its C{release} when the request ends.
        @raise AuthError: a subclass naming the status to answer with.
        """
        credentials: Any = None
        identity: Optional[Identity] = None
        tenant: Optional[str] = None
        try:
            if listener_identity is None:
                credentials = self._credentials(request)
                identity = await self._login(credentials)
            else:
                identity = anonymous_identity(listener_identity, self.realm)
            tenant = self._tenant(request, identity, federation, credentials)
            if kind == "read":
                slot = self.limiter.acquire(
                    identity, 0, kind="read", limits=self.read_limits(identity)
                )
            else:
                slot = self.limiter.acquire(identity, max(0, body_size))
            if isinstance(slot, Deferred):
                # A shared store decides: its answer, or the local
                # buckets' when it cannot answer in time.
                slot = await slot
        except AuthError as e:
            if e.tenant is None:
                e.tenant = tenant
            if isinstance(e, Unauthorized) and self.basic_factory is not None:
                self._offer_basic(e)
            self._denied(route, e.status, e.reason, credentials, identity, e)
            raise
        except CancelledError:
            raise
        except Exception:
            self.log.failure("admitting a request to {route} failed", route=route)
            self._denied(route, 500, "error", credentials, identity, None)
            raise
        self.audit.decision(
            outcome="allowed",
            reason="ok",
            route=route,
            checker=identity.checker,
            identity=identity.name,
            tenant=tenant,
            status=200,
        )
        return Admission(identity, tenant, slot)

    def read_limits(self, identity: Identity) -> RateLimitConfig:
        """
        The limits on C{identity}'s reads: its own C{reads}, else those of
        C{auth.default_limits} (an identity's C{limits} without C{reads}
        keeps the default read limits), else none.
        """
        reads = identity.limits.reads
        if reads is None:
            reads = self.config.auth.default_limits.reads
        if reads is None:
            return _UNLIMITED
        return reads.as_rate_limits()

    def _denied(
        self,
        route: str,
        status: int,
        reason: str,
        credentials: Any,
        identity: Optional[Identity],
        error: Optional[AuthError],
    ) -> None:
        # Until an identity is known, a refused token is named by its
        # fingerprint only; after that, by the identity.
        self.audit.decision(
            outcome="denied",
            reason=reason,
            route=route,
            checker=identity.checker if identity is not None else getattr(error, "checker", None),
            identity=(
                identity.name if identity is not None else getattr(error, "identity_name", None)
            ),
            tenant=getattr(error, "tenant", None),
            status=status,
            credential=getattr(credentials, "fingerprint", None) if identity is None else None,
        )

    def _offer_basic(self, error: Unauthorized) -> None:
        """
        Name Basic next to Bearer in a 401's challenge, so a client that
        can do only Basic knows it may.
        """
        bearer = error.headers.get("WWW-Authenticate")
        error.headers["WWW-Authenticate"] = (
            f"{bearer}, {BASIC_CHALLENGE}" if bearer else BASIC_CHALLENGE
        )

    def _credentials(self, request: Any) -> Any:
        values = request.requestHeaders.getRawHeaders(b"authorization")
        token = (
            "Bearer token (or Basic credentials with the token as the password)"
            if self.basic_factory is not None
            else "Bearer token"
        )
        if values:
            # A garbled header is refused outright, even on a connection
            # with a client certificate: the client meant to use a token.
            if len(values) > 1:
                raise Unauthorized("more than one Authorization header", "malformed")
            try:
                scheme, rest = split_authorization(values[0])
                if scheme == self.credential_factory.scheme:
                    return self.credential_factory.decode(rest, request)
                if self.basic_factory is not None and scheme == self.basic_factory.scheme:
                    return self.basic_factory.decode(rest, request)
                if scheme == BasicTokenCredentialFactory.scheme:
                    raise LoginFailed("Basic credentials are turned off here (auth.basic)")
                raise LoginFailed(f"only a {token} is accepted")
            except LoginFailed as e:
                raise Unauthorized(str(e), "malformed") from None
        if self.client_certificates is not None:
            cert = peer_certificate(request)
            if cert is not None:
                return ClientCertificate(cert)
            raise Unauthorized(
                f"an Authorization: {token} or a client certificate is required", "missing"
            )
        raise Unauthorized(f"an Authorization: {token} is required", "missing")

    async def _login(self, credentials: Any) -> Identity:
        try:
            _, identity, _ = await self.portal.login(credentials, None, IIdentity)
        except AuthError:
            raise
        except UnhandledCredentials:
            raise Unauthorized("no identity source accepts this kind of credential") from None
        except UnauthorizedLogin:
            raise Unauthorized("the token is not recognised") from None
        assert isinstance(identity, Identity)
        return identity

    def _tenant(
        self, request: Any, identity: Identity, federation: bool, credentials: Any
    ) -> str:
        header = self.config.tenancy.header
        # Only Basic credentials have a username; None tells "not Basic".
        username: Optional[str] = getattr(credentials, "username", None)
        raw = request.requestHeaders.getRawHeaders(header.encode("ascii"))
        try:
            values = [v.decode("ascii") for v in raw] if raw else None
        except UnicodeDecodeError:
            raise BadTenant(
                f"{header}: tenant id may only contain letters, digits and !-_.*'()"
            ) from None
        try:
            return choose_tenant(
                values,
                identity.tenants,
                header=header,
                federation=federation and self.config.tenancy.federation,
                username=username,
            )
        except TenantRequired as e:
            raise BadTenant(str(e), "tenant_required") from None
        except UsernameTenantError as e:
            raise BadTenant(str(e)) from None
        except TenantConflict as e:
            raise BadTenant(str(e), "tenant_conflict") from None
        except TenantError as e:
            raise BadTenant(f"{header}: {e}") from None
        except TenantForbidden as e:
            error = Forbidden(f"identity {identity.name!r} may not use tenant {e.tenant!r}")
            # The username is part of a credential: a tenant it named is
            # not written to the audit log unless it was also the header's.
            if not username or raw:
                error.tenant = e.tenant
            raise error from None

    # -- operations ----------------------------------------------------------

    def reload(self) -> None:
        """
        Re-read the token file (on SIGHUP); a broken file leaves the old one
        in force and the reason in the log.
        """
        if self.token_file is None:
            self.log.info("reload: no token file is configured")
            return
        self.token_file.reload()

    def health(self) -> dict[str, Any]:
        """
        The state of each identity source, for C{/health}.
        """
        components: dict[str, Any] = {}
        if self.config.development_token is not None:
            components["development"] = {"status": "ok"}
        if self.token_file is not None:
            components["token_file"] = self.token_file.health()
        if self.oidc is not None:
            components["oidc"] = self.oidc.health()
        if self.client_certificates is not None:
            components["client_certificates"] = {
                "status": "ok",
                "identities": len(self.client_certificates.config.identities),
            }
        return components


def build_gate(
    config: Config,
    reactor: Any,
    registry: Optional[CollectorRegistry] = None,
    idp_client: Optional[IHTTPClient] = None,
) -> Gate:
    """
    The gate for C{config}.

    @param idp_client: how the OIDC issuer is asked; by default a client of
        its own (tests pass L{sealgw.testing.MemoryIdentityProvider}'s).

    @raise sealgw.config.ConfigError: when the token file cannot be used.
    """
    return Gate(config, reactor, registry, idp_client)
