# No __init__.py beside this file: twisted/plugins is a namespace that
# twistd scans.  Import nothing heavy here; the tap loads on use.
from twisted.application.service import ServiceMaker

sealgw = ServiceMaker(
    "sealgw",
    "sealgw.tap",
    "A secure, multi-tenant gateway for metrics, logs and traces.",
    "sealgw",
)
