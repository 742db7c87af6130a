"""Spellings of client addresses, each with what it must parse to (None: refused) and every
host a lenient reader (inet_aton, a NAT64 gateway, a 6to4 relay) could take it to mean.

Shared by the unit tests of ``core/policy/network.py`` and the HTTP tests that send the same
forms through a trusted proxy's ``X-Forwarded-For``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Form:
    text: str
    parsed: str | None  # what parse_address returns (canonical), None: refused
    denotes: tuple[str, ...] = ()  # hosts a lenient reader might take it for (besides parsed)


TEREDO_10_0_0_1 = "2001:0:4136:e378:8000:63bf:f5ff:fffe"  # client 10.0.0.1 (bits inverted)
TEREDO_192_0_2_1 = "2001:0:4136:e378:8000:63bf:3fff:fdfe"  # client 192.0.2.1

FORMS = [
    # IPv4, the one accepted spelling
    Form("192.0.2.1", "192.0.2.1"),
    Form("192.0.2.255", "192.0.2.255"),
    Form("10.0.0.1", "10.0.0.1"),
    Form("10.255.255.255", "10.255.255.255"),
    Form("198.51.100.7", "198.51.100.7"),
    Form("127.0.0.1", "127.0.0.1"),
    Form("255.255.255.255", "255.255.255.255"),
    Form("169.254.1.1", "169.254.1.1"),
    Form("0.0.0.0", None),  # noqa: S104 - unspecified: no client has it
    # IPv4, odd forms that lenient parsers read (inet_aton: octal, hex, short, integer)
    Form("010.0.0.1", None, ("10.0.0.1", "8.0.0.1")),
    Form("10.0.0.01", None, ("10.0.0.1",)),
    Form("192.000.2.1", None, ("192.0.2.1",)),
    Form("0300.0.2.1", None, ("192.0.2.1",)),
    Form("0x0a.0.0.1", None, ("10.0.0.1",)),
    Form("0xc0.0.2.1", None, ("192.0.2.1",)),
    Form("0x0a000001", None, ("10.0.0.1",)),
    Form("10.1", None, ("10.0.0.1",)),
    Form("10.0.1", None, ("10.0.0.1",)),
    Form("192.2.1", None, ("192.0.2.1",)),
    Form("167772161", None, ("10.0.0.1",)),
    Form("3221225985", None, ("192.0.2.1",)),
    Form("012.0.0.1", None, ("10.0.0.1", "12.0.0.1")),
    Form("256.0.0.1", None),
    Form("10..0.1", None),
    Form("1.2.3.4.5", None),
    Form("+10.0.0.1", None, ("10.0.0.1",)),
    Form("10.0.0.1.", None, ("10.0.0.1",)),
    Form("10.0.0.1/32", None, ("10.0.0.1",)),
    Form("10.0.0.1:80", None, ("10.0.0.1",)),
    Form("[10.0.0.1]", None, ("10.0.0.1",)),
    Form("[192.0.2.1]", None, ("192.0.2.1",)),
    # whitespace, control characters, non-ASCII digits, empty, overlong
    Form(" 10.0.0.1", None, ("10.0.0.1",)),
    Form("10.0.0.1 ", None, ("10.0.0.1",)),
    Form("\t192.0.2.1", None, ("192.0.2.1",)),
    Form("10.0.0.1\n", None, ("10.0.0.1",)),
    Form("10.0.0.1\r\n", None, ("10.0.0.1",)),
    Form("10.0.0.1\x00", None, ("10.0.0.1",)),
    Form("192.0.2.1\x00.evil", None, ("192.0.2.1",)),
    Form("\u0661\u0660.\u0660.\u0660.\u0661", None, ("10.0.0.1",)),  # Arabic-Indic digits
    Form("\uff11\uff10.\uff10.\uff10.\uff11", None, ("10.0.0.1",)),  # fullwidth digits
    Form("\u0967\u0966.0.0.1", None, ("10.0.0.1",)),  # Devanagari digits
    Form("10\u30020.0.1", None, ("10.0.0.1",)),  # ideographic full stop
    Form("", None),
    Form("10.0.0.1" * 8, None, ("10.0.0.1",)),
    Form("0" * 4096, None),
    # IPv6
    Form("2001:db8::1", "2001:db8::1"),
    Form("2001:DB8::1", "2001:db8::1"),
    Form("2001:0db8:0000:0000:0000:0000:0000:0001", "2001:db8::1"),
    Form("2001:db8:0:0:0:0:0:1", "2001:db8::1"),
    Form("2001:db9::1", "2001:db9::1"),
    Form("::1", "::1"),
    Form("0:0:0:0:0:0:0:1", "::1"),
    Form("::0.0.0.1", "::1"),
    Form("fe80::1", "fe80::1"),
    Form("ff02::1", "ff02::1"),
    Form("::", None),
    Form("0:0:0:0:0:0:0:0", None),
    Form("fe80::1%eth0", None, ("fe80::1",)),
    Form("fe80::1%1", None, ("fe80::1",)),
    Form("2001:db8::1%eth0", None, ("2001:db8::1",)),
    Form("2001:db8::1%25eth0", None, ("2001:db8::1",)),
    Form("[2001:db8::1]", None, ("2001:db8::1",)),
    Form("[2001:db8::1]:443", None, ("2001:db8::1",)),
    Form("2001:db8::1 ", None, ("2001:db8::1",)),
    Form("2001:db8:::1", None),
    Form("2001:db8::1::2", None),
    Form("2001:db8::g", None),
    Form("2001:db8:00001::1", None, ("2001:db8:1::1",)),
    Form("2001:db8::\uff11", None, ("2001:db8::1",)),
    Form("0000:0000:0000:0000:0000:0000:0000:0000:0001", None),
    # IPv4-mapped: the IPv4 address, in any spelling
    Form("::ffff:10.0.0.1", "10.0.0.1"),
    Form("::ffff:a00:1", "10.0.0.1"),
    Form("::FFFF:10.0.0.1", "10.0.0.1"),
    Form("::FFFF:A00:1", "10.0.0.1"),
    Form("0:0:0:0:0:ffff:10.0.0.1", "10.0.0.1"),
    Form("0000:0000:0000:0000:0000:ffff:0a00:0001", "10.0.0.1"),
    Form("0000:0000:0000:0000:0000:ffff:10.0.0.1", "10.0.0.1"),
    Form("::ffff:192.0.2.1", "192.0.2.1"),
    Form("::ffff:c000:201", "192.0.2.1"),
    Form("::ffff:010.0.0.1", None, ("10.0.0.1", "8.0.0.1")),
    Form("::ffff:10.0.0.1%eth0", None, ("10.0.0.1",)),
    Form("::ffff:10.1", None, ("10.0.0.1",)),
    Form("::ffff:0.0.0.0", None),
    Form("[::ffff:10.0.0.1]", None, ("10.0.0.1",)),
    # IPv4-compatible and IPv4-translated: deprecated, refused
    Form("::10.0.0.1", None, ("10.0.0.1",)),
    Form("::a00:1", None, ("10.0.0.1",)),
    Form("::192.0.2.1", None, ("192.0.2.1",)),
    Form("0:0:0:0:0:0:10.0.0.1", None, ("10.0.0.1",)),
    Form("::ffff:0:10.0.0.1", None, ("10.0.0.1",)),
    Form("::ffff:0:a00:1", None, ("10.0.0.1",)),
    # IPv6 that carries an IPv4 address: IPv6 to allow lists, both to deny lists
    Form("64:ff9b::10.0.0.1", "64:ff9b::a00:1", ("10.0.0.1",)),
    Form("64:ff9b::a00:1", "64:ff9b::a00:1", ("10.0.0.1",)),
    Form("64:FF9B::192.0.2.1", "64:ff9b::c000:201", ("192.0.2.1",)),
    Form("64:ff9b:1:a00:0:100::", "64:ff9b:1:a00:0:100::", ("10.0.0.1",)),  # /48 (RFC 6052)
    Form("64:ff9b:1::a00:1", "64:ff9b:1::a00:1", ("10.0.0.1",)),  # /96 in the local prefix
    Form("2002:a00:1::1", "2002:a00:1::1", ("10.0.0.1",)),  # 6to4
    Form("2002:c000:201::1", "2002:c000:201::1", ("192.0.2.1",)),
    Form(TEREDO_10_0_0_1, TEREDO_10_0_0_1, ("10.0.0.1", "65.54.227.120")),
    Form(TEREDO_192_0_2_1, TEREDO_192_0_2_1, ("192.0.2.1", "65.54.227.120")),
    Form("fe80::5efe:10.0.0.1", "fe80::5efe:a00:1", ("10.0.0.1",)),  # ISATAP
    Form("2001:db9::200:5efe:a00:1", "2001:db9::200:5efe:a00:1", ("10.0.0.1",)),
]
