"""
Signals between checkers that never reach a client.
"""

from twisted.cred.error import UnauthorizedLogin


class NotRecognised(UnauthorizedLogin):
    """
    A checker does not know this credential at all, so the next identity
    source may try; only when none recognises it is the request refused.
    """
