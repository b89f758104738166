"""
The one refusal of label enforcement, apart from the modules that raise
it (the bounds, the writer, the parser process), so that none of them
imports another for it.
"""


class LabelEnforcementError(ValueError):
    """
    A query or selector that cannot be held to a tenant: it is over a
    bound, does not parse, or holds what cannot be written back.
    Answered 400.
    """
