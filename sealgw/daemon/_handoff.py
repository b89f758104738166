"""
What the main process hands each worker process, and what they tell each
other afterwards, over the descriptors the worker is started with.
"""

from __future__ import annotations

import json
import os
import pickle
import struct
from typing import Any

import attr

from sealgw.config import Config

#: The worker reads its L{WorkerSetup} here, then messages, a JSON object
#: a line, for as long as the main process lives: the daemon's state
#: (an object without C{kind}), and the kinds below.  The pipe is made by
#: the main process for this worker alone.
FROM_MAIN = 0
#: The worker writes L{SERVING} here once it listens.
TO_MAIN = 3
#: The first inherited listening socket; the others follow in order.
FIRST_SOCKET = 4

#: What a worker says once every listener it adopted is accepting.
SERVING = b"serving\n"

#: A message of the outbound tokens the main process holds, by upstream
#: (L{sealgw.credentials.azure.describe_for_workers}): sent to every worker
#: on each token request answered, and to a worker right after its setup.
OUTBOUND_TOKENS = "outbound_tokens"

_LENGTH = struct.Struct("!Q")


@attr.frozen
class InheritedSocket:
    """
    One listening socket a worker adopts.

    @ivar where: the listener it serves (C{listeners[0]}, C{admin}), as
        L{sealgw.daemon.Listener.where} names it.
    @ivar fd: its descriptor in the worker.
    @ivar family: its address family (C{socket.AF_INET}, ...).
    """

    where: str
    fd: int
    family: int


@attr.frozen
class WorkerSetup:
    """
    Everything a worker needs that is not on disk: the configuration the
    main process loaded and checked (so every worker, restarted ones
    included, serves the same one, secrets and all, whatever happened to
    the file since), which worker it is, and its sockets.

    @ivar index: from 0 to C{count - 1}; a restarted worker keeps its
        predecessor's.
    @ivar metrics_dir: the main process's private folder for
        prometheus_client's multiprocess files.
    """

    config: Config
    index: int
    count: int
    sockets: tuple[InheritedSocket, ...]
    metrics_dir: str


def encode_setup(setup: WorkerSetup) -> bytes:
    """
    The setup as the main process writes it: a length, then a pickle.  The
    pipe is private to the two processes, which run the same code.
    """
    data = pickle.dumps(setup, protocol=pickle.HIGHEST_PROTOCOL)
    return _LENGTH.pack(len(data)) + data


def read_setup(fd: int) -> WorkerSetup:
    """
    Read the setup from C{fd}, blocking: called once, before the reactor
    runs.

    @raise EOFError: when the main process closed the pipe first.
    """
    size = _LENGTH.unpack(_read_exactly(fd, _LENGTH.size))[0]
    setup = pickle.loads(_read_exactly(fd, size))
    if not isinstance(setup, WorkerSetup):
        raise TypeError(f"expected a WorkerSetup, got {type(setup).__name__}")
    return setup


def _read_exactly(fd: int, size: int) -> bytes:
    chunks = []
    left = size
    while left:
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            raise EOFError(f"the main process's pipe closed {left} bytes short")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def encode_state(state: dict[str, Any]) -> bytes:
    """
    The daemon's state as the main process sends it to every worker.
    """
    return json.dumps(state, separators=(",", ":")).encode("utf-8") + b"\n"


def encode_message(kind: str, body: dict[str, Any]) -> bytes:
    """
    A message of C{kind} as the main process sends it to a worker: one
    line, C{{"kind": ..., "body": ...}}.
    """
    line = json.dumps({"kind": kind, "body": body}, separators=(",", ":"))
    return line.encode("utf-8") + b"\n"
