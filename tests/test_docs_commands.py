"""
Every shell command that C{README.rst} and C{docs/*.rst} show is run here,
as the docs write it, so that a documented command cannot rot: against a
gateway on a free port (the docs' C{https://sealgw.example.com} and
C{127.0.0.1:8080} become it), with the docs' example files (their ports
made free ones), through C{sealgw} and C{twistd} of this checkout.
Commands that cannot run here are listed in L{SKIPPED}, each with why; a
new shell block the test does not know fails it until it is listed.

A command that serves (C{twistd -n sealgw ...}, C{sealgw run ...}) is
started, must answer C{/health}, and must stop on SIGTERM with status 0;
the sample generator must deliver a push; any other command must end
with status 0 (or the status given) and print what the doc shows it
printing.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Mapping
from typing import Optional

import attr
import treq
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase

from tests.docs_commands import ROOT, Command, ShellBlock, shell_blocks
from tests.subprocesses import Child, child_env, free_port, stop, wait_for


@attr.frozen
class Run:
    """
    How one shell block is run.

    @ivar shared: in the folder of the gateway the docs' requests go to
        (L{DocsGatewayTests}); otherwise in a folder of its own.
    @ivar env: environment variables the block's commands read.
    @ivar files: files to write in its folder first, by path.
    @ivar examples: example files (C{docs/examples/NAME}, ports made free)
        to copy into its folder first, by path.
    @ivar status: the exit status each command ends with.
    @ivar output: whether the output the doc shows is what the commands
        print (not when it is an illustration).
    @ivar skip: commands (or parts of a C{&&} chain) not run, by their
        beginning, with why.
    """

    shared: bool = False
    env: Mapping[str, str] = attr.field(factory=dict)
    files: Mapping[str, str] = attr.field(factory=dict)
    examples: Mapping[str, str] = attr.field(factory=dict)
    status: int = 0
    output: bool = True
    skip: Mapping[str, str] = attr.field(factory=dict)


#: The token the docs' requests carry ($TOKEN), an identity of tenant team-b.
TOKEN = "docs-token-0123456789abcdef"

BROKEN_CONFIG = """\
listeners: [{endpoint: "tcp:8080"}]
upstreams: {mimir: {url: "not a url"}}
drain_grase: 1s
"""

RUN: dict[tuple[str, str], Run] = {
    (
        "README.rst",
        "python3 -m venv .venv && .venv/bin/pip install . && .venv/bin/twistd -n sealgw",
    ): Run(
        skip={
            "python3 -m venv .venv": "the suite runs in a virtualenv with sealgw installed",
            ".venv/bin/pip install .": "installing from the checkout needs the network "
            "(build dependencies) and minutes; tests.test_twistd.PackagingTests checks "
            "what it installs",
        }
    ),
    ("README.rst", "cp docs/examples/sealgw.yaml docs/examples/bearer-tokens.yaml ."): Run(),
    (
        "README.rst",
        "twistd -n sealgw --config seal-proxy.yaml --bearer-tokens-path bearer-tokens.yaml",
    ): Run(examples={"seal-proxy.yaml": "seal-proxy.yaml", "bearer-tokens.yaml": "bearer-tokens.yaml"}),
    (
        "docs/configuration.rst",
        "twistd -n sealgw --config seal-proxy.yaml --bearer-tokens-path bearer-tokens.yaml",
    ): Run(examples={"seal-proxy.yaml": "seal-proxy.yaml", "bearer-tokens.yaml": "bearer-tokens.yaml"}),
    ("docs/auth.rst", "printf '%s' \"$TOKEN\" | sealgw hash-token"): Run(env={"TOKEN": "test"}),
    ("docs/configuration.rst", "sealgw check-config sealgw.yaml"): Run(
        files={"sealgw.yaml": BROKEN_CONFIG}, status=1
    ),
    (
        "docs/operations.rst",
        "python3 -c 'import secrets; print(secrets.token_urlsafe(32))' > new-token",
    ): Run(),
    (
        "docs/operations.rst",
        "cp /etc/sealgw/bearer-tokens.yaml /etc/sealgw/bearer-tokens.yaml.new",
    ): Run(
        examples={
            "etc/sealgw/sealgw.yaml": "sealgw.yaml",
            "etc/sealgw/bearer-tokens.yaml": "bearer-tokens.yaml",
        },
        skip={"chown root:sealgw": "needs root and the sealgw group of an installed machine"},
    ),
    (
        "docs/push.rst",
        'python -c "from sealgw.signals._relabel import IMPLEMENTATION; print(IMPLEMENTATION)"',
    ): Run(),
    ("docs/clients.rst", "printf '%s' \"$TOKEN\" > token"): Run(shared=True),
    (
        "docs/push.rst",
        "curl -sS -w '%{http_code}\\n' https://sealgw.example.com/loki/api/v1/push \\",
    ): Run(shared=True),
    (
        "docs/push.rst",
        "echo '{\"streams\": [{\"stream\": {\"job\": \"curl\"}, \"values\": "
        "[[\"'\"$(date +%s%N)\"'\", \"gzipped\"]]}]}' \\",
    ): Run(shared=True),
    ("docs/push.rst", "curl -sS https://sealgw.example.com/v1/traces \\"): Run(shared=True),
    ("docs/push.rst", "python3 - <<'EOF'"): Run(shared=True),
    ("docs/spool.rst", "sealgw spool replay-dead-letters /var/lib/sealgw/spool/mimir"): Run(
        shared=True
    ),
    # The doc's figures are an illustration; the command runs on a real spool.
    ("docs/spool.rst", "sealgw spool stats /var/lib/sealgw/spool/mimir"): Run(
        shared=True, output=False
    ),
}

SKIPPED: dict[tuple[str, str], str] = {
    ("README.rst", "bash .ci/run"): "it is the run of this suite (and installs system packages)",
    ("docs/benchmarks.rst", ".venv/bin/python bench/run.py                 # about 1.5 minutes"): (
        "a benchmark: minutes, and nginx and wrk"
    ),
    ("docs/benchmarks.rst", ".venv/bin/python bench/query.py [--duration 6] [--rounds 3] [--big-mb 10] \\"): (
        "a benchmark's synopsis (brackets are optional arguments), minutes to run"
    ),
    ("docs/benchmarks.rst", ".venv/bin/python bench/seal.py [--duration 10] [--rounds 2] \\"): (
        "a benchmark's synopsis (brackets are optional arguments), minutes to run"
    ),
    ("docs/benchmarks.rst", ".venv/bin/python bench/rw2.py [--intake-only] [--calls 200] \\"): (
        "a benchmark's synopsis (brackets are optional arguments), a minute or more to run"
    ),
    ("docs/benchmarks.rst", ".venv/bin/python bench/all.py                     # about 7 minutes"): (
        "every benchmark: minutes, and nginx and wrk"
    ),
    ("docs/benchmarks.rst", ".venv/bin/python bench/isolation.py                  # about 70 seconds"): (
        "a benchmark: a minute or more, Prometheus and wrk"
    ),
    ("docs/push.rst", "bash .ci/sanitizers .venv/bin/python"): (
        "a sanitizer build of the C extension in a copy of the tree: minutes; .ci/run runs it"
    ),
    ("docs/spool.rst", "kubectl apply -k deploy/kubernetes/overlays/spool"): (
        "needs kubectl and a cluster; tests.test_deploy_kubernetes builds the overlay"
    ),
    ("docs/deployment.rst", "kubectl kustomize deploy/kubernetes/overlays/production     # to look"): (
        "needs kubectl and a cluster; tests.test_deploy_kubernetes builds the overlays"
    ),
    ("docs/operations.rst", "useradd --system --home-dir /var/lib/sealgw --shell /usr/sbin/nologin sealgw"): (
        "installs on the machine as root (a user, /opt, /etc, systemd units); "
        "tests.test_deploy_systemd checks the units"
    ),
    ("docs/operations.rst", "python3 -m venv /opt/sealgw-0.2.0"): (
        "installs a wheel into /opt and runs as the sealgw user of an installed machine"
    ),
    ("docs/operations.rst", "ln -sfn /opt/sealgw-0.2.0 /opt/sealgw"): (
        "switches an installed machine's /opt link and restarts its systemd unit"
    ),
}


def _rewrite(text: str, replacements: Mapping[str, str], name: str) -> str:
    """
    C{text} with each replacement made; each must be there exactly once, so
    that an example changed under this test is noticed here.
    """
    for old, new in replacements.items():
        if text.count(old) != 1:
            raise AssertionError(f"docs/examples/{name}: expected {old!r} once")
        text = text.replace(old, new)
    return text


@attr.define
class Bench:
    """
    Where the docs' commands run: programs of this checkout on C{PATH}, the
    examples with free ports, and the ports and folders they use.

    @ivar port: the public listener of the examples and of the built-in
        configuration (the docs' 8080).
    @ivar admin: the examples' admin or metrics listener (the docs' 9185).
    @ivar gateway: the port of the gateway the docs' requests go to.
    """

    root: str
    port: int
    admin: int
    gateway: int
    examples: str = ""
    bin: str = ""

    def __attrs_post_init__(self) -> None:
        self.bin = os.path.join(self.root, "bin")
        os.makedirs(self.bin)
        programs = {
            "sealgw": f'exec {sys.executable} -m sealgw "$@"',
            "twistd": f"exec {sys.executable} -c "
            "'from twisted.scripts.twistd import run; run()' \"$@\"",
            "python": f'exec {sys.executable} "$@"',
            "python3": f'exec {sys.executable} "$@"',
        }
        for name, line in programs.items():
            path = os.path.join(self.bin, name)
            with open(path, "w") as f:
                f.write(f"#!/bin/sh\n{line}\n")
            os.chmod(path, 0o755)
        self.examples = os.path.join(self.root, "examples")
        os.makedirs(self.examples)
        source = os.path.join(ROOT, "docs", "examples")
        rewrites = {
            "sealgw.yaml": {
                "- endpoint: tcp:8080\n": f"- endpoint: tcp:{self.port}:interface=127.0.0.1\n",
                "endpoint: tcp:9185:interface=127.0.0.1": (
                    f"endpoint: tcp:{self.admin}:interface=127.0.0.1"
                ),
            },
            "seal-proxy.yaml": {
                "listen-address: 0.0.0.0:8000": f"listen-address: 127.0.0.1:{self.port}",
                "metrics-address: 0.0.0.0:9185": f"metrics-address: 127.0.0.1:{self.admin}",
            },
        }
        for name in os.listdir(source):
            with open(os.path.join(source, name), encoding="utf-8") as f:
                text = f.read()
            text = _rewrite(text, rewrites.get(name, {}), name)
            with open(os.path.join(self.examples, name), "w", encoding="utf-8") as f:
                f.write(text)

    def folder(self, name: str, run: Run) -> str:
        """
        A folder for a block: the examples under C{docs/examples}, and the
        block's own files.
        """
        folder = os.path.join(self.root, name)
        os.makedirs(os.path.join(folder, "docs"))
        shutil.copytree(self.examples, os.path.join(folder, "docs", "examples"))
        for path, example in run.examples.items():
            os.makedirs(os.path.dirname(os.path.join(folder, path)), exist_ok=True)
            shutil.copy(os.path.join(self.examples, example), os.path.join(folder, path))
        for path, text in run.files.items():
            with open(os.path.join(folder, path), "w") as f:
                f.write(text)
        return folder

    def substitute(self, command: str) -> str:
        """
        The command as it runs here: the docs' gateway is ours, installed
        paths are this checkout's programs and the block's folder.
        """
        for old, new in {
            "https://sealgw.example.com": f"http://127.0.0.1:{self.gateway}",
            "http://127.0.0.1:8080": f"http://127.0.0.1:{self.gateway}",
            ".venv/bin/": "",
            "/opt/sealgw/bin/": "",
            "/etc/sealgw/": "etc/sealgw/",
            "/var/lib/sealgw/spool/mimir": "spool/mimir",
        }.items():
            command = command.replace(old, new)
        if re.fullmatch(r"twistd -n sealgw", command.strip()):
            # The built-in configuration, on a free port instead of 8080.
            command = f"{command.strip()} --port {self.port}"
        return command

    def env(self, run: Run) -> dict[str, str]:
        env = child_env(**run.env)
        env["PATH"] = self.bin + os.pathsep + env.get("PATH", "")
        env.setdefault("TOKEN", TOKEN)
        return env


def _serves(command: str) -> bool:
    return command.startswith(("twistd ", "sealgw run"))


def _generates(command: str) -> bool:
    return command.startswith(("python -m sealgw.generator", "sealgw generate"))


def _skipped(command: str, run: Run) -> Optional[str]:
    for beginning, why in run.skip.items():
        if command.strip().startswith(beginning):
            return why
    return None


class _Failures:
    def __init__(self) -> None:
        self.found: list[str] = []

    def add(self, block: ShellBlock, command: str, problem: str) -> None:
        self.found.append(f"{block.where}: {command.splitlines()[0]!r}: {problem}")

    def check(self, test: TestCase) -> None:
        if self.found:
            test.fail("documented commands that failed:\n" + "\n".join(self.found))


async def _run_block(
    block: ShellBlock, run: Run, bench: Bench, folder: str, failures: _Failures
) -> None:
    env = bench.env(run)
    for command in block.commands:
        for text in (command.text, *command.alternatives):
            parts = [text]
            if run.skip and " && " in text:
                parts = text.split(" && ")
            for part in parts:
                if _skipped(part, run) is not None:
                    continue
                await _run_command(
                    block, command, bench.substitute(part), run, bench, folder, env, failures
                )


async def _run_command(
    block: ShellBlock,
    command: Command,
    text: str,
    run: Run,
    bench: Bench,
    folder: str,
    env: dict[str, str],
    failures: _Failures,
) -> None:
    if _serves(text):
        await _serve(block, text, bench, folder, env, failures)
        return
    if _generates(text):
        await _generate(block, text, folder, env, failures)
        return
    result = await deferToThread(
        subprocess.run,
        ["bash", "-o", "pipefail", "-c", text],
        cwd=folder,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=60,
    )
    if result.returncode != run.status:
        said = result.stdout[-2000:]
        failures.add(block, text, f"exit status {result.returncode}, not {run.status}: {said}")
        return
    if run.output and command.output:
        printed = [line.rstrip() for line in result.stdout.splitlines() if line.strip()]
        shown = [line.rstrip() for line in command.output]
        if printed != shown:
            failures.add(block, text, f"printed {printed!r}, the doc shows {shown!r}")


def _spawn(text: str, folder: str, env: dict[str, str]) -> Child:
    child = Child()
    # exec: the signal that stops it reaches the program, not a shell.
    reactor.spawnProcess(child, "/bin/bash", ["bash", "-c", "exec " + text], env=env, path=folder)
    return child


async def _serve(
    block: ShellBlock,
    text: str,
    bench: Bench,
    folder: str,
    env: dict[str, str],
    failures: _Failures,
) -> None:
    child = _spawn(text, folder, env)
    try:
        urls = [f"http://127.0.0.1:{port}/health" for port in (bench.port, bench.admin)]

        async def any_healthy() -> bool:
            if child.exit_code is not None:
                raise AssertionError(f"it exited ({child.exit_code})")
            for url in urls:
                try:
                    response = await treq.get(url, persistent=False, timeout=2)
                    await response.content()
                except Exception:
                    continue
                if response.code == 200:
                    return True
            return False

        try:
            await wait_for(lambda: Deferred.fromCoroutine(any_healthy()), timeout=30)
        except AssertionError as e:
            said = (child.err or child.out).decode(errors="replace").strip().splitlines()[-3:]
            failures.add(block, text, f"never answered /health ({e}): {said}")
            return
    finally:
        await stop(child)
    if child.exit_code != 0:
        failures.add(block, text, f"exit status {child.exit_code} after SIGTERM, not 0")


async def _generate(
    block: ShellBlock, text: str, folder: str, env: dict[str, str], failures: _Failures
) -> None:
    child = _spawn(text, folder, env)
    try:
        delivered = child.output_contains(b"push 1 delivered")
        timer = reactor.callLater(30, lambda: delivered.called or delivered.cancel())
        try:
            await delivered
        except Exception:
            said = (child.out + child.err).decode(errors="replace").strip().splitlines()[-3:]
            failures.add(block, text, f"delivered no push in 30s: {said}")
        if timer.active():
            timer.cancel()
    finally:
        await stop(child)


class KnownBlocksTests(SynchronousTestCase):
    def test_every_shell_block_is_run_or_skipped(self) -> None:
        """
        Each shell block of the docs is in L{RUN} or in L{SKIPPED} with a
        reason, and each entry of those names a block that is there.
        """
        blocks = {block.key: block for block in shell_blocks()}
        unknown = [
            f"{block.where}: {key[1]!r}"
            for key, block in blocks.items()
            if key not in RUN and key not in SKIPPED
        ]
        self.assertEqual(
            unknown,
            [],
            "shell commands in the docs that no test runs: add them to RUN (or, if they "
            "cannot run here, to SKIPPED with why) in tests/test_docs_commands.py",
        )
        self.assertEqual([k for k in [*RUN, *SKIPPED] if k not in blocks], [], "stale entries")
        self.assertEqual(set(RUN) & set(SKIPPED), set())
        for why in SKIPPED.values():
            self.assertTrue(why.strip())

    def test_blocks_found(self) -> None:
        """
        The reader finds commands, their output and their alternatives.
        """
        blocks = {block.key: block for block in shell_blocks()}
        readme = blocks[
            ("README.rst", "cp docs/examples/sealgw.yaml docs/examples/bearer-tokens.yaml .")
        ]
        self.assertEqual(
            [(c.text, c.alternatives) for c in readme.commands],
            [
                ("cp docs/examples/sealgw.yaml docs/examples/bearer-tokens.yaml .", ()),
                ("sealgw check-config sealgw.yaml", ()),
                ("twistd -n sealgw --config sealgw.yaml", ("sealgw run --config sealgw.yaml",)),
            ],
        )
        [check] = blocks[("docs/configuration.rst", "sealgw check-config sealgw.yaml")].commands
        self.assertEqual(check.output[-1], "sealgw.yaml: 2 problem(s)")
        heredoc = blocks[("docs/push.rst", "python3 - <<'EOF'")].commands
        self.assertEqual(heredoc[0].text.splitlines()[-1], "EOF")
        self.assertEqual([c.output for c in heredoc[1:]], [("204",), ("created", "201")])


class DocsCommandsTests(TestCase):
    timeout = 180

    def setUp(self) -> None:
        for program in ("bash", "curl", "gzip"):
            if shutil.which(program) is None:
                if os.environ.get("CI"):
                    raise AssertionError(f"CI runs the docs' commands, which need {program}")
                raise SkipTest(f"the docs' commands need {program}, which is not installed")
        self.bench = Bench(
            os.path.abspath(self.mktemp()), port=free_port(), admin=free_port(), gateway=free_port()
        )
        self.blocks = [b for b in shell_blocks() if b.key in RUN]

    async def test_commands_in_folders_of_their_own(self) -> None:
        failures = _Failures()
        for i, block in enumerate(self.blocks):
            run = RUN[block.key]
            if run.shared:
                continue
            folder = self.bench.folder(f"block-{i}", run)
            await _run_block(block, run, self.bench, folder, failures)
        failures.check(self)

    async def test_commands_against_a_gateway(self) -> None:
        """
        The docs' requests, the sample generator and the spool commands,
        against one gateway: pushes to a file upstream, remote write
        through a spool in front of an upstream that is down.
        """
        folder = self.bench.folder("gateway", Run())
        with open(os.path.join(folder, "tokens.yaml"), "w") as f:
            f.write(f"- name: docs\n  token: {TOKEN}\n  tenants: [team-b]\n")
        with open(os.path.join(folder, "gateway.yaml"), "w") as f:
            f.write(textwrap.dedent(f"""\
                listeners: [{{endpoint: "tcp:{self.bench.gateway}:interface=127.0.0.1", ops: true}}]
                upstreams:
                  files: {{type: file, directory: data}}
                  mimir:
                    url: http://127.0.0.1:{free_port()}/api/v1/push
                    spool: {{directory: spool/mimir}}
                push:
                  remote_write: {{upstream: mimir}}
                  seal: {{upstream: files}}
                  loki: {{upstream: files}}
                  otlp_traces: {{upstream: files}}
                auth: {{token_file: {{path: tokens.yaml}}}}
                drain_grace: 1s
                """))
        gateway = _spawn("sealgw run --config gateway.yaml", folder, self.bench.env(Run()))
        self.addCleanup(stop, gateway)
        url = f"http://127.0.0.1:{self.bench.gateway}/health"

        async def healthy() -> bool:
            response = await treq.get(url, persistent=False, timeout=2)
            await response.content()
            return bool(response.code == 200)

        await wait_for(lambda: Deferred.fromCoroutine(healthy()))
        failures = _Failures()
        for block in self.blocks:
            run = RUN[block.key]
            if run.shared:
                await _run_block(block, run, self.bench, folder, failures)
        failures.check(self)
