"""
The main process's side of outbound tokens with workers: its refreshers
are the daemon's only ones, and every token they get goes to every worker
over the worker's private pipe, as does the current one to a worker as it
starts.
"""

from __future__ import annotations

from sealgw.credentials.azure import AzureADCredentials, OutboundCredentials, describe_for_workers
from sealgw.daemon._handoff import OUTBOUND_TOKENS, encode_message
from sealgw.daemon._supervisor import Supervisor


class TokenRelay:
    """
    Hands the main process's tokens to the workers the L{Supervisor} runs:
    after every token request its refreshers have answered (a new token,
    or a failure the workers' C{/health} reports), and to each worker
    right after its setup.  The refreshers themselves
    (C{credentials}) run as a service of the main process.
    """

    def __init__(
        self, credentials: OutboundCredentials[AzureADCredentials], supervisor: Supervisor
    ) -> None:
        self.refreshers = credentials.credentials
        self.supervisor = supervisor
        for refresher in self.refreshers.values():
            refresher.observe(self._changed)
        supervisor.greetings.append(self.message)

    def message(self) -> bytes:
        """
        The tokens held now, as one message to a worker.
        """
        return encode_message(OUTBOUND_TOKENS, describe_for_workers(self.refreshers))

    def _changed(self) -> None:
        self.supervisor.tell_all(self.message())
