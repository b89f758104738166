"""
The token file: seal-proxy's format, hashed tokens, tenants and limits,
start-up errors, and reloading (SIGHUP and on-disk changes) without a request
ever seeing half a file.
"""

from __future__ import annotations

import hashlib
import io
import os
from typing import Any

from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from sealgw.auth import Forbidden, Identity, Unauthorized, _tokenfile, hash_token_main
from sealgw.auth._tokenfile import parse_token_file
from sealgw.config import AuthConfig, ConfigError, RateLimitConfig, Secret, TokenFileConfig
from tests.idp import admit, fake_request, make_gate

SEAL_PROXY_FILE = """\
- name: node-1
  token: s3cret-token-one
- name: node-2
  token: s3cret-token-two
"""


def sha(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class TokenFileTestsMixin:
    def write(self, text: str, name: str = "bearer-tokens.yaml") -> str:
        directory = getattr(self, "_directory", None)
        if directory is None:
            directory = self._directory = self.mktemp()  # type: ignore[attr-defined]
            os.makedirs(directory)
        path = os.path.join(directory, name)
        # Replace, as editors and config management do: a new inode.
        tmp = path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
        return path

    def gate(self, path: str, clock: Clock | None = None, **kw: Any) -> Any:
        return make_gate(
            clock=clock,
            auth=AuthConfig(token_file=TokenFileConfig(path=path, watch_interval=5.0)),
            **kw,
        )


class FormatTests(TokenFileTestsMixin, SynchronousTestCase):
    def test_seal_proxy_format(self) -> None:
        """
        seal-proxy's bearer-tokens.yaml is accepted unchanged; its
        identities get the default tenant and the default limits.
        """
        gate = self.gate(self.write(SEAL_PROXY_FILE))
        admission = self.successResultOf(admit(gate, fake_request("s3cret-token-two")))
        self.assertEqual(admission.identity.name, "node-2")
        self.assertEqual(admission.identity.checker, "token_file")
        self.assertEqual(admission.identity.tenants, frozenset(["anonymous"]))
        self.assertEqual(admission.identity.limits, RateLimitConfig())
        self.assertEqual(admission.tenant, "anonymous")

    def test_sha256_entries(self) -> None:
        """
        An entry may carry the token's SHA-256 instead of the token; the
        presented token is hashed and matched.
        """
        text = f"- name: hashed\n  token_sha256: {sha('only-the-hash')}\n"
        gate = self.gate(self.write(text))
        admission = self.successResultOf(admit(gate, fake_request("only-the-hash")))
        self.assertEqual(admission.identity.name, "hashed")
        failure = self.failureResultOf(admit(gate, fake_request(sha("only-the-hash"))))
        self.assertIsInstance(failure.value, Unauthorized)

    def test_uppercase_hex(self) -> None:
        text = f"- name: hashed\n  token_sha256: {sha('t').upper()}\n"
        gate = self.gate(self.write(text))
        self.successResultOf(admit(gate, fake_request("t")))

    def test_tenants_and_limits(self) -> None:
        text = (
            "- name: team\n"
            "  token: team-token\n"
            "  tenants: [team-a, team-b]\n"
            "  limits: {requests_per_second: 10, burst: 20, max_concurrent: 3}\n"
        )
        gate = self.gate(self.write(text))
        admission = self.successResultOf(
            admit(gate, fake_request("team-token", tenant="team-b"))
        )
        self.assertEqual(
            admission.identity,
            Identity(
                name="team",
                tenants=frozenset(["team-a", "team-b"]),
                checker="token_file",
                limits=RateLimitConfig(requests_per_second=10.0, burst=20, max_concurrent=3),
            ),
        )
        self.assertEqual(admission.tenant, "team-b")
        failure = self.failureResultOf(admit(gate, fake_request("team-token", tenant="team-c")))
        self.assertIsInstance(failure.value, Forbidden)

    def test_unknown_token(self) -> None:
        gate = self.gate(self.write(SEAL_PROXY_FILE))
        failure = self.failureResultOf(admit(gate, fake_request("s3cret-token-three")))
        self.assertIsInstance(failure.value, Unauthorized)
        self.assertEqual(failure.value.reason, "invalid_token")

    def test_comparison_is_constant_time(self) -> None:
        """
        The decision is made by hmac.compare_digest on digests.
        """
        calls = []
        real = _tokenfile.hmac.compare_digest

        def spy(a: bytes, b: bytes) -> bool:
            calls.append((a, b))
            return real(a, b)

        self.patch(_tokenfile.hmac, "compare_digest", spy)
        gate = self.gate(self.write(SEAL_PROXY_FILE))
        self.successResultOf(admit(gate, fake_request("s3cret-token-one")))
        digest = hashlib.sha256(b"s3cret-token-one").digest()
        self.assertEqual(calls, [(digest, digest)])

    def test_empty_list(self) -> None:
        gate = self.gate(self.write("[]\n"))
        self.failureResultOf(admit(gate, fake_request("anything")), Unauthorized)


class StartupErrorTests(TokenFileTestsMixin, SynchronousTestCase):
    def problems(self, text: str) -> list[str]:
        path = self.write(text)
        error = self.assertRaises(ConfigError, self.gate, path)
        return [p.replace(path, "bearer-tokens.yaml") for p in error.problems]

    def test_missing_token(self) -> None:
        problems = self.problems(
            "- {name: a, token: t1}\n- {name: b, token: t2}\n- {name: c}\n"
        )
        self.assertEqual(problems, ["bearer-tokens.yaml: [2].token: required"])

    def test_duplicate_names(self) -> None:
        problems = self.problems("- {name: a, token: t1}\n- {name: a, token: t2}\n")
        self.assertEqual(problems, ["bearer-tokens.yaml: [1].name: duplicate of [0].name"])

    def test_duplicate_tokens(self) -> None:
        """
        The same token twice is an error even when one entry has it hashed;
        the message names the entries, never the token.
        """
        problems = self.problems(
            f"- {{name: a, token: same-token}}\n- {{name: b, token_sha256: {sha('same-token')}}}\n"
        )
        self.assertEqual(
            problems, ["bearer-tokens.yaml: [1].token_sha256: the same token as [0] (name 'a')"]
        )
        self.assertNotIn("same-token", " ".join(problems))

    def test_both_token_kinds(self) -> None:
        problems = self.problems(f"- {{name: a, token: t, token_sha256: {sha('t')}}}\n")
        self.assertEqual(
            problems,
            ["bearer-tokens.yaml: [0].token_sha256: give either token or token_sha256, not both"],
        )

    def test_bad_hash(self) -> None:
        problems = self.problems("- {name: a, token_sha256: abc}\n")
        self.assertEqual(
            problems,
            [
                "bearer-tokens.yaml: [0].token_sha256: must be 64 hexadecimal digits "
                "(see sealgw hash-token)"
            ],
        )

    def test_bad_tenant_and_unknown_key(self) -> None:
        problems = self.problems("- {name: a, token: t, tenants: ['..'], tenant: x}\n")
        self.assertEqual(
            sorted(problems),
            [
                "bearer-tokens.yaml: [0].tenant: unknown key (did you mean 'tenants'?)",
                "bearer-tokens.yaml: [0].tenants[0]: tenant id cannot be '.' or '..'",
            ],
        )

    def test_bad_limits(self) -> None:
        problems = self.problems("- {name: a, token: t, limits: {burst: 0}}\n")
        self.assertEqual(problems, ["bearer-tokens.yaml: [0].limits.burst: must be at least 1"])

    def test_not_a_list(self) -> None:
        problems = self.problems("name: a\ntoken: t\n")
        self.assertEqual(
            problems, ["bearer-tokens.yaml: expected a list of {name, token} entries"]
        )

    def test_empty_file(self) -> None:
        problems = self.problems("")
        self.assertEqual(
            problems, ["bearer-tokens.yaml: the file is empty (write [] for no tokens)"]
        )

    def test_yaml_error_does_not_quote_the_file(self) -> None:
        problems = self.problems("- name: a\n  token: 'unterminated-secret\n")
        self.assertEqual(len(problems), 1)
        self.assertTrue(problems[0].startswith("bearer-tokens.yaml: not valid YAML (line "))
        self.assertNotIn("unterminated-secret", problems[0])

    def test_missing_file(self) -> None:
        path = os.path.join(self.mktemp(), "nope.yaml")
        error = self.assertRaises(ConfigError, self.gate, path)
        self.assertEqual(error.problems, [f"{path}: cannot read: No such file or directory"])

    def test_parse_only(self) -> None:
        entries = parse_token_file(SEAL_PROXY_FILE, "x.yaml")
        self.assertEqual([e.name for e in entries], ["node-1", "node-2"])
        self.assertNotIn("s3cret", repr(entries))


class ReloadTests(TokenFileTestsMixin, SynchronousTestCase):
    def setUp(self) -> None:
        self.events: list[dict] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def test_sighup_reload(self) -> None:
        path = self.write(SEAL_PROXY_FILE)
        gate = self.gate(path)
        self.write("- {name: node-3, token: s3cret-token-three}\n")
        gate.reload()
        self.assertEqual(
            self.successResultOf(admit(gate, fake_request("s3cret-token-three"))).identity.name,
            "node-3",
        )
        self.failureResultOf(admit(gate, fake_request("s3cret-token-one")), Unauthorized)
        self.assertEqual(gate.health()["token_file"]["entries"], 1)
        self.assertEqual(gate.health()["token_file"]["status"], "ok")

    def test_broken_new_file_keeps_old(self) -> None:
        """
        A new file with a problem is not used; the old one stays in force
        and the log says why.
        """
        path = self.write(SEAL_PROXY_FILE)
        gate = self.gate(path)
        self.write("- {name: node-3, token: s3cret-token-three}\n- {name: node-3}\n")
        gate.reload()
        self.successResultOf(admit(gate, fake_request("s3cret-token-one")))
        self.failureResultOf(admit(gate, fake_request("s3cret-token-three")), Unauthorized)
        health = gate.health()["token_file"]
        self.assertEqual(health["status"], "degraded")
        self.assertEqual(health["entries"], 2)
        self.assertIn("[1].token: required", health["error"])
        errors = [e for e in self.events if e.get("log_level").name == "error"]
        self.assertEqual(len(errors), 1)
        self.assertIn("[1].name: duplicate of [0].name", errors[0]["problems"])
        self.assertNotIn("s3cret", repr(errors))

    def test_change_on_disk_detected(self) -> None:
        """
        The watch LoopingCall, driven by a Clock, notices a changed file and
        loads it; an unchanged file is not read again.
        """
        clock = Clock()
        path = self.write(SEAL_PROXY_FILE)
        gate = self.gate(path, clock=clock)
        gate.startService()
        self.addCleanup(gate.stopService)
        token_file = gate.token_file
        clock.advance(5)
        self.assertEqual(token_file.reloads, 0)
        self.write("- {name: node-9, token: s3cret-token-nine}\n")
        self.successResultOf(admit(gate, fake_request("s3cret-token-one")))
        clock.advance(5)
        self.assertEqual(token_file.reloads, 1)
        self.assertEqual(
            self.successResultOf(admit(gate, fake_request("s3cret-token-nine"))).identity.name,
            "node-9",
        )
        clock.advance(5)
        self.assertEqual(token_file.reloads, 1)

    def test_broken_file_on_disk_reported_once(self) -> None:
        clock = Clock()
        path = self.write(SEAL_PROXY_FILE)
        gate = self.gate(path, clock=clock)
        gate.startService()
        self.addCleanup(gate.stopService)
        self.write("- {name: x}\n")
        for _ in range(4):
            clock.advance(5)
        self.assertEqual(gate.token_file.failed_reloads, 1)
        self.successResultOf(admit(gate, fake_request("s3cret-token-one")))
        # Fixed on disk: picked up at the next check.
        self.write("- {name: x, token: s3cret-token-x}\n")
        clock.advance(5)
        self.successResultOf(admit(gate, fake_request("s3cret-token-x")))
        self.assertEqual(gate.health()["token_file"]["status"], "ok")

    def test_deleted_file_keeps_old(self) -> None:
        clock = Clock()
        path = self.write(SEAL_PROXY_FILE)
        gate = self.gate(path, clock=clock)
        gate.startService()
        self.addCleanup(gate.stopService)
        os.remove(path)
        clock.advance(5)
        clock.advance(5)
        self.successResultOf(admit(gate, fake_request("s3cret-token-one")))
        self.assertEqual(gate.health()["token_file"]["status"], "degraded")

    def test_watch_survives_errors(self) -> None:
        """
        An unexpected error while checking is logged and the loop goes on.
        """
        clock = Clock()
        path = self.write(SEAL_PROXY_FILE)
        gate = self.gate(path, clock=clock)
        gate.startService()
        self.addCleanup(gate.stopService)

        def boom(path: str) -> None:
            raise RuntimeError("disk on fire")

        self.patch(_tokenfile, "_stat_signature", boom)
        clock.advance(5)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.patch(_tokenfile, "_stat_signature", lambda p: (0, 0, 0, 0))
        self.write("- {name: later, token: later-token}\n")
        clock.advance(5)
        self.successResultOf(admit(gate, fake_request("later-token")))

    def test_no_request_sees_half_a_file(self) -> None:
        """
        While a new file is being parsed entry by entry, requests keep
        getting the old table, whole; afterwards they get the new one, whole.
        """
        old = "".join(f"- {{name: old-{i}, token: tok-{i}, tenants: [old]}}\n" for i in range(50))
        new = "".join(f"- {{name: new-{i}, token: tok-{i}, tenants: [new]}}\n" for i in range(50))
        gate = self.gate(self.write(old))
        seen: list[tuple[str, frozenset[str]]] = []
        real = _tokenfile._make_entry

        def entry_then_traffic(*args: object, **kw: object) -> object:
            entry = real(*args, **kw)  # type: ignore[arg-type]
            # Requests arriving in the middle of the new file's parse.
            for i in range(0, 50, 7):
                a = self.successResultOf(admit(gate, fake_request(f"tok-{i}")))
                seen.append((a.identity.name, a.identity.tenants))
            return entry

        self.write(new)
        self.patch(_tokenfile, "_make_entry", entry_then_traffic)
        gate.reload()
        self.assertTrue(seen)
        for name, tenants in seen:
            self.assertTrue(name.startswith("old-"))
            self.assertEqual(tenants, frozenset(["old"]))
        for i in range(50):
            a = self.successResultOf(admit(gate, fake_request(f"tok-{i}")))
            self.assertEqual((a.identity.name, a.identity.tenants), (f"new-{i}", frozenset(["new"])))

    def test_in_flight_admissions_across_swaps(self) -> None:
        """
        Many admissions, each held open, interleaved with reloads alternating
        two files: every one of them saw one file or the other entirely.
        """
        files = [
            "".join(f"- {{name: a-{i}, token: tok-{i}, tenants: [ta]}}\n" for i in range(20)),
            "".join(f"- {{name: b-{i}, token: tok-{i}, tenants: [tb]}}\n" for i in range(20)),
        ]
        gate = self.gate(self.write(files[0]))
        admissions = []
        for round_ in range(20):
            for i in range(20):
                admissions.append(self.successResultOf(admit(gate, fake_request(f"tok-{i}"))))
            self.write(files[(round_ + 1) % 2])
            gate.reload()
        for admission in admissions:
            prefix = admission.identity.name[0]
            self.assertEqual(admission.identity.tenants, frozenset([f"t{prefix}"]))
            self.assertEqual(admission.tenant, f"t{prefix}")
            admission.release()

    def test_admissions_waiting_during_a_swap(self) -> None:
        """
        Admissions held up before the token file is consulted, while the
        file is swapped, all see the new file, whole.
        """
        from twisted.internet.defer import Deferred

        from sealgw.auth import IBearerToken
        from sealgw.auth._errors import NotRecognised

        old = "".join(f"- {{name: a-{i}, token: tok-{i}, tenants: [ta]}}\n" for i in range(20))
        new = "".join(f"- {{name: b-{i}, token: tok-{i}, tenants: [tb]}}\n" for i in range(20))
        gate = self.gate(self.write(old))
        held: list[Deferred[object]] = []

        class Slow:
            credentialInterfaces = (IBearerToken,)
            name = "slow"

            def requestAvatarId(self, credentials: object) -> Deferred[object]:
                d: Deferred[object] = Deferred()
                held.append(d)
                return d

        chain = gate.portal.checkers[IBearerToken]
        chain.checkers = (Slow(), *chain.checkers)
        waiting = [admit(gate, fake_request(f"tok-{i % 20}")) for i in range(100)]
        self.assertEqual(len(held), 100)
        self.write(new)
        gate.reload()
        for d in held:
            d.errback(NotRecognised())
        for i, d in enumerate(waiting):
            a = self.successResultOf(d)
            self.assertEqual(
                (a.identity.name, a.identity.tenants), (f"b-{i % 20}", frozenset(["tb"]))
            )


class DevelopmentTokenTests(SynchronousTestCase):
    def test_development_token(self) -> None:
        gate = make_gate(development_token=Secret("dev-token", "generated"))
        admission = self.successResultOf(admit(gate, fake_request("dev-token")))
        self.assertEqual(admission.identity.name, "development")
        self.assertEqual(admission.identity.checker, "development")
        self.assertEqual(admission.tenant, "anonymous")
        self.failureResultOf(admit(gate, fake_request("dev-token2")), Unauthorized)


class HashTokenTests(SynchronousTestCase):
    def test_hash(self) -> None:
        out = io.StringIO()
        self.assertEqual(hash_token_main(io.StringIO("my-token\n"), out), 0)
        self.assertEqual(out.getvalue(), sha("my-token") + "\n")

    def test_binary_stdin(self) -> None:
        out = io.StringIO()
        self.assertEqual(hash_token_main(io.BytesIO(b"my-token\r\n"), out), 0)
        self.assertEqual(out.getvalue(), sha("my-token") + "\n")

    def test_empty(self) -> None:
        out, err = io.StringIO(), io.StringIO()
        self.assertEqual(hash_token_main(io.StringIO("\n"), out, err), 1)
        self.assertEqual(out.getvalue(), "")
        self.assertEqual(err.getvalue(), "sealgw hash-token: no token on standard input\n")

    def test_hash_is_accepted(self) -> None:
        """
        What hash-token prints is what the token file accepts.
        """
        out = io.StringIO()
        hash_token_main(io.StringIO("round-trip\n"), out)
        entries = parse_token_file(f"- {{name: r, token_sha256: {out.getvalue().strip()}}}", "x")
        self.assertEqual(entries[0].digest, hashlib.sha256(b"round-trip").digest())
