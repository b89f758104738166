"""
The shell commands shown in C{README.rst} and C{docs/*.rst}, read from
their literal blocks, for L{tests.test_docs_commands} to run.

A literal block is a shell block when its first line is a command (a
program a reader would type: C{twistd}, C{sealgw run}, C{curl}, ...,
optionally after a C{$ } prompt).  In a shell block, each command runs
on until its quotes close, its line stops ending in a backslash and its
here-document has ended; the lines after it that are not commands are
what it printed; a comment C{# or: COMMAND} after a command is another
way to say it, and is run too.
"""

from __future__ import annotations

import glob
import os
import re
import shlex
from collections.abc import Iterator

import attr

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: Programs a line may start with to be a command.
PROGRAMS = frozenset(
    {
        "bash", "cat", "chmod", "chown", "cp", "curl", "docker", "echo", "install",
        "kubectl", "ln", "mkdir", "mv", "pip", "printf", "python", "python3",
        "runuser", "systemctl", "twistd", "useradd",
    }
)  # fmt: skip

#: What may follow C{sealgw} in a command (an output line such as a
#: benchmark table's row starts with "sealgw" too).
SEALGW_COMMANDS = frozenset(
    {"check-config", "generate", "hash-token", "run", "spool", "version", "--help"}
)

_DIRECTIVE = re.compile(r"^(\s*)\.\. (?:code-block|code|sourcecode)::\s*(\S*)\s*$")
_SHELL_LANGUAGES = frozenset({"sh", "shell", "bash", "console", "shell-session"})
_HEREDOC = re.compile(r"<<-?\s*'?\"?(\w+)'?\"?")


@attr.frozen
class Command:
    """
    One command of a shell block.

    @ivar text: the command as written, continuation lines and here-document
        included.
    @ivar output: the lines the doc shows it printing.
    @ivar alternatives: the commands of C{# or: ...} comments beside it.
    """

    text: str
    output: tuple[str, ...] = ()
    alternatives: tuple[str, ...] = ()


@attr.frozen
class ShellBlock:
    """
    A literal block of shell commands: where it is, and its commands.
    """

    path: str
    line: int
    commands: tuple[Command, ...]

    @property
    def key(self) -> tuple[str, str]:
        """
        The block's file and first command line: how the tests name it.
        """
        return (self.path, self.commands[0].text.splitlines()[0])

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"


def documents() -> list[str]:
    """
    The documents whose commands are run, relative to the checkout.
    """
    docs = glob.glob(os.path.join(ROOT, "docs", "*.rst"))
    return ["README.rst", *sorted(os.path.relpath(path, ROOT) for path in docs)]


def literal_blocks(text: str) -> Iterator[tuple[int, str, list[str]]]:
    """
    Each literal block of an reStructuredText document: its first line's
    number, its language (empty for a C{::} block) and its lines, without
    their indentation.
    """
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        directive = _DIRECTIVE.match(line)
        if not (directive or (line.rstrip().endswith("::") and not line.lstrip().startswith(".."))):
            i += 1
            continue
        base = len(line) - len(line.lstrip())
        language = directive.group(2) if directive else ""
        j = i + 1
        if directive:  # the directive's options
            while j < len(lines) and lines[j].strip().startswith(":"):
                j += 1
        while j < len(lines) and not lines[j].strip():
            j += 1
        if j >= len(lines) or len(lines[j]) - len(lines[j].lstrip()) <= base:
            i = j
            continue
        indent = len(lines[j]) - len(lines[j].lstrip())
        start = j
        body: list[str] = []
        while j < len(lines) and (
            not lines[j].strip() or len(lines[j]) - len(lines[j].lstrip()) >= indent
        ):
            body.append(lines[j][indent:])
            j += 1
        while body and not body[-1].strip():
            body.pop()
        yield start + 1, language, body
        i = j


def is_command(line: str) -> bool:
    """
    Whether C{line} (without a prompt) starts with a program a reader types.
    """
    words = line.split()
    if not words:
        return False
    program = os.path.basename(words[0])
    if program == "sealgw":
        return len(words) > 1 and words[1] in SEALGW_COMMANDS
    return program in PROGRAMS


def _complete(text: str) -> bool:
    if text.endswith("\\"):
        return False
    heredoc = _HEREDOC.search(text.splitlines()[0])
    if heredoc is not None:
        return text.splitlines()[-1].strip() == heredoc.group(1) and len(text.splitlines()) > 1
    try:
        shlex.split(text, comments=True)
    except ValueError:  # a quote still open
        return False
    return True


def shell_commands(body: list[str], prompted: bool) -> list[Command]:
    """
    The commands of a shell block's lines, with what each printed.

    @param prompted: the block writes C{$ } before each command, and every
        other line is output.
    """
    commands: list[Command] = []
    i = 0
    while i < len(body):
        line = body[i]
        stripped = line.strip()
        if prompted and line.startswith("$ "):
            line = line[2:]
        elif prompted or not is_command(line):
            if stripped.startswith("# or: ") and commands:
                last = commands[-1]
                commands[-1] = attr.evolve(
                    last, alternatives=(*last.alternatives, stripped[len("# or: "):])
                )
            elif stripped and not stripped.startswith("#") and commands:
                last = commands[-1]
                commands[-1] = attr.evolve(last, output=(*last.output, line))
            i += 1
            continue
        text = line
        i += 1
        while not _complete(text) and i < len(body):
            text += "\n" + body[i]
            i += 1
        # A trailing "# or: ..." on the command's own line.
        first, sep, alternative = text.partition("  # or: ")
        if sep and "\n" not in alternative:
            commands.append(Command(first.rstrip(), alternatives=(alternative.strip(),)))
        else:
            commands.append(Command(text))
    return commands


def shell_blocks() -> list[ShellBlock]:
    """
    Every shell block of the documents, in order.
    """
    blocks = []
    for path in documents():
        with open(os.path.join(ROOT, path), encoding="utf-8") as f:
            text = f.read()
        for line, language, body in literal_blocks(text):
            if language and language not in _SHELL_LANGUAGES:
                continue
            first = body[0] if body else ""
            prompted = first.startswith("$ ")
            if not (language in _SHELL_LANGUAGES or is_command(first[2:] if prompted else first)):
                continue
            blocks.append(ShellBlock(path, line, tuple(shell_commands(body, prompted))))
    return blocks
