"""
The token file: seal-proxy's C{bearer-tokens.yaml}, optionally with hashed
tokens, tenants and limits; loaded at start, swapped in whole on reload.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import sys
import types
from collections.abc import Callable, Mapping
from typing import IO, Any, Optional

import attr
import yaml
from twisted.cred.checkers import ICredentialsChecker
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from sealgw.auth._bearer import IBearerToken, token_digest
from sealgw.auth._errors import NotRecognised
from sealgw.auth._identity import Principal
from sealgw.config import (
    ConfigError,
    RateLimitConfig,
    SourceFile,
    Tenant,
    TokenFileConfig,
    structure,
)

_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")

FileSignature = tuple[int, int, int, int]
"""(device, inode, size, mtime in ns): what tells a changed file apart."""


@attr.frozen
class EntryFields:
    """
    One entry as the file writes it: a C{name} and exactly one of C{token}
    (seal-proxy's plaintext) or C{token_sha256}.
    """

    name: str
    token: Optional[str] = None
    token_sha256: Optional[str] = None
    tenants: tuple[Tenant, ...] = ()
    limits: Optional[RateLimitConfig] = None


@attr.frozen
class TokenEntry:
    """
    One identity of the token file.  Only the token's digest is kept, even
    when the file holds the plaintext.
    """

    name: str
    digest: bytes = attr.field(repr=False)
    tenants: tuple[str, ...] = ()
    limits: Optional[RateLimitConfig] = None


@attr.frozen
class TokenTable:
    """
    A whole, immutable token file.  Replacing the one reference to it is
    the only way the gateway's view of the file changes, so a request sees
    either the old file or the new one, never a mixture.
    """

    path: str
    by_digest: Mapping[bytes, TokenEntry]
    loaded_at: float
    signature: Optional[FileSignature] = None

    def lookup(self, digest: bytes) -> Optional[TokenEntry]:
        entry = self.by_digest.get(digest)
        # The dictionary finds the candidate by hash; the decision itself is
        # a constant-time comparison.
        if entry is not None and hmac.compare_digest(entry.digest, digest):
            return entry
        return None

    def __len__(self) -> int:
        return len(self.by_digest)


def _yaml_problem(source: str, e: yaml.YAMLError) -> str:
    # Only the position and the parser's own words: str(e) quotes the
    # offending line, which may be a token.
    mark = getattr(e, "problem_mark", None)
    where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
    problem = getattr(e, "problem", None) or "cannot be parsed"
    return f"{source}: not valid YAML{where}: {problem}"


def parse_token_file(text: str, source: str) -> list[TokenEntry]:
    """
    Read a token file's text.

    Each entry has a C{name} and exactly one of C{token} (seal-proxy's
    plaintext) or C{token_sha256} (64 hex digits), and optionally
    C{tenants} and C{limits}.

    @param source: how to name the file in messages.
    @raise ConfigError: naming every problem by entry index and key, never
        repeating a token.
    """
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError([_yaml_problem(source, e)]) from None
    if data is None:
        raise ConfigError([f"{source}: the file is empty (write [] for no tokens)"])
    if not isinstance(data, list):
        raise ConfigError([f"{source}: expected a list of {{name, token}} entries"])
    file = SourceFile(source)
    problems: list[str] = []
    entries: list[TokenEntry] = []
    names: dict[str, int] = {}
    digests: dict[bytes, int] = {}
    for index, item in enumerate(data):
        try:
            fields = structure(item, EntryFields, file, at=(index,))
        except ConfigError as e:
            problems.extend(e.problems)
            continue

        def problem(key: str, message: str, index: int = index) -> None:
            problems.append(f"{source}: [{index}].{key}: {message}")

        digest = _entry_digest(fields, problem)
        if fields.name in names:
            problem("name", f"duplicate of [{names[fields.name]}].name")
        else:
            names[fields.name] = index
        if digest is not None:
            if digest in digests:
                key = "token" if fields.token_sha256 is None else "token_sha256"
                other = digests[digest]
                problem(key, f"the same token as [{other}] ({entries_name(data, other)})")
            else:
                digests[digest] = index
                entries.append(_make_entry(fields.name, digest, fields.tenants, fields.limits))
    if problems:
        raise ConfigError(problems)
    return entries


def entries_name(data: list[Any], index: int) -> str:
    item = data[index]
    name = item.get("name") if isinstance(item, dict) else None
    return f"name {name!r}" if isinstance(name, str) else "unnamed"


def _entry_digest(
    fields: EntryFields, problem: Callable[[str, str], None]
) -> Optional[bytes]:
    if fields.token is not None and fields.token_sha256 is not None:
        problem("token_sha256", "give either token or token_sha256, not both")
        return None
    if fields.token_sha256 is not None:
        if not _HEX64.match(fields.token_sha256):
            problem("token_sha256", "must be 64 hexadecimal digits (see sealgw hash-token)")
            return None
        return bytes.fromhex(fields.token_sha256)
    if fields.token is None:
        problem("token", "required")
        return None
    # seal-proxy's own format: a plaintext token.
    return token_digest(fields.token)


def _make_entry(
    name: str, digest: bytes, tenants: tuple[str, ...], limits: Optional[RateLimitConfig]
) -> TokenEntry:
    return TokenEntry(name=name, digest=digest, tenants=tenants, limits=limits)


def read_token_file(path: str, now: float) -> TokenTable:
    """
    Read and parse C{path} into a table; the signature is taken from the
    same open file as the text, so it describes exactly what was parsed.

    @raise ConfigError: when the file cannot be read or is not valid.
    """
    try:
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            raw = f.read()
    except OSError as e:
        raise ConfigError([f"{path}: cannot read: {e.strerror}"]) from None
    signature = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError([f"{path}: not UTF-8 text"]) from None
    entries = parse_token_file(text, path)
    table = {e.digest: e for e in entries}
    return TokenTable(
        path=path,
        by_digest=types.MappingProxyType(table),
        loaded_at=now,
        signature=signature,
    )


def _stat_signature(path: str) -> Optional[FileSignature]:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


class TokenFile:
    """
    The token file in force, with its reload and watch logic.

    @ivar table: the current L{TokenTable}; requests read it once.
    @ivar last_error: why the latest reload failed, or L{None}.
    """

    log = Logger()

    def __init__(self, config: TokenFileConfig, clock: IReactorTime) -> None:
        self.path = config.path
        self.watch_interval = config.watch_interval
        self._clock = clock
        self.table: TokenTable = read_token_file(self.path, clock.seconds())
        self.last_error: Optional[str] = None
        self.reloads = 0
        self.failed_reloads = 0
        # The signature of the last file we tried, good or bad, so a broken
        # file is reported once rather than at every check.
        self._last_seen: Optional[FileSignature] = self.table.signature

    def lookup(self, digest: bytes) -> Optional[TokenEntry]:
        return self.table.lookup(digest)

    def reload(self) -> bool:
        """
        Re-read the file now; on success swap the new table in, otherwise
        keep the old one and log why.

        @return: whether the new file is now in force.
        """
        try:
            table = read_token_file(self.path, self._clock.seconds())
        except ConfigError as e:
            self._last_seen = _stat_signature(self.path)
            self.failed_reloads += 1
            self.last_error = "; ".join(e.problems)
            self.log.error(
                "token file {path} not reloaded, keeping the {entries} entries "
                "loaded before: {problems}",
                path=self.path,
                entries=len(self.table),
                problems=self.last_error,
            )
            return False
        self._last_seen = table.signature
        self.table = table
        self.last_error = None
        self.reloads += 1
        self.log.info(
            "token file {path} loaded: {entries} entries", path=self.path, entries=len(table)
        )
        return True

    def check(self) -> None:
        """
        Reload when the file changed on disk.  Called by a LoopingCall, so it
        never raises: a raising call would stop the loop for good.
        """
        try:
            signature = _stat_signature(self.path)
            if signature is None:
                if self._last_seen is not None:
                    self._last_seen = None
                    self.last_error = f"{self.path}: cannot be read"
                    self.log.error(
                        "token file {path} is gone, keeping the {entries} entries "
                        "loaded before",
                        path=self.path,
                        entries=len(self.table),
                    )
                return
            if signature != self._last_seen:
                self.reload()
        except Exception:
            self.log.failure("checking token file {path} failed", path=self.path)

    def health(self) -> dict[str, Any]:
        return {
            "status": "ok" if self.last_error is None else "degraded",
            "path": self.path,
            "entries": len(self.table),
            "loaded_at": self.table.loaded_at,
            "error": self.last_error,
        }


@implementer(ICredentialsChecker)
class TokenFileChecker:
    """
    Recognises the tokens of the token file.
    """

    credentialInterfaces = (IBearerToken,)
    name = "token_file"

    def __init__(self, token_file: TokenFile) -> None:
        self.token_file = token_file

    def requestAvatarId(self, credentials: Any) -> Deferred[Any]:
        # The avatar id is a Principal: richer than the bytes twisted.cred
        # suggests, and only ever handed to sealgw's own realm.
        entry = self.token_file.lookup(credentials.digest)
        if entry is None:
            return fail(NotRecognised())
        return succeed(Principal(self.name, entry.name, entry.tenants, entry.limits))


def hash_token_main(stdin: IO[Any], stdout: IO[str], stderr: Optional[IO[str]] = None) -> int:
    """
    C{sealgw hash-token}: print the C{token_sha256} of the token on stdin.

    Reading the token from stdin keeps it out of the shell history and the
    process list.  Surrounding whitespace (the newline C{echo} adds) is not
    part of the token.
    """
    err = stderr if stderr is not None else sys.stderr
    data = stdin.read()
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError:
            err.write("sealgw hash-token: the token is not UTF-8 text\n")
            return 1
    token = data.strip()
    if not token:
        err.write("sealgw hash-token: no token on standard input\n")
        return 1
    if any(c.isspace() for c in token):
        err.write("sealgw hash-token: a token cannot contain whitespace\n")
        return 1
    stdout.write(hashlib.sha256(token.encode("utf-8")).hexdigest() + "\n")
    return 0
