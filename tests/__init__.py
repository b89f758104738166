"""
sealgw's tests, run with trial.

Hypothesis's per-example deadline is off for the whole suite: CI and
developers run the suite beside other work on two cores, and an example
that takes 200 ms because the machine is busy is not a failure.  Tests
bound what they must by their own means (a Clock, counts), never by
wall time.
"""

from hypothesis import settings

settings.register_profile("sealgw", deadline=None)
settings.load_profile("sealgw")
