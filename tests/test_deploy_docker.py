"""
The container image (C{docker/Dockerfile}), checked without a Docker
engine: its stages, what ends up in the final image and as whom it runs;
what it is built from exists and is not ignored; its health check is run
against a real gateway (healthy, unhealthy, and nobody there), and its
command starts the gateway and drains it on the stop signal.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import zipfile
from typing import Any, Optional

import attr
import yaml
from twisted.internet import reactor
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.resource import Resource
from twisted.web.server import Request

from tests.e2e_support import (
    TEST_TIMEOUT,
    http_client,
    serve,
    start_gateway,
    wait_until,
    with_timeout,
)
from tests.subprocesses import Child, child_env, free_port, stop

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCKER = os.path.join(ROOT, "docker")
DOCKERFILE = os.path.join(DOCKER, "Dockerfile")
DOCKERIGNORE = os.path.join(DOCKER, "Dockerfile.dockerignore")
SEALGW_CONFIG = os.path.join(DOCKER, "sealgw", "sealgw.yaml")


@attr.frozen
class Instruction:
    keyword: str
    arguments: str
    line: int

    def exec_form(self) -> list[str]:
        """
        The arguments as a JSON array (exec form).
        """
        value = json.loads(self.arguments)
        assert isinstance(value, list), self
        return [str(v) for v in value]


@attr.define
class Stage:
    base: str
    name: Optional[str]
    instructions: list[Instruction] = attr.Factory(list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]


def instructions(text: str) -> list[Instruction]:
    """
    A Dockerfile's instructions: comment lines dropped (also inside a
    continued instruction, as Docker does), continuations joined.
    """
    found: list[Instruction] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not pending):
            continue
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending.append(stripped[:-1].strip())
            continue
        pending.append(stripped)
        joined = " ".join(part for part in pending if part)
        keyword, _, arguments = joined.partition(" ")
        found.append(Instruction(keyword.upper(), arguments.strip(), start))
        pending = []
    assert not pending, "a continued instruction that never ends"
    return found


def stages(text: str) -> list[Stage]:
    found: list[Stage] = []
    args: dict[str, str] = {}
    for instruction in instructions(text):
        if instruction.keyword == "ARG" and not found:
            name, _, default = instruction.arguments.partition("=")
            args[name] = default
            continue
        if instruction.keyword == "FROM":
            words = instruction.arguments.split()
            base = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), words[0])
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            found.append(Stage(base, name))
            continue
        assert found, f"line {instruction.line}: {instruction.keyword} before FROM"
        found[-1].instructions.append(instruction)
    return found


def dockerfile(path: str = DOCKERFILE) -> list[Stage]:
    with open(path, encoding="utf-8") as f:
        return stages(f.read())


def _pattern(pattern: str) -> re.Pattern[str]:
    """
    A .dockerignore pattern as a regular expression: C{**/} is any number
    of folders, C{*} and C{?} stay within one.
    """
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def ignored(path: str, patterns: list[str]) -> bool:
    """
    Whether a path of the build context is left out by .dockerignore
    patterns: the last pattern matching it, or a folder it is in, decides;
    C{!} takes back in.
    """
    result = False
    parts = path.split("/")
    for pattern in patterns:
        negate = pattern.startswith("!")
        regex = _pattern(pattern.lstrip("!").strip("/"))
        if any(regex.fullmatch("/".join(parts[:i])) for i in range(1, len(parts) + 1)):
            result = not negate
    return result


def dockerignore() -> list[str]:
    with open(DOCKERIGNORE, encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip() and not line.strip().startswith("#")]


class ParserTests(SynchronousTestCase):
    """
    The small Dockerfile and .dockerignore readers the checks rest on.
    """

    def test_continuations_and_comments(self) -> None:
        text = (
            'ARG B=x:1\nFROM ${B} AS one\n# c\nRUN a \\\n  # inside\n  && b\nFROM one\nCMD ["c"]\n'
        )
        parsed = stages(text)
        self.assertEqual([(s.base, s.name) for s in parsed], [("x:1", "one"), ("one", None)])
        self.assertEqual(parsed[0].instructions[0].arguments, "a && b")
        self.assertEqual(parsed[1].all("CMD")[0].exec_form(), ["c"])

    def test_ignore(self) -> None:
        patterns = ["*", "!sealgw/", "**/__pycache__"]
        self.assertTrue(ignored(".venv/bin/python", patterns))
        self.assertFalse(ignored("sealgw/cli.py", patterns))
        self.assertTrue(ignored("sealgw/__pycache__/cli.pyc", patterns))


class DockerfileTests(SynchronousTestCase):
    def test_multi_stage(self) -> None:
        """
        A build stage makes the wheels and the virtualenv, with a C
        compiler for the relabelling extension (and fails without the
        extension); the final stage is a slim Python 3.11 base with that
        virtualenv copied in, and runs no compiler, package manager install
        or pip of its own.
        """
        parsed = dockerfile()
        self.assertGreaterEqual(len(parsed), 2)
        build, final = parsed[0], parsed[-1]
        self.assertEqual(build.name, "build")
        self.assertRegex(final.base, r"^python:3\.11-slim(-[a-z]+)?$")
        self.assertEqual(build.base, final.base, "the virtualenv's python must be the same one")
        runs = " ".join(i.arguments for i in build.all("RUN"))
        self.assertIn("pip wheel", runs)
        self.assertIn("--no-index", runs, "the virtualenv installs only the wheels just built")
        self.assertIn("gcc", runs)
        self.assertIn("import sealgw.signals._relabel_c", runs)
        copies = final.all("COPY")
        self.assertEqual([c.arguments for c in copies], ["--from=build /opt/sealgw /opt/sealgw"])
        final_runs = " ".join(i.arguments for i in final.all("RUN"))
        for tool in (
            "apt-get install",
            "apk add",
            "gcc",
            "build-essential",
            "pip install",
            "pip wheel",
        ):
            self.assertNotIn(tool, final_runs)

    def test_runs_as_non_root(self) -> None:
        """
        The final stage's last USER is a numeric, non-root uid and gid (so
        Kubernetes' runAsNonRoot can check it), the one that owns the data
        folder.
        """
        final = dockerfile()[-1]
        user = final.all("USER")[-1].arguments
        self.assertRegex(user, r"^[1-9][0-9]*:[1-9][0-9]*$")
        uid = user.split(":")[0]
        runs = " ".join(i.arguments for i in final.all("RUN"))
        self.assertIn(f"--uid {uid}", runs)
        self.assertIn("-o sealgw -g sealgw -m 0700 /var/lib/sealgw", runs)

    def test_command_volume_ports(self) -> None:
        """
        The command is twistd running sealgw on /etc/sealgw/sealgw.yaml,
        without a pid file (a stale one would hold PID 1); /var/lib/sealgw
        is a volume and the working folder; the exposed ports are the demo
        configuration's listeners.
        """
        final = dockerfile()[-1]
        command = final.all("CMD")[-1].exec_form()
        self.assertEqual(
            command,
            ["twistd", "--nodaemon", "--pidfile=", "sealgw", "--config", "/etc/sealgw/sealgw.yaml"],
        )
        self.assertEqual(final.all("ENTRYPOINT"), [])
        self.assertIn("/var/lib/sealgw", final.all("VOLUME")[-1].exec_form())
        self.assertEqual(final.all("WORKDIR")[-1].arguments, "/var/lib/sealgw")
        exposed = {int(p) for i in final.all("EXPOSE") for p in i.arguments.split()}
        with open(SEALGW_CONFIG, encoding="utf-8") as f:
            config = yaml.safe_load(f)
        endpoints = [one["endpoint"] for one in config["listeners"]] + [config["admin"]["endpoint"]]
        self.assertEqual(exposed, {int(e.split(":")[1]) for e in endpoints})

    def test_healthcheck(self) -> None:
        """
        The health check asks /health with Python (no curl in the image), at
        SEALGW_HEALTH_URL, whose default is the demo's admin listener.
        """
        final = dockerfile()[-1]
        check = healthcheck_command(final)
        self.assertEqual(check[:2], ["python", "-c"])
        env = environment(final)
        with open(SEALGW_CONFIG, encoding="utf-8") as f:
            admin = yaml.safe_load(f)["admin"]["endpoint"]
        self.assertEqual(env["SEALGW_HEALTH_URL"], f"http://127.0.0.1:{admin.split(':')[1]}/health")
        self.assertIn("PATH", env)
        self.assertTrue(env["PATH"].startswith("/opt/sealgw/bin:"))

    def test_build_context(self) -> None:
        """
        What the build stage copies exists in the repository and is not
        left out of the build context by the Dockerfile's ignore file
        (BuildKit reads docker/Dockerfile.dockerignore for it), and what
        must stay out (the virtualenv, git, caches) is left out.
        """
        patterns = dockerignore()
        build = dockerfile()[0]
        for copy in build.all("COPY"):
            words = copy.arguments.split()
            for source in words[:-1]:
                self.assertTrue(os.path.exists(os.path.join(ROOT, source)), source)
                self.assertFalse(ignored(source.rstrip("/"), patterns), source)
        for path in (
            "sealgw/cli.py",
            "twisted/plugins/sealgw_plugin.py",
            "setup.cfg",
            "setup.py",
            "sealgw/signals/_relabel_c.c",
        ):
            self.assertFalse(ignored(path, patterns), path)
        for path in (
            ".venv/bin/python",
            ".git/HEAD",
            "sealgw/__pycache__/cli.cpython-311.pyc",
            "tests/test_twistd.py",
            "twisted/plugins/dropin.cache",
            # built in place for the tests: the image builds its own
            "sealgw/signals/_relabel_c.cpython-311-x86_64-linux-gnu.so",
        ):
            self.assertTrue(ignored(path, patterns), path)


def healthcheck_command(stage: Stage) -> list[str]:
    (instruction,) = stage.all("HEALTHCHECK")
    match = re.search(r"\bCMD\s+(\[.*\])\s*$", instruction.arguments)
    assert match, instruction
    return [str(v) for v in json.loads(match.group(1))]


def environment(stage: Stage) -> dict[str, str]:
    """
    The ENV of a stage (C{KEY=VALUE ...} form), unquoted.
    """
    env: dict[str, str] = {}
    for instruction in stage.all("ENV"):
        for word in shlex.split(instruction.arguments):
            key, _, value = word.partition("=")
            env[key] = value.replace("$PATH", "/usr/local/bin:/usr/bin:/bin")
    return env


class _Status(Resource):
    isLeaf = True

    def __init__(self, code: int) -> None:
        super().__init__()
        self.code = code

    def render_GET(self, request: Request) -> bytes:
        request.setResponseCode(self.code)
        return b"{}"


class HealthcheckRunTests(TestCase):
    timeout = TEST_TIMEOUT

    def run_check(self, url: str) -> Any:
        """
        The image's HEALTHCHECK command, with SEALGW_HEALTH_URL set.
        """
        command = healthcheck_command(dockerfile()[-1])
        command[0] = sys.executable
        return deferToThread(
            subprocess.run,
            command,
            capture_output=True,
            timeout=30,
            env=child_env(SEALGW_HEALTH_URL=url),
        )

    async def test_healthy_gateway(self) -> None:
        """
        A running gateway's /health: healthy (exit 0).
        """
        gateway = await start_gateway(self, {})
        result = await self.run_check(gateway.url + "/health")
        self.assertEqual(result.returncode, 0, result.stderr)

    async def test_unhealthy(self) -> None:
        """
        A /health answering 503 (a component down), and a port nobody
        listens on: unhealthy (a non-zero exit).
        """
        down = serve(self, _Status(503))
        result = await self.run_check(down.url + "/health")
        self.assertNotEqual(result.returncode, 0)
        result = await self.run_check(f"http://127.0.0.1:{free_port()}/health")
        self.assertNotEqual(result.returncode, 0)


class CommandRunTests(TestCase):
    timeout = TEST_TIMEOUT

    async def test_command_runs_and_drains(self) -> None:
        """
        The image's command (its config path pointed at a test file) starts
        the gateway, which answers /ready, and exits 0 on the image's stop
        signal.
        """
        final = dockerfile()[-1]
        command = final.all("CMD")[-1].exec_form()
        stop_signal = final.all("STOPSIGNAL")[-1].arguments
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        port = free_port()
        config = os.path.join(directory, "sealgw.yaml")
        with open(config, "w", encoding="utf-8") as f:
            yaml.safe_dump(
                {
                    "listeners": [{"endpoint": f"tcp:{port}:interface=127.0.0.1", "ops": True}],
                    "drain_grace": "2s",
                },
                f,
            )
        command = [config if word == "/etc/sealgw/sealgw.yaml" else word for word in command]
        self.assertEqual(command[0], "twistd")
        argv = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", *command[1:]]
        child = Child()
        reactor.spawnProcess(child, sys.executable, argv, env=child_env(), path=directory)
        self.addCleanup(stop, child)
        http = http_client(self)

        async def ready() -> Optional[bool]:
            if child.exit_code is not None:
                raise AssertionError(f"exited {child.exit_code}: {child.err[-1000:]!r}")
            response = await http.get(f"http://127.0.0.1:{port}/ready", timeout=2)
            await response.content()
            return True if response.code == 200 else None

        await wait_until(ready, what="the image's command to serve /ready")
        self.assertFalse(os.path.exists(os.path.join(directory, "twistd.pid")))
        child.signal(stop_signal.removeprefix("SIG"))
        await with_timeout(child.ended, 30, "the gateway to drain and exit")
        self.assertEqual(child.exit_code, 0)


class WheelTests(TestCase):
    timeout = 300

    async def test_build_stage_makes_a_complete_wheel(self) -> None:
        """
        The build stage's COPY lines bring enough to build sealgw's wheel
        (setup.cfg reads README.rst, finds the packages and the twistd
        plugin), and the wheel has what the image runs: the plugin, the
        console script, the protobuf files, and (where a compiler is sure to
        be, as in CI: C{SEALGW_REQUIRE_C_EXTENSIONS=1}) the C extension,
        built from C{setup.py}.
        """
        build = dockerfile()[0]
        context = os.path.abspath(self.mktemp())
        os.makedirs(context)
        patterns = dockerignore()
        for copy in build.all("COPY"):
            *sources, target = copy.arguments.split()
            self.assertTrue(target.startswith("./"), copy)
            for source in sources:
                # As COPY does: a folder's content goes to the target; files
                # go into a target ending in "/", or become it.
                origin = os.path.join(ROOT, source)
                destination = os.path.normpath(os.path.join(context, target))
                if os.path.isdir(origin):
                    shutil.copytree(
                        origin,
                        destination,
                        dirs_exist_ok=True,
                        ignore=lambda folder, names: [
                            n
                            for n in names
                            if ignored(os.path.relpath(os.path.join(folder, n), ROOT), patterns)
                        ],
                    )
                elif target.endswith("/"):
                    os.makedirs(destination, exist_ok=True)
                    shutil.copy(origin, destination)
                else:
                    shutil.copy(origin, destination)
        wheels = os.path.join(context, "wheels")
        result = await deferToThread(
            subprocess.run,
            [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", wheels, context],
            capture_output=True,
            text=True,
            timeout=280,
        )
        self.assertEqual(result.returncode, 0, result.stderr[-3000:])
        (name,) = [n for n in os.listdir(wheels) if n.startswith("sealgw-")]
        with zipfile.ZipFile(os.path.join(wheels, name)) as wheel:
            files = set(wheel.namelist())
            entry_points = next(f for f in files if f.endswith(".dist-info/entry_points.txt"))
            scripts = wheel.read(entry_points).decode()
        for path in (
            "twisted/plugins/sealgw_plugin.py",
            "sealgw/tap.py",
            "sealgw/generator/__main__.py",
            "sealgw/signals/proto/remote.proto",
            "sealgw/py.typed",
        ):
            self.assertIn(path, files)
        self.assertNotIn("twisted/__init__.py", files)
        if os.environ.get("SEALGW_REQUIRE_C_EXTENSIONS") == "1":
            self.assertTrue(
                [f for f in files if re.fullmatch(r"sealgw/signals/_relabel_c\..*\.so", f)], files
            )
        self.assertFalse([f for f in files if "__pycache__" in f or f.startswith("tests/")])
        self.assertIn("sealgw = sealgw.cli:main", scripts)
