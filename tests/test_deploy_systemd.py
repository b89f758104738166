"""
The systemd units in C{systemd/}: they verify, the service's hardening
rates 2.5 or lower in C{systemd-analyze security}, and the hardened
service still runs the gateway.

There is no systemd manager here, so the service's own lines are run under
as many of its restrictions as can be applied without one, each read from
the unit file:

  - C{ProtectSystem=strict} with its C{StateDirectory=}: a private mount
    namespace whose root is read-only, the state directory writable;
  - C{CapabilityBoundingSet=} (empty), C{AmbientCapabilities=},
    C{NoNewPrivileges=}: C{setpriv} empties every capability set;
  - C{SystemCallFilter=} (expanded by C{systemd-analyze syscall-filter},
    with the calls systemd always allows), C{SystemCallErrorNumber=},
    C{SystemCallArchitectures=native}, C{MemoryDenyWriteExecute=},
    C{RestrictAddressFamilies=} and C{RestrictNamespaces=}: seccomp
    filters built the way systemd builds them (one filter each);
  - C{UMask=}, C{WorkingDirectory=}, C{LimitNOFILE=}, and the socket unit's
    descriptor with C{LISTEN_FDS}/C{LISTEN_PID}.

Not applied here: C{User=} (the test's Python lives under /root, which no
other user may read: the gateway runs as root with no capability at all
instead), C{ProtectHome=} (the same reason), C{PrivateTmp=},
C{PrivateUsers=}, C{PrivateDevices=}, C{ProtectProc=}, C{ProtectKernel*=},
C{ProtectClock=}, C{ProtectHostname=}, C{LockPersonality=},
C{RestrictRealtime=} (its calls are in C{@resources}, which the filter
refuses anyway) and C{RestrictSUIDSGID=}.  sealgw touches none of what
these guard.

Run as a script (C{python tests/test_deploy_systemd.py launch SPEC}) this
module is the launcher: it loads the filters and becomes the command.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import re
import resource
import shlex
import shutil
import socket
import ssl
import subprocess
import sys
import textwrap
from typing import Any, Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SERVICE = os.path.join(ROOT, "systemd", "sealgw.service")
SOCKET = os.path.join(ROOT, "systemd", "sealgw.socket")
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")

#: The exposure score the issue asks for, at most.
MAX_EXPOSURE = 2.5

#: What systemd lets through any allow-list (systemd.exec(5), SystemCallFilter=).
ALWAYS_ALLOWED = ("execve", "exit", "exit_group", "getrlimit", "rt_sigreturn", "sigreturn")

#: Address families, by the names RestrictAddressFamilies= uses.
FAMILIES = {
    "AF_UNIX": socket.AF_UNIX,
    "AF_INET": socket.AF_INET,
    "AF_INET6": socket.AF_INET6,
    "AF_NETLINK": 16,
    "AF_PACKET": 17,
}

#: The clone flags of each namespace (RestrictNamespaces=true refuses all).
NAMESPACE_FLAGS = (
    0x00020000,  # CLONE_NEWNS
    0x02000000,  # CLONE_NEWCGROUP
    0x04000000,  # CLONE_NEWUTS
    0x08000000,  # CLONE_NEWIPC
    0x10000000,  # CLONE_NEWUSER
    0x20000000,  # CLONE_NEWPID
    0x40000000,  # CLONE_NEWNET
    0x00000080,  # CLONE_NEWTIME
)


# -- the launcher (runs in the child, before it becomes the command) ------------


def _launch(spec: dict[str, Any]) -> None:
    import errno

    import pyseccomp as seccomp

    os.umask(int(spec["umask"], 8))
    os.chdir(spec["cwd"])
    if spec.get("listen_fds"):
        os.environ["LISTEN_FDS"] = str(spec["listen_fds"])
        os.environ["LISTEN_PID"] = str(os.getpid())
        # FileDescriptorName= defaults to the socket unit's name.
        os.environ["LISTEN_FDNAMES"] = ":".join(["sealgw.socket"] * spec["listen_fds"])
    os.environ.update(spec.get("env", {}))
    error = seccomp.ERRNO(getattr(errno, spec["errno"]))

    def known(name: str) -> bool:
        try:
            seccomp.resolve_syscall(seccomp.Arch.NATIVE, name)
        except Exception:
            return False
        return True

    # SystemCallFilter=: an allow-list; anything else fails with the errno.
    calls = seccomp.SyscallFilter(defaction=error)
    for name in spec["allow"]:
        try:
            calls.add_rule(seccomp.ALLOW, name)
        except OSError:
            pass  # not a call of this architecture: systemd skips it too
    filters = [calls]

    if spec.get("mdwe"):
        # MemoryDenyWriteExecute=, as systemd writes it.
        prot_write, prot_exec, shm_exec = 0x2, 0x4, 0o100000
        mdwe = seccomp.SyscallFilter(defaction=seccomp.ALLOW)
        both = prot_write | prot_exec
        mdwe.add_rule(
            seccomp.ERRNO(errno.EPERM), "mmap", seccomp.Arg(2, seccomp.MASKED_EQ, both, both)
        )
        for name in ("mprotect", "pkey_mprotect"):
            if known(name):
                mdwe.add_rule(
                    seccomp.ERRNO(errno.EPERM),
                    name,
                    seccomp.Arg(2, seccomp.MASKED_EQ, prot_exec, prot_exec),
                )
        mdwe.add_rule(
            seccomp.ERRNO(errno.EPERM),
            "shmat",
            seccomp.Arg(2, seccomp.MASKED_EQ, shm_exec, shm_exec),
        )
        filters.append(mdwe)

    if spec.get("families") is not None:
        # RestrictAddressFamilies=: socket() of any other family fails.
        allowed = set(spec["families"])
        families = seccomp.SyscallFilter(defaction=seccomp.ALLOW)
        top = max(allowed)
        for family in range(top):
            if family not in allowed:
                families.add_rule(
                    seccomp.ERRNO(errno.EAFNOSUPPORT), "socket", seccomp.Arg(0, seccomp.EQ, family)
                )
        families.add_rule(
            seccomp.ERRNO(errno.EAFNOSUPPORT), "socket", seccomp.Arg(0, seccomp.GT, top)
        )
        filters.append(families)

    if spec.get("namespaces"):
        # RestrictNamespaces=true: no new namespace, no joining one.
        namespaces = seccomp.SyscallFilter(defaction=seccomp.ALLOW)
        for flag in NAMESPACE_FLAGS:
            for name in ("unshare", "clone"):
                namespaces.add_rule(
                    seccomp.ERRNO(errno.EPERM), name, seccomp.Arg(0, seccomp.MASKED_EQ, flag, flag)
                )
        namespaces.add_rule(seccomp.ERRNO(errno.EPERM), "setns")
        # clone3's flags are out of a filter's reach: systemd makes it
        # unavailable, and the C library falls back to clone.
        if known("clone3"):
            namespaces.add_rule(seccomp.ERRNO(errno.ENOSYS), "clone3")
        filters.append(namespaces)

    for one in reversed(filters):
        one.load()
    argv = spec["argv"]
    os.execv(argv[0], argv)


if __name__ == "__main__" and len(sys.argv) == 3 and sys.argv[1] == "launch":
    _launch(json.loads(base64.b64decode(sys.argv[2])))
    raise SystemExit(127)  # pragma: no cover -- execv does not return


# -- the tests ---------------------------------------------------------------------

import yaml  # noqa: E402
from twisted.internet import reactor  # noqa: E402
from twisted.internet.threads import deferToThread  # noqa: E402
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase  # noqa: E402

from tests.certs import CertificateAuthority  # noqa: E402
from tests.e2e_support import bearer, http_client, wait_until, with_timeout  # noqa: E402
from tests.subprocesses import Child, child_env, stop  # noqa: E402


def _require(condition: bool, message: str) -> None:
    """
    Skip when a tool is missing; in CI (where C{.ci/run} installs it)
    that is a failure.
    """
    if condition:
        return
    if os.environ.get("CI"):
        raise AssertionError(message + " -- CI is set, so this is a failure, not a skip")
    raise SkipTest(message)


def require_systemd_analyze() -> str:
    _require(
        SYSTEMD_ANALYZE is not None,
        "systemd-analyze is not on PATH (Debian: apt-get install systemd)",
    )
    assert SYSTEMD_ANALYZE is not None
    return SYSTEMD_ANALYZE


def service_settings(path: str = SERVICE) -> dict[str, list[str]]:
    """
    The [Service] section of a unit: each key's values in order (systemd
    keys may repeat).
    """
    settings: dict[str, list[str]] = {}
    section = None
    with open(path, encoding="utf-8") as f:
        for raw in f:
            line = raw.strip()
            if not line or line.startswith(("#", ";")):
                continue
            if line.startswith("["):
                section = line.strip("[]")
                continue
            if section != "Service":
                continue
            key, _, value = line.partition("=")
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def exposure(output: str) -> float:
    """
    The overall exposure level in C{systemd-analyze security} output.
    """
    found = re.search(r"Overall exposure level for \S+: ([0-9.]+)", output)
    if found is None:
        raise AssertionError(f"no exposure level in:\n{output[-2000:]}")
    return float(found.group(1))


class SecurityScoreTests(SynchronousTestCase):
    def analyze(self, path: str) -> float:
        tool = require_systemd_analyze()
        result = subprocess.run(
            [tool, "security", "--offline=true", "--no-pager", path],
            capture_output=True,
            text=True,
            timeout=60,
        )
        return exposure(result.stdout + result.stderr)

    def test_hardened(self) -> None:
        """
        systemd-analyze security rates the service 2.5 or lower.
        """
        score = self.analyze(SERVICE)
        self.assertLessEqual(score, MAX_EXPOSURE, f"sealgw.service exposure {score}")

    def test_score_is_read(self) -> None:
        """
        The check can fail: the unit without its hardening rates far worse.
        """
        directory = self.mktemp()
        os.makedirs(directory)
        weak = os.path.join(directory, "sealgw.service")
        with open(SERVICE, encoding="utf-8") as f:
            kept = [
                line
                for line in f
                if line.split("=", 1)[0]
                in (
                    "[Unit]",
                    "[Service]",
                    "[Install]",
                    "Description",
                    "Type",
                    "User",
                    "Group",
                    "ExecStart",
                    "WantedBy",
                )
                or line.startswith("[")
            ]
        with open(weak, "w", encoding="utf-8") as f:
            f.writelines(kept)
        self.assertGreater(self.analyze(weak), MAX_EXPOSURE)


class VerifyTests(SynchronousTestCase):
    def verify(self, service_text: str) -> subprocess.CompletedProcess[str]:
        """
        C{systemd-analyze verify} of both units, the service's /opt/sealgw
        virtualenv mapped to this one (the commands must exist).
        """
        tool = require_systemd_analyze()
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        venv = os.path.dirname(os.path.dirname(sys.executable))
        with open(os.path.join(directory, "sealgw.service"), "w", encoding="utf-8") as f:
            f.write(service_text.replace("/opt/sealgw/", venv + "/"))
        shutil.copy(SOCKET, directory)
        return subprocess.run(
            [
                tool,
                "verify",
                "--man=no",
                os.path.join(directory, "sealgw.service"),
                os.path.join(directory, "sealgw.socket"),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )

    def test_verify(self) -> None:
        """
        Both units verify with nothing to say: an unknown key or a bad
        value is a warning here, and a failure of this test.
        """
        with open(SERVICE, encoding="utf-8") as f:
            result = self.verify(f.read())
        self.assertEqual((result.returncode, result.stdout + result.stderr), (0, ""))

    def test_verify_complains(self) -> None:
        """
        The check can fail: a misspelt key is reported.
        """
        with open(SERVICE, encoding="utf-8") as f:
            text = f.read().replace("UMask=", "UMaks=")
        result = self.verify(text)
        self.assertIn("UMaks", result.stdout + result.stderr)


# -- the hardened service, run ---------------------------------------------------


def syscall_groups(tool: str) -> dict[str, list[str]]:
    """
    Every group C{systemd-analyze syscall-filter} lists, with its members
    (calls and other groups).
    """
    output = subprocess.run(
        [tool, "syscall-filter", "--no-pager"], capture_output=True, text=True, timeout=60
    ).stdout
    groups: dict[str, list[str]] = {}
    current: Optional[list[str]] = None
    for line in output.splitlines():
        if line.startswith("@"):
            current = groups.setdefault(line.strip(), [])
        elif line.startswith("    ") and current is not None:
            item = line.strip()
            if item and not item.startswith("#"):
                current.append(item)
        elif not line.strip():
            current = None
    return groups


def expand(items: list[str], groups: dict[str, list[str]]) -> set[str]:
    calls: set[str] = set()
    for item in items:
        if item.startswith("@"):
            calls |= expand(groups[item], groups)
        else:
            calls.add(item)
    return calls


def allowed_syscalls(settings: dict[str, list[str]], groups: dict[str, list[str]]) -> set[str]:
    """
    What the service's C{SystemCallFilter=} lines let through, as systemd
    reads them: the first line without C{~} is the allow-list, later
    C{~} lines take from it.
    """
    lines = settings.get("SystemCallFilter", [])
    if not lines or lines[0].startswith("~"):
        raise AssertionError("SystemCallFilter= should start with an allow-list")
    allowed: set[str] = set()
    for line in lines:
        if line.startswith("~"):
            allowed -= expand(line[1:].split(), groups)
        else:
            allowed |= expand(line.split(), groups)
    return allowed | set(ALWAYS_ALLOWED)


def require_sandbox() -> tuple[str, dict[str, list[str]]]:
    tool = require_systemd_analyze()
    if os.geteuid() != 0:
        raise SkipTest("running the unit's restrictions needs root (a mount namespace)")
    for program in ("unshare", "setpriv", "mount"):
        _require(shutil.which(program) is not None, f"{program} is missing (util-linux)")
    try:
        import pyseccomp  # noqa: F401
    except ImportError:
        _require(False, "pyseccomp is not installed (pip install pyseccomp)")
    return tool, syscall_groups(tool)


class Sandbox:
    """
    The restrictions of C{systemd/sealgw.service} that apply without
    systemd, for one test: L{argv} wraps a command in them.
    """

    def __init__(self, test: TestCase, state: str, **override: Any) -> None:
        tool, groups = require_sandbox()
        settings = service_settings()
        self.settings = settings
        self.state = state

        def one(key: str, default: Optional[str] = None) -> str:
            values = settings.get(key)
            if not values:
                if default is None:
                    raise AssertionError(f"sealgw.service sets no {key}=")
                return default
            return values[-1]

        test.assertEqual(one("CapabilityBoundingSet"), "", "the sandbox drops every capability")
        test.assertEqual(one("ProtectSystem"), "strict")
        test.assertEqual(one("NoNewPrivileges"), "true")
        test.assertEqual(one("SystemCallArchitectures"), "native")
        families = one("RestrictAddressFamilies").split()
        self.spec: dict[str, Any] = {
            "umask": one("UMask", "0022"),
            "errno": one("SystemCallErrorNumber", "EPERM"),
            "allow": sorted(allowed_syscalls(settings, groups)),
            "mdwe": one("MemoryDenyWriteExecute", "false") == "true",
            "families": [FAMILIES[name] for name in families],
            "namespaces": one("RestrictNamespaces", "false") == "true",
            "cwd": state,
        }
        self.spec.update(override)
        # LimitNOFILE=, as far as this machine's hard limit lets a test go
        # (raising it needs CAP_SYS_RESOURCE, which a container may lack).
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        wanted = int(one("LimitNOFILE", "1024"))
        self.nofile = str(wanted if hard == resource.RLIM_INFINITY else min(wanted, hard))
        test.assertEqual(one("WorkingDirectory"), "/var/lib/" + one("StateDirectory"))

    def argv(
        self, command: list[str], *, listen_fds: int = 0, env: Optional[dict[str, str]] = None
    ) -> list[str]:
        spec = dict(self.spec, argv=command, listen_fds=listen_fds, env=env or {})
        encoded = base64.b64encode(json.dumps(spec).encode()).decode()
        launcher = [sys.executable, os.path.abspath(__file__), "launch", encoded]
        script = (
            'mount --bind "$1" "$1" && mount -o remount,bind,ro / '
            f"&& ulimit -n {shlex.quote(self.nofile)} "
            "&& shift && exec setpriv --no-new-privs --inh-caps=-all --ambient-caps=-all "
            '--bounding-set=-all -- "$@"'
        )
        unshare = shutil.which("unshare")
        assert unshare is not None
        return [
            unshare,
            "--mount",
            "--propagation",
            "private",
            "/bin/sh",
            "-c",
            script,
            "sh",
            self.state,
            *launcher,
        ]

    def run(self, command: list[str]) -> subprocess.CompletedProcess[str]:
        argv = self.argv(command)
        return subprocess.run(argv, capture_output=True, text=True, timeout=120, env=child_env())

    def spawn(self, command: list[str], *, fds: dict[int, Any]) -> Child:
        child = Child()
        argv = self.argv(command, listen_fds=len([fd for fd in fds if fd >= 3]))
        reactor.spawnProcess(
            child, argv[0], argv, env=child_env(), childFDs={0: "w", 1: "r", 2: "r", **fds}
        )
        return child


def unit_command(settings: dict[str, list[str]], key: str, **paths: str) -> list[str]:
    """
    A command line of the unit, its /opt/sealgw virtualenv mapped to this
    one and the files in C{paths} (unit path -> test path) to the test's.
    """
    (line,) = settings[key]
    venv_bin = os.path.dirname(sys.executable)
    words = shlex.split(line.lstrip("-@+!"))
    mapped = []
    for word in words:
        if word.startswith("/opt/sealgw/bin/"):
            word = os.path.join(venv_bin, os.path.basename(word))
        mapped.append(paths.get(word, word))
    return mapped


PROBE = textwrap.dedent(
    """
    import ctypes, errno, json, mmap, os, socket
    out = {}
    out["umask"] = oct(os.umask(0o077))
    with open("/proc/self/status") as f:
        out["caps"] = [l.split()[1] for l in f if l.startswith(("CapEff", "CapPrm", "CapBnd"))]
    def fails(call):
        try:
            call()
        except OSError as e:
            return errno.errorcode.get(e.errno, str(e.errno))
        return None
    out["mmap_wx"] = fails(lambda: mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC))
    out["netlink"] = fails(lambda: socket.socket(16, socket.SOCK_RAW, 0))
    out["inet"] = fails(lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM).close())
    out["write_root"] = fails(lambda: open("/sealgw-probe", "w"))
    out["write_state"] = fails(lambda: open("probe", "w").close())
    out["setpriority"] = fails(lambda: os.setpriority(os.PRIO_PROCESS, 0, 5))
    libc = ctypes.CDLL(None, use_errno=True)
    out["unshare_user"] = None if libc.unshare(0x10000000) == 0 else errno.errorcode[ctypes.get_errno()]
    out["nofile"] = __import__("resource").getrlimit(__import__("resource").RLIMIT_NOFILE)[0]
    print(json.dumps(out))
    """
)


class SandboxTests(TestCase):
    def test_restrictions_apply(self) -> None:
        """
        The sandbox does what the unit says, so that a gateway running in
        it shows the unit works: a probe finds each restriction in force.
        """
        state = os.path.abspath(self.mktemp())
        os.makedirs(state)
        sandbox = Sandbox(self, state)
        result = sandbox.run([sys.executable, "-c", PROBE])
        self.assertEqual(result.returncode, 0, result.stderr)
        found = json.loads(result.stdout)
        self.assertEqual(
            found,
            {
                "umask": oct(int(sandbox.spec["umask"], 8)),
                "caps": ["0000000000000000"] * 3,
                "mmap_wx": "EPERM" if sandbox.spec["mdwe"] else None,
                "netlink": "EAFNOSUPPORT",
                "inet": None,
                "write_root": "EROFS",
                "write_state": None,
                "setpriority": "EPERM",
                "unshare_user": "EPERM",
                "nofile": int(sandbox.nofile),
            },
        )
        self.assertEqual(os.stat(os.path.join(state, "probe")).st_mode & 0o777, 0o600)


TOKEN = "sandboxed-token-0123456789abcdef"
NEW_TOKEN = "rotated-token-0123456789abcdef0"


class HardenedServiceTests(TestCase):
    timeout = 120

    async def test_gateway_runs_hardened(self) -> None:
        """
        The unit's ExecStartPre, ExecStart and ExecReload lines, run under
        its restrictions with a socket handed over as sealgw.socket does:
        the configuration checks, the gateway gets ready, takes a push and
        writes it (0600) under its state directory, reloads its token file
        on the unit's reload command, and drains to exit 0 on KillSignal.
        """
        base = os.path.abspath(self.mktemp())
        etc = os.path.join(base, "etc")
        state = os.path.join(base, "state")
        os.makedirs(etc)
        os.makedirs(state, mode=0o700)
        sandbox = Sandbox(self, state)
        settings = sandbox.settings

        tokens = os.path.join(etc, "bearer-tokens.yaml")
        with open(tokens, "w", encoding="utf-8") as f:
            yaml.safe_dump([{"name": "writer", "token": TOKEN, "tenants": ["team-a"]}], f)
        config = os.path.join(etc, "sealgw.yaml")
        with open(config, "w", encoding="utf-8") as f:
            yaml.safe_dump(
                {
                    "listeners": [{"endpoint": "systemd:domain=INET:index=0", "ops": True}],
                    "upstreams": {
                        "files": {"type": "file", "directory": os.path.join(state, "data")}
                    },
                    "push": {"loki": {"upstream": "files"}},
                    "auth": {"token_file": {"path": tokens, "watch_interval": "1h"}},
                    "drain_grace": "2s",
                },
                f,
            )
        paths = {"/etc/sealgw/sealgw.yaml": config}

        check = sandbox.run(unit_command(settings, "ExecStartPre", **paths))
        self.assertEqual(check.returncode, 0, check.stderr)

        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        self.addCleanup(sock.close)
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        child = sandbox.spawn(unit_command(settings, "ExecStart", **paths), fds={3: sock.fileno()})
        self.addCleanup(stop, child)
        http = http_client(self)

        async def ready() -> Optional[bool]:
            if child.exit_code is not None:
                raise AssertionError(f"the gateway exited {child.exit_code}: {child.err[-2000:]!r}")
            response = await http.get(url + "/ready", timeout=2)
            await response.content()
            return True if response.code == 200 else None

        await wait_until(ready, what="the hardened gateway to be ready")

        async def push(token: str) -> int:
            body = json.dumps(
                {
                    "streams": [
                        {
                            "stream": {"job": "hardened"},
                            "values": [["1700000000000000000", "hello"]],
                        }
                    ]
                }
            ).encode()
            response = await http.post(
                url + "/loki/api/v1/push",
                body,
                headers=bearer(token, Content_Type="application/json"),
                timeout=10,
            )
            await response.content()
            return int(response.code)

        self.assertEqual(await push(TOKEN), 204)
        written = os.path.join(state, "data", "loki", "team-a.jsonl")
        self.assertTrue(os.path.exists(written), os.listdir(state))
        self.assertEqual(os.stat(written).st_mode & 0o777, 0o600)

        # The token file is rotated and the unit's ExecReload line run.
        with open(tokens + ".new", "w", encoding="utf-8") as f:
            yaml.safe_dump([{"name": "writer", "token": NEW_TOKEN, "tenants": ["team-a"]}], f)
        os.replace(tokens + ".new", tokens)
        assert child.transport is not None
        reload = [
            w.replace("$MAINPID", str(child.transport.pid))
            for w in unit_command(settings, "ExecReload")
        ]
        self.assertEqual(subprocess.run(reload, timeout=30).returncode, 0)

        async def rotated() -> Optional[bool]:
            return True if await push(NEW_TOKEN) == 204 else None

        await wait_until(rotated, what="the reloaded token to be accepted")
        self.assertEqual(await push(TOKEN), 401)

        health = await http.get(url + "/health", timeout=5)
        self.assertEqual(health.code, 200, await health.text())

        kill_signal = settings.get("KillSignal", ["SIGTERM"])[-1]
        child.signal(kill_signal.removeprefix("SIG"))
        await with_timeout(child.ended, 30, "the gateway to drain and exit")
        self.assertEqual(child.exit_code, 0, child.err[-2000:])


def _mtls_push(ca: str, client: Any, port: int) -> int:
    """
    A Loki push over mTLS with C{client}'s certificate; its status.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(ca)
    ctx.load_cert_chain(client.certificate, client.key)
    conn = http.client.HTTPSConnection("localhost", port, context=ctx, timeout=10)
    body = json.dumps(
        {"streams": [{"stream": {"job": "mtls"}, "values": [["1700000000000000000", "hi"]]}]}
    )
    try:
        conn.request("POST", "/loki/api/v1/push", body, {"Content-Type": "application/json"})
        response = conn.getresponse()
        response.read()
        return int(response.status)
    finally:
        conn.close()


class HardenedTLSTests(TestCase):
    timeout = 120

    async def test_mtls_runs_hardened(self) -> None:
        """
        The socket unit's descriptor carrying TLS with required client
        certificates, under the unit's restrictions: OpenSSL's certificate
        checks (callbacks into Python) work without writable executable
        memory, and a client certificate's identity pushes.
        """
        base = os.path.abspath(self.mktemp())
        etc, state = os.path.join(base, "etc"), os.path.join(base, "state")
        os.makedirs(state, mode=0o700)
        ca = CertificateAuthority(etc)
        server = ca.issue("server")
        client = ca.issue("client-1", server=False, dns=(), ips=())
        sandbox = Sandbox(self, state)
        config = os.path.join(etc, "sealgw.yaml")
        with open(config, "w", encoding="utf-8") as f:
            yaml.safe_dump(
                {
                    "listeners": [
                        {
                            "endpoint": "systemd:domain=INET:index=0",
                            "tls": {
                                "certificate": server.certificate,
                                "key": server.key,
                                "client_ca": ca.certificate,
                                "client_certificates": "required",
                            },
                        }
                    ],
                    "upstreams": {
                        "files": {"type": "file", "directory": os.path.join(state, "data")}
                    },
                    "push": {"loki": {"upstream": "files"}},
                    "auth": {
                        "client_certificates": {"identities": {"client-1": {"tenants": ["team-b"]}}}
                    },
                    "drain_grace": "2s",
                },
                f,
            )
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        self.addCleanup(sock.close)
        port = sock.getsockname()[1]
        command = unit_command(sandbox.settings, "ExecStart", **{"/etc/sealgw/sealgw.yaml": config})
        child = sandbox.spawn(command, fds={3: sock.fileno()})
        self.addCleanup(stop, child)

        async def pushed() -> Optional[int]:
            if child.exit_code is not None:
                raise AssertionError(f"the gateway exited {child.exit_code}: {child.err[-2000:]!r}")
            return await deferToThread(_mtls_push, ca.certificate, client, port)

        self.assertEqual(await wait_until(pushed, what="an mTLS push"), 204)
        self.assertTrue(os.path.exists(os.path.join(state, "data", "loki", "team-b.jsonl")))
        child.signal("TERM")
        await with_timeout(child.ended, 30, "the gateway to drain and exit")
        self.assertEqual(child.exit_code, 0, child.err[-2000:])

    def test_memory_deny_write_execute(self) -> None:
        """
        Why the unit has no MemoryDenyWriteExecute=: with it, a TLS
        listener cannot even be checked, let alone started.
        """
        base = os.path.abspath(self.mktemp())
        etc, state = os.path.join(base, "etc"), os.path.join(base, "state")
        os.makedirs(state, mode=0o700)
        ca = CertificateAuthority(etc)
        server = ca.issue("server")
        config = os.path.join(etc, "sealgw.yaml")
        with open(config, "w", encoding="utf-8") as f:
            yaml.safe_dump(
                {
                    "listeners": [
                        {
                            "endpoint": "tcp:0:interface=127.0.0.1",
                            "tls": {"certificate": server.certificate, "key": server.key},
                        }
                    ]
                },
                f,
            )
        paths = {"/etc/sealgw/sealgw.yaml": config}
        settings = service_settings()
        self.assertNotIn("MemoryDenyWriteExecute", settings)
        fine = Sandbox(self, state).run(unit_command(settings, "ExecStartPre", **paths))
        self.assertEqual(fine.returncode, 0, fine.stderr)
        broken = Sandbox(self, state, mdwe=True).run(
            unit_command(settings, "ExecStartPre", **paths)
        )
        self.assertNotEqual(broken.returncode, 0)
        self.assertIn("write+execute memory", broken.stderr)
