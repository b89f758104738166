"""
Spools from the configuration: checked without touching the disk, then
wrapped around the HTTP upstreams that have one.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Optional, Union

from sealgw.config import RetryConfig, UpstreamConfig
from sealgw.config._spool import SpoolConfig
from sealgw.relay._file import ThreadRunner
from sealgw.relay._interfaces import IUpstream
from sealgw.spool._metrics import SpoolMetrics
from sealgw.spool._upstream import SpoolUpstream


def _nearest_existing(path: str) -> str:
    while not os.path.exists(path):
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return path


def spool_problems(configs: Mapping[str, UpstreamConfig]) -> list[str]:
    """
    Spools that cannot work: a directory that cannot be created or
    written, or one shared by two upstreams (each spool's folders are its
    own).  Nothing is created: C{check-config} runs this too.
    """
    problems = []
    seen: dict[str, str] = {}
    for name, config in configs.items():
        spool: Optional[SpoolConfig] = getattr(config, "spool", None)
        if spool is None:
            continue
        directory = os.path.abspath(spool.directory)
        where = f"upstreams.{name}.spool.directory"
        for other, other_directory in seen.items():
            if (
                directory == other_directory
                or directory.startswith(other_directory + os.sep)
                or other_directory.startswith(directory + os.sep)
            ):
                problems.append(f"{where}: {directory} overlaps upstreams.{other}'s spool")
        seen[name] = directory
        existing = _nearest_existing(directory)
        if not os.path.isdir(existing):
            problems.append(f"{where}: {existing} is not a directory")
        elif not os.access(existing, os.W_OK | os.X_OK):
            problems.append(f"{where}: {existing} is not writable")
    return problems


def add_spools(
    upstreams: Mapping[str, IUpstream],
    configs: Mapping[str, UpstreamConfig],
    reactor: Any,
    *,
    run_in_thread: Optional[ThreadRunner] = None,
    worker: Union[int, str, None] = None,
    metrics: Optional[SpoolMetrics] = None,
) -> dict[str, IUpstream]:
    """
    C{upstreams}, each one whose configuration has a C{spool} wrapped in a
    L{SpoolUpstream}.
    """
    result = dict(upstreams)
    for name, upstream in upstreams.items():
        config = configs.get(name)
        spool: Optional[SpoolConfig] = getattr(config, "spool", None)
        if spool is None:
            continue
        result[name] = SpoolUpstream(
            upstream,
            spool,
            reactor,
            retry=getattr(config, "retry", RetryConfig()),
            run_in_thread=run_in_thread,
            worker=worker,
            metrics=metrics,
        )
    return result
