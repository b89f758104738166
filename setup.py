"""
The C extension only; everything else about the package is in setup.cfg.

The extension is optional: without a compiler the install still succeeds
(setuptools warns) and sealgw.signals._relabel uses its Python loop, with
the same results, slower; C{check: labels} then judges label names on the
protobuf objects (sealgw.signals._labelcheck), as before the C reader.  Build it in the checkout, for the tests, with
C{python setup.py build_ext --inplace}.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "sealgw.signals._relabel_c",
            ["sealgw/signals/_relabel_c.c"],
            optional=True,
        )
    ]
)
