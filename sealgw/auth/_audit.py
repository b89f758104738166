"""
One audit event and one metric sample per admission decision.
"""

from __future__ import annotations

from typing import Optional

from prometheus_client import CollectorRegistry, Counter
from twisted.logger import Logger


class Audit:
    """
    Records who asked for what and how it was decided.

    The event carries the identity's name, never its credential: a refused
    token appears only as the first 8 hex digits of its SHA-256, enough to
    match it against C{sealgw hash-token} output and useless to replay.
    """

    log = Logger(namespace="sealgw.auth.audit")

    #: Whether allowed decisions get a line too.  Every decision is
    #: counted; a refusal is always logged.  An allowed request's identity
    #: and tenant are in its access line already, so the gateway logs
    #: allowed decisions only at C{log.level: debug}: on a busy gateway a
    #: second line per push cost more than the rest of its logging.
    log_allowed = True

    def __init__(self, registry: CollectorRegistry) -> None:
        self.decisions = Counter(
            "sealgw_auth_decisions",
            "Authentication and admission decisions, by identity source and outcome.",
            ["checker", "outcome", "reason"],
            registry=registry,
        )

    def decision(
        self,
        *,
        outcome: str,
        reason: str,
        route: str,
        checker: Optional[str],
        identity: Optional[str],
        tenant: Optional[str],
        status: int,
        credential: Optional[str] = None,
    ) -> None:
        """
        @param outcome: C{"allowed"} or C{"denied"}.
        @param credential: a refused token's short fingerprint, if any.
        """
        checker_label = checker or "none"
        self.decisions.labels(checker_label, outcome, reason).inc()
        if outcome == "allowed" and not self.log_allowed:
            return
        self.log.info(
            "auth {outcome} {status} route={route} identity={identity} tenant={tenant} "
            "checker={checker} reason={reason}"
            + (" credential=sha256:{credential}" if credential else ""),
            outcome=outcome,
            status=status,
            route=route,
            identity=identity or "-",
            tenant=tenant or "-",
            checker=checker_label,
            reason=reason,
            credential=credential,
            audit=True,
        )
