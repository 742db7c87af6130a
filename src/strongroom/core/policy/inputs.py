"""Free-text rules: does a string a model receives look like an injection payload?

A feature the schema marks ``text`` (free text: a payment reference, a merchant name, a note)
often travels on from the model's caller to logs, dashboards, SQL stores, templates and file
paths. ``check_text`` flags strings that look like the classic payloads for those sinks and
returns a short reason category, never the matched text (the caller's reply must not echo it):

* ``"sql"``: quote-breaking tautologies (``' or 1=1``, ``' or 'a'='a``), ``union select``,
  comment tails (``admin'--``, ``;--``, ``/* ... */``), stacked queries (``; drop table``,
  ``; delete from``, ``; exec ...``), ``xp_cmdshell``, time probes (``sleep(5)``,
  ``benchmark(...)``, ``waitfor delay``), ``information_schema``, file functions;
* ``"script"``: ``<script``, ``</script``, ``javascript:``/``vbscript:`` URLs, event handler
  attributes (``onerror=``, ``onload=``) inside a tag or after a quote, active tags
  (``<iframe``, ``<svg``, ``<object``, ``<embed``, ``<meta``, ...) and ``data:`` URLs of HTML,
  SVG or JavaScript;
* ``"template"``: ``{{``, ``{%``, ``${``, ``#{``, ``<%=`` (Jinja, Twig, JNDI/EL, Ruby, ERB);
* ``"path"``: ``../`` and ``..\\``, overlong encodings of ``.``, ``/etc/passwd`` and friends,
  ``c:\\windows``, ``file://``, and the NUL byte;
* ``"control characters"``: C0 and C1 control characters other than tab, line feed and
  carriage return.

Matching is case-insensitive and runs on the string as given *and* after a bounded
normalisation: NFKC (full-width ``<``, U+FF1C, becomes ``<``), percent-decoding at most
twice (``%253C`` becomes ``<``), and HTML entity unescaping once (``&lt;``, ``&#x3c;``).

Invariants: pure standard library, no state; every regex is compiled once at import (they are
constants, not work) and has only bounded gaps (``{0,N}``), never an unbounded ``.*`` between
two tokens, so the cost is linear in the string's length (the caller bounds that length). Each
rule runs only when the string holds one of its trigger substrings (a quote, ``<``, ``union``,
...), so ordinary prose costs a few microseconds.

This is a filter for **defence in depth, not a guarantee**. It does not understand SQL, HTML or
any template language, so it misses payloads written to avoid these patterns (other
encodings: base64, hex, UTF-7, deeper nesting of percent or entity encodings; keywords split by
characters a particular parser ignores, such as ``java\\tscript:``; dialect-specific syntax;
homoglyphs that NFKC does not fold; payloads for sinks not listed, such as LDAP, XPath, shell
or CSV formulas). It also refuses a few honest strings that quote such syntax. The real
defences stay where the text is used: parameterised queries, output escaping, sandboxed
templates and path canonicalisation.
"""

from __future__ import annotations

import html
import re
import unicodedata
from collections.abc import Callable
from typing import Final
from urllib.parse import unquote

SQL: Final = "sql"
SCRIPT: Final = "script"
TEMPLATE: Final = "template"
PATH: Final = "path"
CONTROL: Final = "control characters"
CATEGORIES: Final = (SQL, SCRIPT, TEMPLATE, PATH, CONTROL)
"""The reason categories ``check_text`` returns, in the order they are tried."""

_FLAGS: Final = re.IGNORECASE | re.ASCII


def _pattern(regex: str) -> Callable[[str], object]:
    return re.compile(regex, _FLAGS).search


def _has_sql_comment(value: str) -> bool:
    """``/* ... */``, found with two linear scans (a lazy regex would be quadratic on a string
    of many ``/*`` without an end)."""
    start = value.find("/*")
    return start >= 0 and value.find("*/", start + 2) >= 0


_Rule = tuple[str, frozenset[str], Callable[[str], object]]
_SQL_WORDS: Final = (
    "union", "drop", "truncate", "alter", "xp_", "sp_", "sleep", "benchmark", "waitfor",
    "information_schema", "load_file", "into",
)  # fmt: skip
_RAW_RULES: Final[tuple[tuple[str, tuple[str, ...], Callable[[str], object]], ...]] = (
    # (category, triggers, matcher): the matcher runs only on a form whose lower-case text
    # holds one of the triggers, so that ordinary prose costs a few substring searches.
    (
        SQL,
        ("'", '"', "`"),
        _pattern(
            r"""['"`]\s{0,8}(?:\){0,4}\s{0,8}(?:or|and|xor|\|\||&&)\b\s{0,8}\(?\s{0,8}"""
            r"""['"`]?\w{0,32}['"`]?\s{0,8}(?:=|<>|!=|<|>)|(?:--|\#)(?:\s|$))"""
        ),
    ),
    (
        SQL,
        (";",),
        _pattern(
            r";\s{0,8}(?:--|create\s{1,16}(?:table|database|schema|user|view)\b"
            r"|delete\s{1,16}from\s{1,16}\w{1,64}\s{0,8}(?:where\b|;|--|$)"
            r"|insert\s{1,16}into\s{1,16}\w{1,64}\s{0,8}(?:\(|values\b|select\b)"
            r"|update\s{1,16}\w{1,64}\s{1,16}set\s{1,16}\w{1,64}\s{0,8}="
            r"|exec(?:ute)?\s{0,8}(?:\(|@|(?:xp|sp)_|master\.)"
            r"|shutdown\s{0,8}(?:--|;|$|with\s{1,8}nowait)|declare\s{1,8}@)"
        ),
    ),
    (SQL, ("=",), _pattern(r"""\b(?:or|and)\s{1,8}['"]?(\w{1,32})['"]?\s{0,8}=\s{0,8}['"]?\1\b""")),
    (
        SQL,
        _SQL_WORDS,
        _pattern(
            r"\bunion(?:\s{1,16}(?:all|distinct))?\s{1,16}select\b"
            r"|\b(?:drop|truncate|alter)\s{1,16}(?:table|database|schema)\b"
            r"|\bxp_cmdshell\b|\bsp_(?:executesql|oacreate)\b"
            r"|\b(?:pg_)?sleep\s{0,8}\(\s{0,8}[\d.]{1,16}\s{0,8}\)"
            r"|\bbenchmark\s{0,8}\(\s{0,8}\d{1,16}\s{0,8},"
            r"|\bwaitfor\s{1,16}(?:delay|time)\b"
            r"|\binformation_schema\b|\bload_file\s{0,8}\(|\binto\s{1,16}(?:out|dump)file\b"
        ),
    ),
    (SQL, ("/*",), _has_sql_comment),
    (
        SCRIPT,
        ("<",),
        _pattern(
            r"<\s{0,8}/?\s{0,8}script\b|<[a-z][^>]{0,256}\bon[a-z]{3,32}\s{0,8}="
            r"|<(?:iframe|frame|frameset|object|embed|applet|meta|base|svg|math|link|style"
            r"|form|template|isindex|xml|image)\b"
        ),
    ),
    (
        SCRIPT,
        ("script",),
        _pattern(
            r"\b(?:java|vb|live)script\s{0,8}:(?!\s)"
            r"|\b(?:java|vb|live)script\s{0,8}:\s{0,8}[\w$.]{1,64}\s{0,8}[(`]"
        ),
    ),
    (
        SCRIPT,
        ("on",),  # an event handler attribute after a quote: breaking out of an attribute
        _pattern(
            r"""['"/]\s{0,8}(?:[\w-]{1,32}(?:=\S{0,64})?\s{1,8}){0,4}\bon[a-z]{3,32}\s{0,8}="""
        ),
    ),
    (
        SCRIPT,
        ("data", "srcdoc"),
        _pattern(
            r"\bdata\s{0,8}:\s{0,8}(?:text/html|image/svg\+xml|text/xml|application/xhtml"
            r"|(?:text|application)/(?:x-)?(?:java|ecma)script)|\bsrcdoc\s{0,8}="
        ),
    ),
    (TEMPLATE, ("{", "<"), _pattern(r"\{\{|\{%|\$\{|#\{|<%[=#\-\s]")),
    (PATH, ("..",), _pattern(r"\.\.[/\\]|[/\\]\.\.(?:[/\\]|$)")),
    (PATH, ("%",), _pattern(r"%(?:c0%ae|c0%af|c1%9c|e0%80%ae|u002e|uff0e)")),
    (
        PATH,
        ("/etc/", "/proc/", ".ini", ":"),
        _pattern(
            r"/etc/(?:passwd|shadow|hosts|group)\b|/proc/self/|\bwin\.ini\b|\bboot\.ini\b"
            r"|\b[a-z]:[/\\]{1,2}(?:windows|winnt|boot\.ini)\b|\bfile:/{2,3}"
        ),
    ),
    (PATH, ("\x00",), bool),  # the NUL byte that truncates a path in C-based APIs
)
_TRIGGERS: Final = tuple(sorted({t for _, ts, _ in _RAW_RULES for t in ts}))
"""Every trigger, each looked for with a plain substring search (exact, and for short strings
faster than one regex over all of them)."""
_RULES: Final[tuple[_Rule, ...]] = tuple((c, frozenset(ts), m) for c, ts, m in _RAW_RULES)
_CONTROL: Final = re.compile(r"[\x01-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_PERCENT_ROUNDS: Final = 2


def check_text(value: str) -> str | None:
    """The reason category if ``value`` looks like an injection payload, else None.

    Categories are tried in ``CATEGORIES`` order on every form of the string (see the module
    docstring), so a payload hidden behind one layer of encoding is still named.
    """
    forms = [(form, _triggers_in(form.lower())) for form in _forms(value)]
    for category, triggers, matcher in _RULES:
        for form, found in forms:
            if not triggers.isdisjoint(found) and matcher(form):
                return category
    if any(_CONTROL.search(form) for form, _ in forms):
        return CONTROL
    return None


def _triggers_in(lowered: str) -> set[str]:
    return {trigger for trigger in _TRIGGERS if trigger in lowered}


def _forms(value: str) -> list[str]:
    """The string as given, then each distinct stage of NFKC folding, percent-decoding (at
    most twice) and HTML unescaping (once); a step runs only when it can change something, so
    plain ASCII prose is checked as it is."""
    forms = [value]
    current = value
    if not current.isascii():
        current = _add(forms, unicodedata.normalize("NFKC", current))
    for _ in range(_PERCENT_ROUNDS):
        if "%" not in current:
            break
        current = _add(forms, unquote(current, errors="replace"))
    if "&" in current:
        current = _add(forms, html.unescape(current))
        if not current.isascii():
            _add(forms, unicodedata.normalize("NFKC", current))
    return forms


def _add(forms: list[str], form: str) -> str:
    if form != forms[-1]:
        forms.append(form)
    return form
