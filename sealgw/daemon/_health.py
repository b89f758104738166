"""
What C{/health} and C{/ready} report: each component's own state, gathered
at the moment of asking.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

OK = "ok"
DEGRADED = "degraded"
DOWN = "down"

Check = Callable[[], dict[str, Any]]


class Health:
    """
    A registry of component checks.

    A check returns a JSON-able mapping with at least C{"status"}: C{"ok"},
    C{"degraded"} (working, but worth a look) or C{"down"}.  Any component
    down makes the gateway unhealthy.  Readiness additionally needs every
    listener bound and no drain under way.
    """

    def __init__(self) -> None:
        self._checks: dict[str, Check] = {}
        self._ready_conditions: dict[str, Callable[[], bool]] = {}
        self._top_level: list[Callable[[bool], dict[str, Any]]] = []

    def register(self, name: str, check: Check) -> None:
        self._checks[name] = check

    def require_for_ready(self, name: str, condition: Callable[[], bool]) -> None:
        self._ready_conditions[name] = condition

    def add_top_level(self, fields: Callable[[bool], dict[str, Any]]) -> None:
        """
        Merge C{fields(healthy)} into the top of every report, over the
        gateway's own keys: the Azure sidecar's fields, which its users'
        probes read there.
        """
        self._top_level.append(fields)

    def report(self) -> tuple[bool, dict[str, Any]]:
        components: dict[str, Any] = {}
        healthy = True
        for name, check in self._checks.items():
            try:
                state = check()
            except Exception as e:  # a broken check reports, never crashes /health
                state = {"status": DOWN, "error": f"{type(e).__name__}: {e}"}
            components[name] = state
            if state.get("status") == DOWN:
                healthy = False
        status = OK if healthy else DOWN
        if healthy and any(c.get("status") == DEGRADED for c in components.values()):
            status = DEGRADED
        report: dict[str, Any] = {"status": status, "components": components}
        for fields in self._top_level:
            try:
                report.update(fields(healthy))
            except Exception:  # as a broken check: reported, never a crash
                healthy = False
                report["status"] = DOWN
        return healthy, report

    def readiness(self) -> tuple[bool, dict[str, bool]]:
        conditions = {name: bool(cond()) for name, cond in self._ready_conditions.items()}
        return all(conditions.values()), conditions
