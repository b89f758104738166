"""
What a PromQL query may hold before the parser sees it, counted by one
cheap scan of its text.

The parser (promql-parser, in Rust) holds the GIL while it works and
compiles every regular expression of the query's matchers, going on after
one fails; Rust's regex engine expands Unicode classes (C{\\w}, C{\\pL},
C{\\d}) into automata of some thousands of states and copies them once per
counted repetition.  A 3 KB query of 200 matchers like C{l=~"\\w{250}"}
took 24 s.  The scan reads the query as the parser's lexer does (strings,
comments), counts what makes parsing expensive, and estimates what each
regular expression compiles to, so that a query is refused, in
microseconds, with the limit it is over.
"""

from __future__ import annotations

import re

import attr

from sealgw.tenancy._errors import LabelEnforcementError

KiB = 1024

#: The largest count a repetition (C{{n}}, C{{n,m}}, C{{n,}}) may give:
#: Go's regexp, which Prometheus compiles matchers with, refuses more.
MAX_REPEAT = 1000

# What one piece of a regular expression costs to compile, in units of one
# literal character (about 0.1 microseconds), as measured with
# promql-parser 0.12: a Unicode class (\w, \W, \d, \D, \s, \S, \pL, \b)
# 20-300 microseconds, any-character (., [^a], a bracket class) about 3,
# a case-insensitive letter about 1.5.  Rounded up to powers of two.
_LITERAL = 1
_CLASS = 32
_UNICODE_CLASS = 4096

#: Regex escapes that stand for a Unicode class (or a word boundary,
#: which needs one), in a bracket or outside.
_UNICODE_ESCAPES = frozenset("wWdDsSbBpP")

_REPETITION = re.compile(r"\{(\d+)(,(\d*))?\}")
_CASE_FLAG = re.compile(r"\(\?[a-zA-Z-]*i")


@attr.frozen
class PromQLBounds:
    """
    The most a query (or a C{match[]} selector) may hold.  The defaults
    are far beyond what dashboards send and keep the costliest query they
    admit some tens of milliseconds of parsing (see docs/query.rst).

    @ivar max_query_bytes: its length in UTF-8.
    @ivar max_nesting: operators and brackets (L{nesting}); the parser
        recurses once per level on the thread's stack, and takes time
        quadratic in them.
    @ivar max_matchers: label matchers, in every selector together.
    @ivar max_regex_matchers: C{=~} and C{!~} matchers.
    @ivar max_regex_bytes: the longest regular expression, in UTF-8.
    @ivar max_regex_size: what the query's regular expressions together
        compile to, estimated in units of one literal character: a
        Unicode class (C{\\w}, C{\\d}, C{\\s}, C{\\p{..}}, their negations,
        C{\\b}) counts 4096, C{.} and a bracket class 32, each as often
        as it is repeated (C{\\w{10}} counts 40960).
    """

    max_query_bytes: int = 64 * KiB
    max_nesting: int = 256
    max_matchers: int = 1000
    max_regex_matchers: int = 100
    max_regex_bytes: int = 64 * KiB
    max_regex_size: int = 256 * KiB

    def __attrs_post_init__(self) -> None:
        for name, value in attr.asdict(self).items():
            if value < 1:
                raise ValueError(f"{name} must be at least 1, not {value}")


@attr.frozen
class QueryShape:
    """
    What the scan counted in a query.

    @ivar largest_repeat: the largest count of a repetition in its regular
        expressions.
    """

    nesting: int
    matchers: int
    regex_matchers: int
    longest_regex: int
    regex_size: int
    largest_repeat: int


def check_bounds(query: str, bounds: PromQLBounds, key: str = "query.promql") -> QueryShape:
    """
    Count what C{query} holds and refuse it past any of C{bounds}.

    @param key: where the bounds are configured, named in refusals.
    @raise LabelEnforcementError: naming the bound and its value.
    """
    check_size(query, bounds, key)
    shape = measure(query)
    if shape.nesting > bounds.max_nesting:
        raise LabelEnforcementError(
            f"the query holds more than {bounds.max_nesting} operators and brackets "
            f"({key}.max_nesting)"
        )
    _over(shape.matchers, bounds.max_matchers, "label matchers", f"{key}.max_matchers")
    _over(
        shape.regex_matchers,
        bounds.max_regex_matchers,
        "regular-expression matchers (=~, !~)",
        f"{key}.max_regex_matchers",
    )
    if shape.longest_regex > bounds.max_regex_bytes:
        raise LabelEnforcementError(
            f"a regular expression of the query is {shape.longest_regex} bytes long: the "
            f"gateway takes at most {bounds.max_regex_bytes} ({key}.max_regex_bytes)"
        )
    if shape.largest_repeat > MAX_REPEAT:
        raise LabelEnforcementError(
            f"a regular expression of the query repeats something {shape.largest_repeat} "
            f"times: Prometheus takes a count of at most {MAX_REPEAT}"
        )
    if shape.regex_size > bounds.max_regex_size:
        raise LabelEnforcementError(
            f"the query's regular expressions would compile to about {shape.regex_size} "
            f"units, more than the {bounds.max_regex_size} the gateway takes "
            f"({key}.max_regex_size; \\w, \\d, \\s, \\p{{..}} count 4096 each time they "
            "are repeated, . and [...] 32, other characters 1)"
        )
    return shape


def check_size(query: str, bounds: PromQLBounds, key: str = "query.promql") -> None:
    """
    Refuse C{query} if it is longer than C{bounds} allow: the one bound
    that costs nothing to check (the scan of L{check_bounds} costs about
    a third of a microsecond a character, so a long query is scanned
    where it is parsed, off the reactor thread).

    @raise LabelEnforcementError: naming the bound and its value.
    """
    if len(query.encode("utf-8", "surrogatepass")) > bounds.max_query_bytes:
        raise LabelEnforcementError(
            f"the query is longer than {bounds.max_query_bytes} bytes ({key}.max_query_bytes)"
        )


def _over(count: int, limit: int, what: str, name: str) -> None:
    if count > limit:
        raise LabelEnforcementError(
            f"the query holds {count} {what}: the gateway takes at most {limit} ({name})"
        )


def measure(query: str) -> QueryShape:
    """
    The shape of C{query}, read as PromQL's lexer reads it: strings
    (C{"..."} and C{'...'} with backslash escapes, C{`...`} raw) and
    comments (C{#} to the end of the line) are skipped but for the
    regular expressions, which are decoded and estimated
    (L{regex_cost}); a string left open runs to the end, for the lexer
    too.
    """
    nest = matchers = regexes = longest = total = repeat = 0
    braces = 0
    regex_next = False
    i, n = 0, len(query)
    while i < n:
        c = query[i]
        if c in "\"'`":
            start = i + 1
            i += 1
            while i < n and query[i] != c:
                i += 2 if c != "`" and query[i] == "\\" else 1
            if regex_next:
                raw = query[start:min(i, n)]
                text = raw if c == "`" else unquote(raw)
                longest = max(longest, len(text.encode("utf-8", "surrogatepass")))
                cost, largest = regex_cost(text)
                total += cost
                repeat = max(repeat, largest)
            regex_next = False
        elif c == "#":
            while i < n and query[i] != "\n":
                i += 1
        elif c not in " \t\r\n":
            # Any other token ends the wait for a matcher's regex.
            regex_next = False
            if c in "=!":
                after = query[i + 1] if i + 1 < n else ""
                if after == "~":
                    matchers += 1
                    regexes += 1
                    regex_next = True
                    i += 1
                elif after == "=":
                    if braces and c == "!":
                        matchers += 1
                    else:
                        nest += 1
                    i += 1
                elif c == "=" and braces:
                    matchers += 1
            elif c == "{":
                braces += 1
            elif c == "}":
                braces = max(0, braces - 1)
            elif c in "([+-*/%^<>":
                nest += 1
            elif c.isalpha() or c == "_":
                start = i
                while i + 1 < n and (query[i + 1].isalnum() or query[i + 1] in "_:"):
                    i += 1
                if query[start : i + 1].lower() in ("and", "or", "unless", "atan2"):
                    nest += 1
        i += 1
    return QueryShape(nest, matchers, regexes, longest, total, repeat)


def nesting(query: str) -> int:
    """
    How many operators and opening brackets C{query} holds outside its
    strings and comments: at least the depth of its syntax tree.  A
    matcher's C{=}, C{!=}, C{=~} and C{!~} do not count (they nest
    nothing); C{==}, and C{!=} outside braces, count once.
    """
    return measure(query).nesting


_SIMPLE_ESCAPES = {
    "a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v",
    "\\": "\\", "'": "'", '"': '"',
}


def unquote(raw: str) -> str:
    """
    The text of a PromQL string literal's body (between its quotes), its
    escapes read as Go's C{strconv.Unquote} reads them: C{\\n}, C{\\xHH},
    C{\\ooo}, C{\\uHHHH}, C{\\UHHHHHHHH}.  An escape Go would refuse is kept
    as written: the parser refuses the query, and the estimate is what
    counts here.
    """
    if "\\" not in raw:
        return raw
    out: list[str] = []
    i, n = 0, len(raw)
    while i < n:
        c = raw[i]
        if c != "\\" or i + 1 >= n:
            out.append(c)
            i += 1
            continue
        e = raw[i + 1]
        width = {"x": 2, "u": 4, "U": 8}.get(e)
        if e in _SIMPLE_ESCAPES:
            out.append(_SIMPLE_ESCAPES[e])
            i += 2
        elif width is not None and _is_hex(raw[i + 2 : i + 2 + width], width):
            code = int(raw[i + 2 : i + 2 + width], 16)
            out.append(chr(code) if code <= 0x10FFFF else "\ufffd")
            i += 2 + width
        elif "0" <= e <= "7" and re.fullmatch("[0-7]{3}", raw[i + 1 : i + 4]):
            out.append(chr(int(raw[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(c)
            i += 1
    return "".join(out)


def _is_hex(text: str, width: int) -> bool:
    return len(text) == width and all(c in "0123456789abcdefABCDEF" for c in text)


def regex_cost(regex: str) -> tuple[int, int]:
    """
    What C{regex} compiles to, estimated (see L{PromQLBounds.max_regex_size}),
    and the largest count of its repetitions.

    A group costs what it holds (at least 1), a repetition C{{n,m}}
    multiplies what it repeats by its largest count (C{{n,}} by C{n + 1});
    C{*}, C{+} and C{?} compile what they repeat once.  Case-insensitive
    matching (C{(?i)}) makes every letter a small class.  The estimate
    errs high: a piece it cannot read costs at least what it would as
    text.
    """
    literal = _CLASS if _CASE_FLAG.search(regex) else _LITERAL
    groups = [0]
    last = 0
    largest = 0
    i, n = 0, len(regex)
    while i < n:
        c = regex[i]
        if c == "\\" and i + 1 < n:
            e = regex[i + 1]
            i += 2
            if e in _UNICODE_ESCAPES:
                cost = _UNICODE_CLASS
                if e in "pP":
                    i = _skip_name(regex, i)
            else:
                cost = literal
                if e == "x":
                    i = _skip_name(regex, i, 2)
        elif c == "[":
            i, cost = _bracket(regex, i)
        elif c == "(":
            groups.append(0)
            i += 1
            continue
        elif c == ")" and len(groups) > 1:
            cost = max(1, groups.pop())
            i += 1
        elif c == "{":
            found = _REPETITION.match(regex, i)
            if found is not None:
                low = int(found.group(1))
                high = found.group(3)
                if found.group(2) is None:
                    count = low
                elif high:
                    count = max(low, int(high))
                else:
                    count = low + 1
                largest = max(largest, count)
                # What was repeated is in the group's sum once already; a
                # count of 0 is taken as 1 (the estimate only grows).
                count = max(count, 1)
                groups[-1] += last * (count - 1)
                last *= count
                i = found.end()
                continue
            cost = literal
            i += 1
        elif c == ".":
            cost = _CLASS
            i += 1
        elif c in "*+?|^$":
            i += 1
            continue
        else:
            cost = literal
            i += 1
        groups[-1] += cost
        last = cost
    return sum(groups), largest


def _skip_name(regex: str, i: int, width: int = 1) -> int:
    """
    Past a C{{...}} argument (C{\\p{Greek}}, C{\\x{10FFFF}}), or C{width}
    characters (C{\\pL}, C{\\x41}).
    """
    if i < len(regex) and regex[i] == "{":
        end = regex.find("}", i)
        return len(regex) if end < 0 else end + 1
    return min(len(regex), i + width)


def _bracket(regex: str, i: int) -> tuple[int, int]:
    """
    Past a bracket class starting at C{regex[i]} (nested classes and
    C{[:alpha:]} included), and its cost: a Unicode class inside makes
    it one.
    """
    depth = 0
    cost = _CLASS
    n = len(regex)
    while i < n:
        c = regex[i]
        if c == "\\" and i + 1 < n:
            if regex[i + 1] in _UNICODE_ESCAPES:
                cost = _UNICODE_CLASS
            i += 2
            continue
        if c == "[":
            depth += 1
            if regex.startswith("[:", i):
                end = regex.find(":]", i + 2)
                if end >= 0:
                    depth -= 1
                    i = end + 2
                    continue
            # A ']' first in a class is a literal.
            if regex.startswith("]", i + 1) or regex.startswith("^]", i + 1):
                i += 2 if regex[i + 1] == "]" else 3
                continue
        elif c == "]":
            depth -= 1
            if depth == 0:
                return i + 1, cost
        i += 1
    return n, cost
