"""
Credentials in the configuration: written inline, or read from a file or
the environment once, at start-up or reload.
"""

from __future__ import annotations

import os
from typing import Optional

import attr

from sealgw.config._problems import Invalid
from sealgw.config._rules import Path


@attr.frozen(repr=False)
class Secret:
    """
    A credential read from the configuration, a file or the environment.

    Its C{repr} never shows the value, so a secret that ends up in a log
    line or a traceback does not leak.
    """

    value: str
    origin: str

    def __repr__(self) -> str:
        return f"<Secret from {self.origin}>"

    __str__ = __repr__


@attr.frozen
class SecretSource:
    """
    The C{{file: PATH}} or C{{env: NAME}} form of a secret.
    """

    file: Optional[Path] = None
    env: Optional[str] = None

    def read(self) -> Secret:
        """
        @raise Invalid: when the file or the variable gives nothing.
        """
        if self.file is not None:
            try:
                with open(self.file, encoding="utf-8") as f:
                    value = f.read().strip()
            except OSError as e:
                raise Invalid(f"cannot read {self.file}: {e.strerror}", at=["file"]) from None
            if not value:
                raise Invalid(f"{self.file} is empty", at=["file"])
            return Secret(value, f"file {self.file}")
        assert self.env is not None
        value = os.environ.get(self.env, "")
        if not value:
            raise Invalid(f"environment variable {self.env} is not set", at=["env"])
        return Secret(value, f"environment variable {self.env}")
