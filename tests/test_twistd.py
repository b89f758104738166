"""
sealgw as users run it: the twistd plugin, the built-in default, a config
file, configuration errors, SIGTERM draining and SIGHUP, and the sealgw
command.
"""

from __future__ import annotations

import errno
import http.client
import io
import json
import os
import re
import socket
import ssl
import sys
import textwrap
from typing import Any

import treq
from twisted.internet import reactor
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.error import CannotListenError
from twisted.internet.testing import MemoryReactorClock
from twisted.internet.threads import deferToThread
from twisted.python.usage import UsageError
from twisted.trial.unittest import FailTest, SkipTest, SynchronousTestCase, TestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site

from sealgw.cli import check_config, main
from sealgw.config import default_config
from sealgw.signals import snappy_compress
from sealgw.signals.proto.remote_pb2 import WriteRequest
from sealgw.tap import Options, makeService
from tests.certs import CertificateAuthority, install
from tests.subprocesses import (
    Child,
    child_env,
    free_port,
    healthy,
    spawn,
    stop,
    twistd,
    wait_for,
)


def _write_request() -> bytes:
    req = WriteRequest()
    series = req.timeseries.add()
    series.labels.add(name="__name__", value="up")
    series.labels.add(name="job", value="drain")
    series.samples.add(value=1.0, timestamp=1_700_000_000_000)
    return snappy_compress(req.SerializeToString())


async def _started(child: Child, needle: bytes) -> None:
    """
    Wait for C{needle} in the child's output, and fail at once with what it
    said if it exits first (a port already taken, say) rather than at the
    test's timeout.
    """
    seen = child.output_contains(needle)
    await DeferredList([seen, child.ended], fireOnOneCallback=True)
    if not seen.called:
        said = (child.err.strip() or child.out.strip()).decode(errors="replace")
        last = said.splitlines()[-1] if said else "nothing"
        raise FailTest(f"twistd exited ({child.exit_code}) before saying {needle!r}: {last}")


def _served_name(ca: str, port: int) -> str:
    """
    The common name of the certificate a new TLS connection is shown.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(ca)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
            peer: Any = tls.getpeercert()
    return str(next(v for rdn in peer["subject"] for k, v in rdn if k == "commonName"))


def _https_json(ca: str, port: int, path: str) -> Any:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(ca)
    conn = http.client.HTTPSConnection("localhost", port, context=ctx, timeout=10)
    try:
        conn.request("GET", path)
        return json.loads(conn.getresponse().read())
    finally:
        conn.close()


class _HeldUpstream(Resource):
    """
    A remote-write receiver that answers only when told to.
    """

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.arrived: Deferred[None] = Deferred()
        self.release: Deferred[None] = Deferred()

    def render_POST(self, request):  # type: ignore[no-untyped-def]
        self.arrived.callback(None)

        def answer(_: object) -> None:
            request.setResponseCode(204)
            request.finish()

        self.release.addCallback(answer)
        return NOT_DONE_YET


class PluginTests(TestCase):
    timeout = 60

    async def test_twistd_lists_sealgw(self) -> None:
        child = twistd("--help")
        await child.ended
        self.assertIn(b"sealgw", child.out)
        self.assertIn(b"multi-tenant gateway", child.out)

    async def test_sealgw_help(self) -> None:
        child = twistd("sealgw", "--help")
        await child.ended
        self.assertEqual(child.exit_code, 0)
        self.assertIn(b"--config", child.out)
        self.assertIn(b"--bearer-tokens-path", child.out)


class DaemonTests(TestCase):
    timeout = 90

    def config(self, text: str) -> str:
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        path = os.path.join(directory, "sealgw.yaml")
        with open(path, "w") as f:
            f.write(textwrap.dedent(text))
        return path

    async def test_default_configuration(self) -> None:
        """
        With no --config: a token printed once with a curl example, pushes
        accepted with it and written to the data directory.  The built-in
        port (8080, L{test_default_endpoint}) may be someone's: --port 0
        lets the system pick one, and the banner names it.
        """
        workdir = os.path.abspath(self.mktemp())
        os.makedirs(workdir)
        child = twistd("sealgw", "--data-dir", "data", "--port", "0", cwd=workdir)
        self.addCleanup(stop, child)
        # The banner's last line: it comes once the port is bound.
        await _started(child, b"/health\n")
        out = child.out.decode()
        self.assertLess(out.index("listening on"), out.index("sealgw is running"))
        match = re.search(r"development token \(shown once, not logged\): (\S+)", out)
        assert match is not None, out
        token = match.group(1)
        self.assertIn("curl -sS -i -H 'Authorization: Bearer " + token, out)
        self.assertEqual(out.count(token), 2)  # the line and the curl example, not the log
        # Written to the terminal itself, not through twistd's log (which
        # --logfile would send to a file): no log line carries it.
        for line in out.splitlines():
            if token in line:
                self.assertNotIn("[stdout#", line)
        listening = re.search(r"listening on 127\.0\.0\.1:(\d+) ", out)
        assert listening is not None, out
        port = listening.group(1)
        self.assertIn(f"curl -sS http://127.0.0.1:{port}/health\n", out)
        self.assertIn(f"    http://127.0.0.1:{port}/loki/api/v1/push\n", out)
        url = f"http://127.0.0.1:{port}"
        await wait_for(lambda: Deferred.fromCoroutine(healthy(url)))
        body = json.dumps(
            {"streams": [{"stream": {"job": "demo"}, "values": [["1700000000000000000", "hi"]]}]}
        )
        response = await treq.post(
            url + "/loki/api/v1/push",
            data=body.encode(),
            headers={"Authorization": "Bearer " + token, "Content-Type": "application/json"},
            persistent=False,
        )
        self.assertEqual(response.code, 204, await response.content())
        with open(os.path.join(workdir, "data", "loki", "anonymous.jsonl")) as f:
            line = json.loads(f.readline())
        self.assertEqual(line["record"]["values"][0][1], "hi")
        await stop(child)
        self.assertEqual(child.exit_code, 0)
        self.assertNotIn(token.encode(), child.err)

    async def test_sealgw_run(self) -> None:
        """
        C{sealgw run} takes twistd sealgw's options in each form the docs
        and users write them (C{--config F}, C{-c F}, and after C{--}), and
        serves; once listening it logs one summary of what it serves and
        where identities come from, never a token.
        """
        tokens = self.config("- name: node-1\n  token: run-token-0123456789abcdef\n")
        for form in (["--config"], ["-c"], ["--", "--config"]):
            port = free_port()
            path = self.config(
                f"""
                listeners: [{{endpoint: "tcp:{port}:interface=127.0.0.1", ops: true}}]
                upstreams: {{disk: {{type: file, directory: data}}}}
                push: {{loki: {{upstream: disk}}}}
                auth: {{token_file: {{path: {tokens}}}}}
                """
            )
            child = spawn(["-m", "sealgw", "run", *form, path])
            self.addCleanup(stop, child)
            await _started(child, b"identities:")
            url = f"http://127.0.0.1:{port}"
            await wait_for(lambda u=url: Deferred.fromCoroutine(healthy(u)))
            await stop(child)
            self.assertEqual(child.exit_code, 0, form)
            out = child.out.decode()
            summary = out[out.index("sealgw serving") :].splitlines()[:6]
            self.assertEqual(
                [line.strip() for line in summary],
                [
                    f"sealgw serving {path}",
                    f"listening: http://127.0.0.1:{port} (listeners[0], with health, "
                    "readiness and metrics)",
                    "push: loki -> disk",
                    "reads: none",
                    f"upstreams: disk (files in {os.path.join(os.path.dirname(path), 'data')})",
                    f"identities: token file {tokens}",
                ],
            )
            self.assertNotIn(b"run-token", child.out + child.err)

    async def test_drain_on_sigterm(self) -> None:
        """
        SIGTERM while a push is held by the upstream: the push still gets
        its answer, then the process exits 0.
        """
        upstream = _HeldUpstream()
        upstream_port = reactor.listenTCP(0, Site(upstream), interface="127.0.0.1")
        self.addCleanup(upstream_port.stopListening)
        tokens = self.config("- name: node-1\n  token: drain-token-0123456789\n")
        port = free_port()
        path = self.config(
            f"""
            listeners:
              - endpoint: tcp:{port}:interface=127.0.0.1
                ops: true
            upstreams:
              prom:
                url: http://127.0.0.1:{upstream_port.getHost().port}/api/v1/write
            push:
              remote_write: {{upstream: prom}}
            auth:
              token_file: {{path: {tokens}}}
            drain_grace: 20s
            log: {{format: json}}
            """
        )
        child = twistd("sealgw", "--config", path)
        self.addCleanup(stop, child)
        url = f"http://127.0.0.1:{port}"
        await wait_for(lambda: Deferred.fromCoroutine(healthy(url)))
        pending = treq.post(
            url + "/api/v1/push",
            data=_write_request(),
            headers={
                "Authorization": "Bearer drain-token-0123456789",
                "Content-Type": "application/x-protobuf",
                "Content-Encoding": "snappy",
            },
            persistent=False,
        )
        await upstream.arrived
        child.signal("TERM")
        await child.output_contains(b"draining")
        self.assertIsNone(child.exit_code)
        upstream.release.callback(None)
        response = await pending
        self.assertEqual(response.code, 204)
        code = await child.ended
        self.assertEqual(code, 0)
        # JSON lines, one object each, and the token never in them.
        lines = [json.loads(line) for line in child.out.decode().splitlines() if line.startswith("{")]
        self.assertTrue(any(e.get("access") for e in lines))
        # The start-up summary: one line, its text as the message.
        [summary] = [e for e in lines if e["message"].startswith("sealgw serving ")]
        self.assertEqual(set(summary), {"time", "level", "logger", "message"})
        self.assertIn("\n  push: remote_write -> prom\n", summary["message"])
        self.assertNotIn(b"drain-token-0123456789", child.out + child.err)

    async def test_config_problems_stop_start_up(self) -> None:
        path = self.config(
            """
            listeners: [{endpoint: "tcp:0"}]
            upstreams: {mimir: {url: "not a url"}}
            drain_grase: 1s
            """
        )
        child = twistd("sealgw", "--config", path)
        code = await child.ended
        self.assertNotEqual(code, 0)
        self.assertIn(f"{path}: upstreams.mimir.url: not an http(s) URL".encode(), child.err)
        self.assertIn(f"{path}: drain_grase: unknown key".encode(), child.err)
        self.assertNotIn(b"Traceback", child.err)

    async def test_port_in_use(self) -> None:
        """
        A port held by someone else: one line on standard error naming the
        address and why, and exit status 1; no traceback, and nothing in
        the log (JSON here) that says it is listening.
        """
        taken = reactor.listenTCP(0, Site(Resource()), interface="127.0.0.1")
        self.addCleanup(taken.stopListening)
        port = taken.getHost().port
        free = free_port()
        path = self.config(
            f"""
            listeners:
              - {{endpoint: "tcp:{free}:interface=127.0.0.1"}}
              - {{endpoint: "tcp:{port}:interface=127.0.0.1"}}
            log: {{format: json}}
            """
        )
        child = twistd("sealgw", "--config", path)
        code = await child.ended
        self.assertEqual(code, 1)
        self.assertEqual(
            child.err.decode(),
            f"sealgw: cannot listen on 127.0.0.1:{port} "
            f"(listeners[1]: tcp:{port}:interface=127.0.0.1): Address already in use\n",
        )
        out = child.out.decode()
        self.assertNotIn(str(port), out)
        self.assertNotIn("Traceback", out)
        self.assertNotIn("listening on", out)
        for line in out.splitlines():
            json.loads(line)

    async def test_sighup_reloads_tls_certificate(self) -> None:
        """
        A certificate rotated on disk is served to new connections after
        SIGHUP (its watch is off here, so the signal is what did it).
        """
        ca = CertificateAuthority(self.mktemp())
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        certificate, key = os.path.join(directory, "tls.crt"), os.path.join(directory, "tls.key")
        install(ca.issue("first"), certificate, key)
        port = free_port()
        path = self.config(
            f"""
            listeners:
              - endpoint: "ssl:{port}:interface=127.0.0.1"
                ops: true
                tls: {{certificate: {certificate}, key: {key}, watch_interval: 0}}
            """
        )
        child = twistd("sealgw", "--config", path)
        self.addCleanup(stop, child)
        await _started(child, b"listening on")

        def served() -> Deferred[str]:
            return deferToThread(_served_name, ca.certificate, port)

        self.assertEqual(await served(), "first")
        install(ca.issue("second"), certificate, key)
        child.signal("HUP")
        await wait_for(lambda: served().addCallback(lambda name: name == "second"), timeout=10)
        self.assertIn(b"loaded: 'second', valid until ", child.out)

        # A broken file: "second" stays, and /health says why.
        with open(certificate, "w") as f:
            f.write("not a certificate\n")
        child.signal("HUP")
        await child.output_contains(b"not reloaded")
        self.assertEqual(await served(), "second")
        health = await deferToThread(_https_json, ca.certificate, port, "/health")
        tls = health["components"]["tls"]
        self.assertEqual(tls["status"], "degraded")
        self.assertIn("no PEM certificate", tls["listeners[0]"]["error"])


    async def test_sighup_reloads_token_file(self) -> None:
        tokens = self.config("- name: old\n  token: old-token-0123456789abcdef\n")
        port = free_port()
        path = self.config(
            f"""
            listeners: [{{endpoint: "tcp:{port}:interface=127.0.0.1", ops: true}}]
            upstreams: {{disk: {{type: file, directory: data}}}}
            push: {{loki: {{upstream: disk}}}}
            auth: {{token_file: {{path: {tokens}, watch_interval: 1h}}}}
            """
        )
        child = twistd("sealgw", "--config", path)
        self.addCleanup(stop, child)
        url = f"http://127.0.0.1:{port}"
        await wait_for(lambda: Deferred.fromCoroutine(healthy(url)))

        async def push(token: str) -> int:
            response = await treq.post(
                url + "/loki/api/v1/push",
                data=b'{"streams": []}',
                headers={"Authorization": "Bearer " + token, "Content-Type": "application/json"},
                persistent=False,
            )
            await response.content()
            return int(response.code)

        self.assertEqual(await push("new-token-0123456789abcdef"), 401)
        with open(tokens, "w") as f:
            f.write("- name: new\n  token: new-token-0123456789abcdef\n")
        child.signal("HUP")
        await child.output_contains(b"reloading")
        await wait_for(
            lambda: Deferred.fromCoroutine(push("new-token-0123456789abcdef")).addCallback(
                lambda code: code == 204
            )
        )
        self.assertEqual(await push("old-token-0123456789abcdef"), 401)

    async def test_systemd_socket_activation(self) -> None:
        """
        A socket handed over the way systemd does (descriptor 3,
        LISTEN_FDS, LISTEN_PID) is served.
        """
        import socket

        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        self.addCleanup(sock.close)
        port = sock.getsockname()[1]
        path = self.config('listeners: [{endpoint: "systemd:domain=INET:index=0", ops: true}]\n')
        child = Child()
        # LISTEN_PID must be the gateway's own pid: the shell sets it to its
        # own and then becomes the gateway with exec.
        script = (
            "LISTEN_PID=$$ LISTEN_FDS=1 LISTEN_FDNAMES=sealgw.socket exec "
            f"{sys.executable} -c 'from twisted.scripts.twistd import run; run()' "
            f"--nodaemon --pidfile= sealgw --config {path}"
        )
        reactor.spawnProcess(
            child,
            "/bin/sh",
            ["/bin/sh", "-c", script],
            env=child_env(),
            childFDs={0: "w", 1: "r", 2: "r", 3: sock.fileno()},
        )
        self.addCleanup(stop, child)
        await wait_for(lambda: Deferred.fromCoroutine(healthy(f"http://127.0.0.1:{port}")))
        await stop(child)
        self.assertEqual(child.exit_code, 0)


class CommandTests(SynchronousTestCase):
    def test_check_config_ok(self) -> None:
        path = os.path.abspath(self.mktemp())
        with open(path, "w") as f:
            f.write("listeners: [{endpoint: 'tcp:8080'}]\n")
        out, err = io.StringIO(), io.StringIO()
        self.assertEqual(check_config(path, None, out, err), 0)
        self.assertEqual(out.getvalue(), f"{path}: ok (1 listener(s), 0 upstream(s))\n")

    def test_check_config_problems(self) -> None:
        path = os.path.abspath(self.mktemp())
        with open(path, "w") as f:
            f.write("listeners: [{endpoint: 'tcp:8080'}]\nlimits: {max_body: lots}\nfoo: 1\n")
        out, err = io.StringIO(), io.StringIO()
        self.assertEqual(check_config(path, None, out, err), 1)
        self.assertEqual(
            err.getvalue().splitlines(),
            [
                f"{path}: foo: unknown key",
                f"{path}: limits.max_body: 'lots' is not a size (write it like 5MiB or 512KiB)",
                f"{path}: 2 problem(s)",
            ],
        )

    def test_check_config_bad_endpoint(self) -> None:
        path = os.path.abspath(self.mktemp())
        with open(path, "w") as f:
            f.write("listeners: [{endpoint: 'tcp:notaport'}]\n")
        out, err = io.StringIO(), io.StringIO()
        self.assertEqual(check_config(path, None, out, err), 1)
        self.assertIn("listeners[0].endpoint: 'tcp:notaport' is not a usable endpoint", err.getvalue())

    def test_check_config_systemd(self) -> None:
        """
        A systemd socket cannot exist at check time; it is not looked for.
        """
        path = os.path.abspath(self.mktemp())
        with open(path, "w") as f:
            f.write("listeners: [{endpoint: 'systemd:domain=INET:index=0'}]\n")
        self.assertEqual(check_config(path, None, io.StringIO(), io.StringIO()), 0)

    def test_examples_check(self) -> None:
        """
        Every example configuration in docs/examples is valid.
        """
        examples = os.path.join(os.path.dirname(os.path.dirname(__file__)), "docs", "examples")
        names = sorted(n for n in os.listdir(examples) if n.endswith(".yaml") and "tokens" not in n)
        self.assertTrue(names)
        for name in names:
            err = io.StringIO()
            tokens = os.path.join(examples, "bearer-tokens.yaml") if name.startswith("seal-proxy") else None
            self.assertEqual(
                check_config(os.path.join(examples, name), tokens, io.StringIO(), err),
                0,
                err.getvalue(),
            )

    def test_version(self) -> None:
        self.patch(__import__("sys"), "stdout", io.StringIO())
        self.assertEqual(main(["version"]), 0)

    def test_spool_commands_refuse_other_folders(self) -> None:
        """
        C{sealgw spool} on a folder that holds no spool (not even in a
        folder in it) says so and fails, rather than counting 0 records
        there; a spool's worker folder, or the folder above it, is taken.
        """
        directory = os.path.abspath(self.mktemp())
        os.makedirs(os.path.join(directory, "photos"))
        for action in ("stats", "replay-dead-letters"):
            out, err = io.StringIO(), io.StringIO()
            self.patch(sys, "stdout", out)
            self.patch(sys, "stderr", err)
            self.assertEqual(main(["spool", action, directory]), 1)
            self.assertEqual(
                err.getvalue(),
                f"sealgw spool {action}: {directory}: not a spool folder: neither it nor a "
                "folder in it holds a spool's files; give an upstream's spool.directory, or "
                "one worker's folder in it\n",
            )
            self.assertEqual(out.getvalue(), "")
        worker = os.path.join(directory, "worker-0")
        os.makedirs(worker)
        open(os.path.join(worker, "cursor.json"), "w").close()
        for where in (directory, worker):
            out = io.StringIO()
            self.patch(sys, "stdout", out)
            self.assertEqual(main(["spool", "stats", where]), 0)
            self.assertIn("total: 0 record(s)", out.getvalue())


def _site_packages() -> str:
    """
    Where pip installs for this interpreter, when sealgw is installed there;
    the tests are skipped where sealgw runs from a checkout only (CI always
    installs it, and fails them if it is missing).
    """
    import sysconfig

    purelib = sysconfig.get_paths()["purelib"]
    if not os.path.isfile(os.path.join(purelib, "sealgw", "__init__.py")):
        if os.environ.get("CI"):
            raise AssertionError(f"CI runs the tests with sealgw installed in {purelib}")
        raise SkipTest("sealgw is not installed in this interpreter")
    return purelib


class PackagingTests(TestCase):
    """
    What `pip install .` gives a new user, without the checkout on the path.
    """

    timeout = 60

    def test_plugin_installed(self) -> None:
        purelib = _site_packages()
        for path in (
            "twisted/plugins/sealgw_plugin.py",
            "sealgw/signals/proto/remote_pb2.py",
            "sealgw/signals/proto/remote.proto",
            "sealgw/py.typed",
        ):
            self.assertTrue(os.path.isfile(os.path.join(purelib, path)), path)

    async def test_installed_twistd_finds_plugin(self) -> None:
        _site_packages()
        elsewhere = os.path.abspath(self.mktemp())
        os.makedirs(elsewhere)
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        child = Child()
        reactor.spawnProcess(
            child,
            sys.executable,
            [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "--help"],
            env=env,
            path=elsewhere,
        )
        await child.ended
        self.assertIn(b"sealgw", child.out)


class CommandProcessTests(TestCase):
    timeout = 60

    async def test_plugin_imports_nothing_heavy(self) -> None:
        """
        twistd imports every plugin module to list them; sealgw's must not
        pull in the gateway (or a reactor) to do so.
        """
        child = spawn(
            [
                "-c",
                "import sys; import twisted.plugins.sealgw_plugin as p; "
                "print(p.sealgw.tapname, sorted(m for m in sys.modules "
                "if m.startswith('sealgw') or m == 'twisted.internet.reactor'))",
            ]
        )
        await child.ended
        self.assertEqual(child.out.decode().strip(), "sealgw []", child.err)

    async def test_hash_token(self) -> None:
        child = spawn(["-m", "sealgw", "hash-token"])
        child.transport.write(b"s3cret-token\n")  # type: ignore[attr-defined]
        child.transport.closeStdin()  # type: ignore[attr-defined]
        await child.ended
        import hashlib

        self.assertEqual(
            child.out.decode().strip(), hashlib.sha256(b"s3cret-token").hexdigest()
        )

    async def test_version(self) -> None:
        child = spawn(["-m", "sealgw", "version"])
        await child.ended
        self.assertEqual(child.out.decode().strip(), "sealgw 0.1.0")



class _BusyReactor(MemoryReactorClock):
    """
    A reactor on which every TCP port is taken.
    """

    def listenTCP(self, port, factory, backlog=50, interface=""):  # type: ignore[no-untyped-def]
        raise CannotListenError(
            interface, port, OSError(errno.EADDRINUSE, os.strerror(errno.EADDRINUSE))
        )


class BannerTests(SynchronousTestCase):
    """
    The built-in default's banner (the token and the curl example) is shown
    only once the gateway listens.  A fake reactor stands in for the real
    one, so that port 8080 is neither needed nor taken.
    """

    def make(self, fake: MemoryReactorClock, *args: str) -> tuple[Any, io.StringIO]:
        out = io.StringIO()
        self.err = io.StringIO()
        self.patch(sys, "stdout", out)
        self.patch(sys, "__stdout__", out)
        self.patch(sys, "__stderr__", self.err)
        options = Options()
        options.parseOptions(["--data-dir", os.path.abspath(self.mktemp()), *args])
        return makeService(options, fake), out

    def test_default_endpoint(self) -> None:
        """
        The built-in configuration listens on 127.0.0.1:8080, as the README
        says; --port moves it, and is refused beside --config.
        """
        self.assertEqual(
            [li.endpoint for li in default_config("data").listeners],
            ["tcp:8080:interface=127.0.0.1"],
        )
        service, _ = self.make(MemoryReactorClock(), "--port", "18080")
        self.assertEqual(
            [li.config.endpoint for li in service.listeners], ["tcp:18080:interface=127.0.0.1"]
        )
        with self.assertRaises(UsageError) as caught:
            Options().parseOptions(["--config", "sealgw.yaml", "--port", "9000"])
        self.assertIn("--port is for the built-in configuration", str(caught.exception))
        with self.assertRaises(UsageError):
            Options().parseOptions(["--port", "65536"])

    def test_banner_after_listening(self) -> None:
        fake = MemoryReactorClock()
        service, out = self.make(fake)
        self.assertEqual(out.getvalue(), "")
        service.privilegedStartService()
        service.startService()
        self.assertIn("development token (shown once, not logged)", out.getvalue())
        stopped = service.stopService()
        fake.advance(60)
        self.successResultOf(stopped)

    def test_no_banner_when_port_busy(self) -> None:
        service, out = self.make(_BusyReactor())
        with self.assertRaises(SystemExit) as caught:
            service.privilegedStartService()
        self.assertEqual(
            str(caught.exception),
            "cannot listen on 127.0.0.1:8080 "
            "(listeners[0]: tcp:8080:interface=127.0.0.1): Address already in use",
        )
        self.assertEqual(out.getvalue(), "")
        self.assertEqual(self.err.getvalue(), f"sealgw: {caught.exception}\n")
