"""
The servers a benchmark run starts: the upstream (Prometheus or an nginx
sink), nginx as the reference proxy, and sealgw.  Each one listens on a
free 127.0.0.1 port, logs to a file in the run's directory, is waited for
until it answers, and is stopped with its whole process group however the
run ends: every start function puts the server's stop on the run's
C{ExitStack} before waiting for it, so one that never gets ready is
stopped too.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Optional

import attr

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
TENANT = "bench"


class StartError(Exception):
    """
    A server did not come up; the message ends with its log's last lines.
    """


def free_port() -> int:
    """
    A port nothing listens on right now.  Another process could take it
    before the server binds it; on a benchmark machine that does not happen.
    """
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:
    """
    Ask Linux to kill the child if this script dies without tearing down
    (SIGKILL, a crash): no server outlives its run.
    """
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


class Server:
    """
    One server process, in a session of its own so that Ctrl-C reaches
    only this script (which then stops the servers in order) and so that
    stopping it reaches every process it forked (nginx's workers).
    """

    def __init__(self, name: str, argv: list[str], log: Path, env: Optional[dict] = None):
        self.name = name
        self.log = log
        with open(log, "wb") as out:
            try:
                self.process = self._spawn(argv, out, env)
            except OSError as e:
                raise StartError(f"{name} could not be started ({argv[0]}): {e}") from None

    def _spawn(self, argv: list[str], out: Any, env: Optional[dict]) -> subprocess.Popen:
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=self.log.parent,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def wait_until(self, ready: Callable[[], bool], timeout: float = 30.0) -> None:
        """
        Poll C{ready} until it holds; fail early if the process exits.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise StartError(
                    f"{self.name} exited with {self.process.returncode}; "
                    f"its log ({self.log}) ends:\n{self.log_tail()}"
                )
            if ready():
                return
            time.sleep(0.1)
        raise StartError(
            f"{self.name} was not ready after {timeout:.0f}s; its log ({self.log}) "
            f"ends:\n{self.log_tail()}"
        )

    def cpu_seconds(self) -> float:
        """
        CPU time (user and system) used so far by every process of this
        server's group: nginx's work is done by its workers, not its master.
        """
        ticks = os.sysconf("SC_CLK_TCK")
        total = 0
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                text = stat.read_text()
            except OSError:
                continue
            # The command name is in parentheses and may hold spaces.
            fields = text[text.rindex(")") + 2 :].split()
            if int(fields[2]) == self.pid:  # process group
                total += int(fields[11]) + int(fields[12])  # utime + stime
        return total / ticks

    def stop(self, grace: float = 10.0) -> None:
        """
        SIGTERM the process group, then SIGKILL what is left after C{grace}.
        """
        if self.process.poll() is None:
            try:
                os.killpg(self.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.process.wait(grace)
            except subprocess.TimeoutExpired:
                pass
        # Workers may linger after their master has gone.
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            self.process.wait(grace)
        except subprocess.TimeoutExpired:
            pass


def answers(url: str, status: int = 200) -> Callable[[], bool]:
    """
    A readiness check: C{url} answers C{status} to a GET.
    """

    def check() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return bool(response.status == status)
        except urllib.error.HTTPError as e:
            return bool(e.code == status)
        except (OSError, urllib.error.URLError):
            return False

    return check


# -- the upstream ----------------------------------------------------------


def start_prometheus(workdir: Path, cleanup: ExitStack) -> tuple[Server, str]:
    """
    A real Prometheus with the remote-write receiver on, its own empty
    storage, and nothing to scrape, so that all its work is our pushes.
    Answers the server and its remote-write URL.
    """
    port = free_port()
    config = workdir / "prometheus.yml"
    config.write_text("global: {}\nscrape_configs: []\n")
    server = Server(
        "prometheus",
        [
            "prometheus",
            f"--config.file={config}",
            f"--storage.tsdb.path={workdir / 'prometheus-data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--web.enable-remote-write-receiver",
            "--log.level=warn",
        ],
        workdir / "prometheus.log",
    )
    cleanup.callback(server.stop)
    server.wait_until(answers(f"http://127.0.0.1:{port}/-/ready"))
    return server, f"http://127.0.0.1:{port}/api/v1/write"


_NGINX_COMMON = """\
# Generated by bench/processes.py for one benchmark run.
{user}worker_processes 1;
pid {prefix}/{name}.pid;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    # Clients keep their connections for the whole run, as they do with
    # sealgw (the default closes one after 1,000 requests).
    keepalive_requests 1000000;
    client_max_body_size 5m;
    # Keep bodies in memory, as sealgw does, rather than in temp files.
    client_body_buffer_size 5m;
    client_body_temp_path {prefix}/{name}-body;
    proxy_temp_path {prefix}/{name}-proxy;
{http}
}}
"""


def start_victoria_metrics(workdir: Path, cleanup: ExitStack) -> tuple[Server, str]:
    """
    A real single-node VictoriaMetrics (Debian's C{victoria-metrics}) with
    its own empty storage: it takes remote write on C{/api/v1/write} and
    answers the Prometheus query API.  Answers the server and its base URL.
    """
    port = free_port()
    server = Server(
        "victoria-metrics",
        [
            "victoria-metrics",
            f"-storageDataPath={workdir / 'victoria-metrics-data'}",
            f"-httpListenAddr=127.0.0.1:{port}",
            "-retentionPeriod=1y",
            "-loggerLevel=ERROR",
        ],
        workdir / "victoria-metrics.log",
    )
    cleanup.callback(server.stop)
    base = f"http://127.0.0.1:{port}"
    server.wait_until(answers(f"{base}/health"))
    return server, base


def start_vmauth(
    workdir: Path, cleanup: ExitStack, upstream: str, token: str
) -> tuple[Server, str]:
    """
    vmauth, VictoriaMetrics' auth proxy (Debian's C{vmauth}), doing what
    sealgw's read path does: a request without the bearer token is
    refused, one with it is relayed to C{upstream} over kept-alive
    connections.  Answers the server and its base URL.
    """
    port = free_port()
    config = workdir / "vmauth.yaml"
    config.write_text(f'users:\n  - bearer_token: "{token}"\n    url_prefix: "{upstream}"\n')
    server = Server(
        "vmauth",
        [
            "vmauth",
            f"-auth.config={config}",
            f"-httpListenAddr=127.0.0.1:{port}",
            "-loggerLevel=ERROR",
        ],
        workdir / "vmauth.log",
    )
    cleanup.callback(server.stop)
    base = f"http://127.0.0.1:{port}"
    server.wait_until(answers(f"{base}/health"))
    return server, base


def _start_nginx(name: str, workdir: Path, http: str, cleanup: ExitStack) -> Server:
    prefix = workdir / name
    prefix.mkdir()
    # As root, nginx's workers would otherwise run as nobody, who cannot
    # enter the run's private temp directory.
    user = "user root;\n" if os.geteuid() == 0 else ""
    conf = prefix / "nginx.conf"
    conf.write_text(_NGINX_COMMON.format(user=user, prefix=prefix, name=name, http=http))
    server = Server(
        name,
        [
            "nginx",
            "-c", str(conf),
            "-p", str(prefix),
            "-e", str(prefix / "error.log"),
            "-g", "daemon off;",
        ],
        workdir / f"{name}.log",
    )
    cleanup.callback(server.stop)
    return server


def start_sink(workdir: Path, cleanup: ExitStack) -> tuple[Server, str]:
    """
    The fastest upstream there is: nginx answering 204 to everything, as a
    remote-write receiver does.  It shows what the proxies cost when the
    upstream costs next to nothing.
    """
    port = free_port()
    http = f"""\
    server {{
        listen 127.0.0.1:{port};
        location / {{ return 204; }}
        location = /-/ready {{ return 200; }}
    }}"""
    server = _start_nginx("sink", workdir, http, cleanup)
    server.wait_until(answers(f"http://127.0.0.1:{port}/-/ready"))
    return server, f"http://127.0.0.1:{port}/api/v1/write"


# -- the proxies -----------------------------------------------------------


def start_nginx_proxy(
    workdir: Path, cleanup: ExitStack, upstream_url: str, token: str
) -> tuple[Server, str]:
    """
    nginx doing sealgw's job minus decoding: refuse a request without the
    right bearer token, set the tenant header, drop the client's
    credentials, and relay over pooled keep-alive connections.
    """
    port = free_port()
    host_port, _, path = upstream_url.removeprefix("http://").partition("/")
    http = f"""\
    map $http_authorization $tenant {{
        default "";
        "Bearer {token}" "{TENANT}";
    }}
    upstream remote_write {{
        server {host_port};
        keepalive 16;
    }}
    server {{
        listen 127.0.0.1:{port};
        location = /api/v1/push {{
            if ($tenant = "") {{ return 401; }}
            proxy_pass http://remote_write/{path};
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Authorization "";
            proxy_set_header X-Scope-OrgID $tenant;
        }}
        location = /-/ready {{ return 200; }}
    }}"""
    server = _start_nginx("nginx", workdir, http, cleanup)
    server.wait_until(answers(f"http://127.0.0.1:{port}/-/ready"))
    return server, f"http://127.0.0.1:{port}/api/v1/push"


def start_nginx_read_proxy(
    workdir: Path, cleanup: ExitStack, upstream: str, token: str
) -> tuple[Server, str]:
    """
    nginx doing what sealgw's read path does, minus its checks: refuse a
    request without the bearer token (a C{map}), set the tenant header,
    drop the client's credentials, relay every path to C{upstream} over
    pooled keep-alive connections, and stream the answer as it comes (no
    buffering to temporary files), the client's C{Accept-Encoding} passed
    on.  Answers the server and its base URL.
    """
    port = free_port()
    host_port = upstream.removeprefix("http://").rstrip("/")
    http = f"""\
    map $http_authorization $tenant {{
        default "";
        "Bearer {token}" "{TENANT}";
    }}
    upstream reads {{
        server {host_port};
        keepalive 16;
    }}
    server {{
        listen 127.0.0.1:{port};
        location = /-/ready {{ return 200; }}
        location / {{
            if ($tenant = "") {{ return 401; }}
            proxy_pass http://reads;
            proxy_http_version 1.1;
            proxy_buffering off;
            proxy_set_header Connection "";
            proxy_set_header Authorization "";
            proxy_set_header X-Scope-OrgID $tenant;
        }}
    }}"""
    server = _start_nginx("nginx-reads", workdir, http, cleanup)
    base = f"http://127.0.0.1:{port}"
    server.wait_until(answers(f"{base}/-/ready"))
    return server, base


def check_twistd_plugin() -> None:
    """
    Fail early and clearly if twistd would not find this checkout's
    C{sealgw} plugin (the wrong virtualenv, or PYTHONPATH not honoured).
    """
    result = subprocess.run(
        [str(VENV_BIN / "twistd"), "--help"],
        env=_sealgw_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    if not any(line.split()[:1] == ["sealgw"] for line in result.stdout.splitlines()):
        raise StartError(
            f"twistd ({VENV_BIN / 'twistd'}) does not list the sealgw plugin with "
            f"PYTHONPATH={ROOT}:\n{result.stdout[-800:]}{result.stderr[-800:]}"
        )


def relabel_implementation() -> str:
    """
    Which relabelling loop this checkout's sealgw runs: C{"c"}, or
    C{"python"} when the extension was not built in the checkout (C{python
    setup.py build_ext --inplace}; C{.ci/run} does it).
    """
    result = subprocess.run(
        [str(VENV_BIN / "python"), "-c",
         "from sealgw.signals._relabel import IMPLEMENTATION; print(IMPLEMENTATION)"],
        env=_sealgw_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    return result.stdout.strip() or "unknown"


def _sealgw_env() -> dict[str, str]:
    # The checkout, not whatever sealgw may be installed in the venv.
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def start_floor(
    workdir: Path, cleanup: ExitStack, upstream_url: str, token: str
) -> tuple[Server, str]:
    """
    bench/floor.py: the least a relay on Twisted does, as a baseline.
    """
    port = free_port()
    server = Server(
        "floor",
        [sys.executable, str(ROOT / "bench" / "floor.py"), str(port), upstream_url, token, TENANT],
        workdir / "floor.log",
    )
    cleanup.callback(server.stop)
    server.wait_until(answers(f"http://127.0.0.1:{port}/", status=405))
    return server, f"http://127.0.0.1:{port}/api/v1/push"


@attr.frozen
class SealRoute:
    """
    sealgw's C{push.seal} route, for L{start_sealgw}: the most samples per
    remote-write request it sends upstream, and the labels it adds to
    every series (seal-proxy's C{label-actions}).
    """

    batch_size: int = 500
    labels: dict[str, str] = attr.field(factory=dict)


def seal_url(push_url: str) -> str:
    """
    The seal-proxy route of the sealgw whose remote-write URL is C{push_url}.
    """
    return push_url.removesuffix("/api/v1/push") + "/publish/metrics"


def sealgw_config(
    port: int,
    admin: int,
    upstream_url: str,
    tokens: Path,
    *,
    access_log: bool = False,
    labels: Optional[dict[str, str]] = None,
    workers: int = 1,
    seal: Optional[SealRoute] = None,
    tenant_label: Optional[str] = None,
    remote_write_version: int = 1,
) -> str:
    """
    The configuration L{start_sealgw} runs sealgw with.
    """
    base, _, path = upstream_url.removeprefix("http://").partition("/")
    route = f"{{upstream: target, path: /{path}}}"
    if labels:
        add = ", ".join(f"{k}: {v}" for k, v in labels.items())
        route = f"{{upstream: target, path: /{path}, labels: {{add: {{{add}}}}}}}"
    seal_route = ""
    if seal is not None:
        add = ", ".join(f"{k}: {v}" for k, v in seal.labels.items())
        seal_route = (
            f"\n  seal: {{upstream: target, path: /{path}, batch_size: {seal.batch_size}, "
            f"labels: {{add: {{{add}}}}}}}"
        )
    tenancy = f"\n    tenancy: {{label: {tenant_label}}}" if tenant_label else ""
    if remote_write_version != 1:
        tenancy += f"\n    remote_write_version: {remote_write_version}"
    return f"""\
# Generated by bench/processes.py for one benchmark run.
listeners:
  - endpoint: tcp:{port}:interface=127.0.0.1
admin:
  endpoint: tcp:{admin}:interface=127.0.0.1
workers: {workers}
log:
  access: {"true" if access_log else "false"}
upstreams:
  target:
    url: http://{base}
    max_connections: 16{tenancy}
push:
  remote_write: {route}{seal_route}
auth:
  token_file: {{path: {tokens}}}
"""


def start_sealgw(
    workdir: Path,
    cleanup: ExitStack,
    upstream_url: str,
    token: str,
    access_log: bool = False,
    name: str = "sealgw",
    labels: Optional[dict[str, str]] = None,
    workers: int = 1,
    seal: Optional[SealRoute] = None,
    tenant_label: Optional[str] = None,
    remote_write_version: int = 1,
) -> tuple[Server, str]:
    """
    sealgw from this checkout under twistd, C{workers} processes, with a token file
    and one remote-write route to the upstream; with C{labels}, the route
    adds them to every series (as the seal route does), which needs every
    body decoded and re-encoded; with C{tenant_label}, the upstream keeps
    tenants apart by that label (C{tenancy: {label: ...}}): the route adds
    it, set to the tenant, and judges the sample limits.  With C{seal}, the seal-proxy route
    (C{/publish/metrics}, see L{seal_url}) is on too, to the same upstream
    URL.  C{remote_write_version} is the upstream's (2: remote write 2.0
    relayed as 2.0).  Answers the server and its remote-write URL.
    """
    port, admin = free_port(), free_port()
    tokens = workdir / "tokens.yaml"
    tokens.write_text(f"- name: bench\n  token: {token}\n  tenants: [{TENANT}]\n")
    config = sealgw_config(
        port, admin, upstream_url, tokens, access_log=access_log, labels=labels,
        workers=workers, seal=seal, tenant_label=tenant_label,
        remote_write_version=remote_write_version,
    )
    server = run_sealgw(workdir, cleanup, name, config, admin)
    return server, f"http://127.0.0.1:{port}/api/v1/push"


def run_sealgw(
    workdir: Path, cleanup: ExitStack, name: str, config: str, admin: int
) -> Server:
    """
    sealgw from this checkout under twistd with the configuration text
    C{config} (written to C{NAME.yaml} in C{workdir}), ready once its admin
    listener on port C{admin} answers C{/ready}.  For benches whose
    configuration is not L{sealgw_config}'s.
    """
    path = workdir / f"{name}.yaml"
    path.write_text(config)
    server = Server(
        name,
        [str(VENV_BIN / "twistd"), "-n", "--pidfile=", "sealgw", "--config", str(path)],
        workdir / f"{name}.log",
        env=_sealgw_env(),
    )
    cleanup.callback(server.stop)
    server.wait_until(answers(f"http://127.0.0.1:{admin}/ready"))
    return server
