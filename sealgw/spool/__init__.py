"""
The durable spool: an L{IUpstream} decorator (L{SpoolUpstream}) that
answers a push once it is fsynced to disk and delivers it upstream
afterwards, in order, through outages, restarts and crashes.

One object, L{Segments}, owns the segments, the read position and the
delivered watermark; the writer, the forwarder and takeover ask it.  The
bytes on disk are L{sealgw.spool._format}'s, the files
L{sealgw.spool._disk}'s; C{sealgw spool stats|replay-dead-letters} is
L{sealgw.spool._cli}.  See C{docs/spool.rst}.
"""

from sealgw.spool._build import add_spools, spool_problems
from sealgw.spool._metrics import SpoolCounts, SpoolMetrics, spool_metrics
from sealgw.spool._upstream import SpoolUpstream
from sealgw.spool._writer import SPOOLED

__all__ = [
    "SPOOLED",
    "SpoolCounts",
    "SpoolMetrics",
    "SpoolUpstream",
    "add_spools",
    "spool_metrics",
    "spool_problems",
]
