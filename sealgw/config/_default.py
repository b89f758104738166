"""
The configuration used when C{twistd -n sealgw} is given none: a loopback
listener, a freshly generated development token and a file upstream, so a
new user can push data and see it land on disk without writing anything.
"""

from __future__ import annotations

import os
import secrets

from sealgw.config._model import (
    Config,
    FileUpstreamConfig,
    ListenerConfig,
    PushConfig,
    RemoteWriteConfig,
    RouteConfig,
    SealPushConfig,
)
from sealgw.config._secret import Secret

DEFAULT_PORT = 8080
DEFAULT_ENDPOINT = f"tcp:{DEFAULT_PORT}:interface=127.0.0.1"
DEFAULT_DATA_DIR = "sealgw-data"


def default_config(
    data_dir: str = DEFAULT_DATA_DIR, token: str | None = None, port: int | None = None
) -> Config:
    """
    A development configuration; every push route writes to C{data_dir}.

    @param port: where it listens on 127.0.0.1 instead of 8080 (0: any
        free port), for a machine where 8080 is taken.
    """
    route = RouteConfig(upstream="files")
    endpoint = DEFAULT_ENDPOINT if port is None else f"tcp:{port}:interface=127.0.0.1"
    return Config(
        source="built-in default",
        listeners=(ListenerConfig(endpoint=endpoint, ops=True),),
        upstreams={"files": FileUpstreamConfig(name="files", directory=os.path.abspath(data_dir))},
        push=PushConfig(
            remote_write=RemoteWriteConfig(route=route),
            seal=SealPushConfig(route=route),
            loki=route,
            otlp_traces=route,
            otlp_metrics=route,
            otlp_logs=route,
        ),
        development_token=Secret(token or secrets.token_urlsafe(24), "generated development token"),
        drain_grace=5.0,
    )
