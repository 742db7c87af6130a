"""Network rules and the client address (core/policy/network.py, docs/access-control.md).

The centre is a table of address spellings, each with what it must parse to (or None: refused)
and every host a lenient reader (inet_aton, a NAT64 gateway, a 6to4 relay) could take it to
mean. Every form is judged under an allow list, a deny list and both; the decision must be the
one the table implies, so no spelling of a denied host is ever admitted and no spelling outside
the allow list ever passes. Then the proxy headers: spoofed, chained, malformed, several lines,
both headers, overlong.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network, IPv6Address, ip_address, ip_network

import pytest

from address_forms import FORMS, TEREDO_10_0_0_1, Form
from strongroom.core.policy.conditions import Reason, denial_reason
from strongroom.core.policy.forwarded import (
    MAX_HOPS,
    MAX_PROXY_HEADER_BYTES,
    ClientResolver,
    ResolvedClient,
)
from strongroom.core.policy.network import (
    NetworkRules,
    embedded_ipv4,
    parse_address,
    parse_address_or_none,
    parse_networks,
)
from strongroom.entrypoints.http.access import ScopeView, client_ip
from strongroom.errors import ForbiddenError, InvalidInputError

DENY = ("10.0.0.0/8", "2001:db8::/32")
ALLOW = ("192.0.2.0/24",)
RULE_SETS = {
    "deny": NetworkRules(deny=parse_networks(DENY)),
    "allow": NetworkRules(allow=parse_networks(ALLOW)),
    "both": NetworkRules(allow=parse_networks(ALLOW), deny=parse_networks(DENY)),
    "allow-v6": NetworkRules(allow=parse_networks(("::/0",)), deny=parse_networks(DENY)),
}


def _in(text: str, networks: tuple[str, ...]) -> bool:
    address = ip_address(text)
    return any(address in ip_network(n) for n in networks)


def expected(form: Form, allow: tuple[str, ...], deny: tuple[str, ...]) -> bool:
    """The table's verdict: refused forms fail closed, every host the form may denote is
    tested against the deny list, only the parsed address against the allow list."""
    if form.parsed is None:
        return False
    if any(_in(host, deny) for host in (form.parsed, *form.denotes)):
        return False
    return not allow or _in(form.parsed, allow)


def allowed(rules: NetworkRules, text: str) -> bool:
    try:
        rules.check(parse_address_or_none(text))
    except ForbiddenError:
        return False
    return True


def test_the_table_is_large_enough() -> None:
    assert len(FORMS) >= 100
    assert sum(form.parsed is None for form in FORMS) >= 50


@pytest.mark.parametrize("form", FORMS, ids=[repr(f.text)[:40] for f in FORMS])
def test_each_form_parses_to_exactly_its_address_or_is_refused(form: Form) -> None:
    if form.parsed is None:
        with pytest.raises(InvalidInputError):
            parse_address(form.text)
        assert parse_address_or_none(form.text) is None
    else:
        assert parse_address(form.text) == ip_address(form.parsed)
        assert str(parse_address(form.text)) == form.parsed


@pytest.mark.parametrize("name", sorted(RULE_SETS))
def test_no_form_bypasses_the_rules_and_legitimate_spellings_pass(name: str) -> None:
    rules = RULE_SETS[name]
    allow = tuple(str(n) for n in rules.allow)
    deny = tuple(str(n) for n in rules.deny)
    bypasses = [f.text for f in FORMS if allowed(rules, f.text) and not expected(f, allow, deny)]
    wrongly_refused = [
        f.text for f in FORMS if expected(f, allow, deny) and not allowed(rules, f.text)
    ]
    assert bypasses == []
    assert wrongly_refused == []
    assert sum(allowed(rules, f.text) for f in FORMS) >= 3  # the rules do let someone in


def test_every_spelling_of_a_denied_host_is_refused() -> None:
    rules = RULE_SETS["deny"]
    denied_hosts = [
        f for f in FORMS if any(_in(h, DENY) for h in (*f.denotes, *(f.parsed or "").split()))
    ]
    assert len(denied_hosts) >= 50
    assert [f.text for f in denied_hosts if allowed(rules, f.text)] == []


def test_legitimate_spellings_of_an_allowed_host_pass() -> None:
    rules = RULE_SETS["both"]
    for text in ("192.0.2.1", "::ffff:192.0.2.1", "::FFFF:C000:201", "0:0:0:0:0:ffff:192.0.2.1"):
        assert allowed(rules, text), text


def reason(rules: NetworkRules, address: IPv4Address | IPv6Address | None) -> Reason | None:
    try:
        rules.check(address)
    except ForbiddenError as exc:
        return denial_reason(exc)
    return None


def test_rules_reasons_and_deny_beats_allow() -> None:
    rules = NetworkRules(allow=parse_networks(["10.0.0.0/8"]), deny=parse_networks(["10.1.0.0/16"]))
    assert reason(rules, IPv4Address("10.2.0.1")) is None
    assert reason(rules, IPv4Address("10.1.0.1")) is Reason.NETWORK_DENIED
    assert reason(rules, IPv4Address("11.0.0.1")) is Reason.NETWORK_NOT_ALLOWED
    assert reason(rules, None) is Reason.NO_CLIENT_ADDRESS
    assert reason(rules, IPv6Address("fe80::1%eth0")) is Reason.BAD_CLIENT_ADDRESS
    assert reason(rules, IPv6Address("::a01:1")) is Reason.BAD_CLIENT_ADDRESS
    assert reason(rules, IPv6Address("::ffff:10.1.0.1")) is Reason.NETWORK_DENIED
    assert reason(rules, IPv6Address("::ffff:10.2.0.1")) is None


def test_no_rule_lets_everything_through_even_no_address() -> None:
    rules = NetworkRules()
    assert not rules.applies
    rules.check(None)
    rules.check(IPv6Address("fe80::1%eth0"))
    assert NetworkRules(deny=parse_networks(["10.0.0.0/8"])).applies
    assert NetworkRules(allow=parse_networks(["10.0.0.0/8"])).applies


def test_rules_refuse_malformed_lists() -> None:
    with pytest.raises(InvalidInputError, match="IPv4-mapped"):
        NetworkRules(deny=(ip_network("::ffff:10.0.0.0/104"),))
    with pytest.raises(InvalidInputError):
        NetworkRules(allow=[ip_network("10.0.0.0/8")])  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError):
        NetworkRules(allow=("10.0.0.0/8",))  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError):
        ClientResolver((IPv4Network("10.0.0.0/8"),) * 1025)


def test_embedded_ipv4() -> None:
    assert embedded_ipv4(IPv4Address("10.0.0.1")) == ()
    assert embedded_ipv4(IPv6Address("2001:db8::1")) == ()
    assert embedded_ipv4(IPv6Address("64:ff9b::a00:1")) == (IPv4Address("10.0.0.1"),)
    assert embedded_ipv4(IPv6Address("2002:a00:1::")) == (IPv4Address("10.0.0.1"),)
    assert IPv4Address("10.0.0.1") in embedded_ipv4(IPv6Address(TEREDO_10_0_0_1))
    assert IPv4Address("10.0.0.1") in embedded_ipv4(IPv6Address("64:ff9b:1:a00:0:100::"))
    assert IPv4Address("10.0.0.1") in embedded_ipv4(IPv6Address("64:ff9b:1:ffff:a:0:100:0"))


# --- parse_networks -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "network"),
    [
        ("10.0.0.0/8", "10.0.0.0/8"),
        ("0.0.0.0/0", "0.0.0.0/0"),
        ("192.0.2.7", "192.0.2.7/32"),
        ("2001:DB8::/32", "2001:db8::/32"),
        ("::/0", "::/0"),
        ("2001:db8::1", "2001:db8::1/128"),
        ("64:ff9b::/96", "64:ff9b::/96"),
    ],
)
def test_parse_networks_accepts(text: str, network: str) -> None:
    assert parse_networks([text]) == (ip_network(network),)


@pytest.mark.parametrize(
    "text",
    [
        "10.0.0.1/8",  # host bits
        "10.0.0.0/255.0.0.0",  # netmask
        "10.0.0.0/0.255.255.255",  # host mask
        "10.0.0.0/08",
        "10.0.0.0/33",
        "10.0.0.0/",
        "10.0.0.0/-1",
        "10.0.0.0/8 ",
        " 10.0.0.0/8",
        "010.0.0.0/8",
        "10/8",
        "10.0/16",
        "::ffff:10.0.0.0/104",  # IPv4-mapped: write it as IPv4
        "::ffff:0:0/96",
        "fe80::%eth0/64",
        "fe80::/64%eth0",
        "2001:db8::/129",
        "\uff11\uff10.0.0.0/8",
        "",
        "/8",
        "10.0.0.0/8" * 10,
    ],
)
def test_parse_networks_refuses(text: str) -> None:
    with pytest.raises(InvalidInputError):
        parse_networks([text])


def test_parse_networks_refuses_a_lone_string_and_too_many() -> None:
    with pytest.raises(InvalidInputError, match="not one string"):
        parse_networks("10.0.0.0/8")
    with pytest.raises(InvalidInputError, match="at most"):
        parse_networks([f"10.0.{i // 256}.{i % 256}" for i in range(1025)])
    assert len(parse_networks(f"10.0.{i // 256}.{i % 256}" for i in range(1024))) == 1024


# --- proxy headers ------------------------------------------------------------------------

PROXIES = ClientResolver(parse_networks(["10.0.0.0/24", "2001:db8:ffff::/48"]))
PROXY = "10.0.0.5"
CLIENT = IPv4Address("203.0.113.7")


def xff(*values: str) -> list[tuple[bytes, bytes]]:
    return [(b"x-forwarded-for", v.encode()) for v in values]


def fwd(*values: str) -> list[tuple[bytes, bytes]]:
    return [(b"forwarded", v.encode()) for v in values]


SPOOFS = [
    xff("192.0.2.1"),
    fwd("for=192.0.2.1"),
    xff("192.0.2.1") + fwd("for=198.51.100.1"),
    xff("not an address"),
    fwd('for="[oops'),
    xff("1," * 5000),
    [(b"X-Forwarded-For", b"192.0.2.1")],
]


@pytest.mark.parametrize("headers", SPOOFS)
def test_headers_from_an_untrusted_peer_change_nothing(headers: list[tuple[bytes, bytes]]) -> None:
    resolved = PROXIES.resolve("203.0.113.7", headers)
    assert resolved == ResolvedClient(CLIENT, CLIENT, forwarded=False)


@pytest.mark.parametrize("headers", SPOOFS)
def test_without_trusted_proxies_headers_are_not_read(headers: list[tuple[bytes, bytes]]) -> None:
    peer = IPv4Address(PROXY)
    assert ClientResolver().resolve(PROXY, headers) == ResolvedClient(peer, peer)


def test_headers_are_not_even_iterated_without_trusted_proxies() -> None:
    class Exploding(list[tuple[bytes, bytes]]):
        def __iter__(self):  # type: ignore[no-untyped-def]
            raise AssertionError("headers read")

    assert ClientResolver().resolve("192.0.2.1", Exploding()).address == IPv4Address("192.0.2.1")
    assert PROXIES.resolve("192.0.2.1", Exploding()).address == IPv4Address("192.0.2.1")


@pytest.mark.parametrize(
    ("peer", "address"),
    [
        (None, None),
        ("fe80::1%eth0", None),  # a zone id: unknown
        ("010.0.0.5", None),
        ("::ffff:203.0.113.7", "203.0.113.7"),
        ("2001:db8::7", "2001:db8::7"),
    ],
)
def test_peer_is_parsed_strictly(peer: str | None, address: str | None) -> None:
    expected_address = None if address is None else ip_address(address)
    resolved = PROXIES.resolve(peer, xff("192.0.2.1"))
    assert resolved == ResolvedClient(expected_address, expected_address)


@pytest.mark.parametrize(
    ("headers", "client"),
    [
        ([], PROXY),  # a trusted peer without headers is the client
        (xff("203.0.113.7"), "203.0.113.7"),
        (xff("203.0.113.7:4711"), "203.0.113.7"),
        (xff(" 203.0.113.7 "), "203.0.113.7"),
        (xff("2001:db8::7"), "2001:db8::7"),
        (xff("[2001:db8::7]"), "2001:db8::7"),
        (xff("[2001:db8::7]:4711"), "2001:db8::7"),
        (xff("::ffff:203.0.113.7"), "203.0.113.7"),
        (xff("192.0.2.1, 203.0.113.7, 10.0.0.9"), "203.0.113.7"),  # spoofed left part ignored
        (xff("garbage, 203.0.113.7"), "203.0.113.7"),  # never read
        (xff("10.0.0.8, 10.0.0.9"), "10.0.0.8"),  # all trusted: the leftmost
        (xff("10.0.0.8"), "10.0.0.8"),
        (xff("192.0.2.1", "203.0.113.7"), "203.0.113.7"),  # lines concatenate in order
        (xff("203.0.113.7", "10.0.0.9"), "203.0.113.7"),
        (xff("203.0.113.7, 2001:db8:ffff::1"), "203.0.113.7"),
        (xff("unknown"), None),
        (xff("UNKNOWN, 10.0.0.9"), None),
        (xff("203.0.113.7, unknown"), None),  # stops at the unknown hop: no guessing past it
        ([(b"X-Forwarded-For", b"203.0.113.7")], "203.0.113.7"),
        (fwd('for="[2001:db8::1]:4711"'), "2001:db8::1"),
        (fwd("for=192.0.2.60;proto=http;by=203.0.113.43"), "192.0.2.60"),
        (fwd('For="192.0.2.60:4711"'), "192.0.2.60"),
        (fwd("FOR=192.0.2.60"), "192.0.2.60"),
        (fwd("for=192.0.2.43, for=10.0.0.9"), "192.0.2.43"),
        (fwd("for=192.0.2.43", "for=10.0.0.9;proto=https"), "192.0.2.43"),
        (fwd('for="[::ffff:192.0.2.43]"'), "192.0.2.43"),
        (fwd('for="\\[2001:db8::1\\]"'), "2001:db8::1"),  # quoted-pair
        (fwd('host="a,b";for=192.0.2.43'), "192.0.2.43"),  # a comma inside quotes
        (fwd("for=_gazonk"), None),
        (fwd('for="_gazonk:_port"'), None),
        (fwd("for=unknown"), None),
        (fwd('for="unknown:4711"'), None),
        (fwd("proto=https"), None),  # no for=: unknown
        (xff("203.0.113.7") + fwd("for=203.0.113.7"), "203.0.113.7"),  # both, agreeing
        (xff("203.0.113.7, 10.0.0.9") + fwd('for="203.0.113.7:1"'), "203.0.113.7"),
        (xff("unknown") + fwd("for=_hidden"), None),
    ],
)
def test_trusted_peer_headers(headers: list[tuple[bytes, bytes]], client: str | None) -> None:
    resolved = PROXIES.resolve(PROXY, headers)
    assert resolved.address == (None if client is None else ip_address(client))
    assert resolved.peer == IPv4Address(PROXY)
    assert resolved.forwarded is bool(headers)


@pytest.mark.parametrize(
    "headers",
    [
        xff("secret-not-an-ip"),
        xff(""),
        xff("203.0.113.7,"),
        xff("203.0.113.7 198.51.100.1"),
        xff("010.0.0.1"),
        xff("fe80::1%eth0"),
        xff("[203.0.113.7]"),
        xff("203.0.113.7:port"),
        xff("203.0.113.7:123456"),
        xff("_hidden"),
        xff("::a00:1"),  # IPv4-compatible
        xff("0.0.0.0"),  # noqa: S104 - the unspecified address as a hop
        xff("203.0.113.7\u00a0"),
        xff("\uff12\uff10\uff13.0.113.7"),
        fwd("for=2001:db8::1"),  # IPv6 must be quoted and bracketed
        fwd('for="2001:db8::1"'),
        fwd('for="[2001:db8::1"'),
        fwd('for="[203.0.113.7]"'),
        fwd("for=203.0.113.7;for=198.51.100.1"),
        fwd("for=203.0.113.7;;proto=http"),
        fwd("for=203.0.113.7 x"),
        fwd("for="),
        fwd(""),
        fwd(";"),
        fwd("for=203.0.113.7,"),
        fwd('for="203.0.113.7'),
        fwd('x="unterminated, for=203.0.113.7'),  # an open quote: the line cannot be split
        fwd("for=0x0a.0.0.1"),
        fwd('for="_bad!"'),
        fwd('for="secret"'),
        xff("203.0.113.7") + fwd("for=198.51.100.1"),  # both, disagreeing
        xff("203.0.113.7") + fwd("for=unknown"),
        xff("203.0.113.7") + fwd("for=garbage!"),
    ],
)
def test_malformed_read_part_refuses_without_echo(headers: list[tuple[bytes, bytes]]) -> None:
    with pytest.raises(InvalidInputError) as excinfo:
        PROXIES.resolve(PROXY, headers)
    message = str(excinfo.value)
    assert "secret" not in message
    assert "203.0.113.7" not in message
    assert "proxy" in message


def test_bounds_on_hops_and_size() -> None:
    many = ", ".join(["10.0.0.9"] * (MAX_HOPS - 1))
    assert PROXIES.resolve(PROXY, xff("203.0.113.7, " + many)).address == CLIENT
    with pytest.raises(InvalidInputError, match="hops"):
        PROXIES.resolve(PROXY, xff("203.0.113.7, 10.0.0.9, " + many))
    with pytest.raises(InvalidInputError, match="hops"):
        PROXIES.resolve(PROXY, xff(*["10.0.0.9"] * (MAX_HOPS + 1)))
    with pytest.raises(InvalidInputError, match="too large"):
        PROXIES.resolve(PROXY, xff(" " * MAX_PROXY_HEADER_BYTES + "203.0.113.7"))
    with pytest.raises(InvalidInputError, match="too large"):
        PROXIES.resolve(PROXY, xff("1" * 5000) + fwd("x" * 5000))


def test_a_forwarded_client_is_then_judged_by_the_rules() -> None:
    rules = RULE_SETS["both"]
    for headers in (xff("10.1.2.3"), xff("64:ff9b::10.1.2.3"), fwd('for="[2002:a01:203::1]"')):
        with pytest.raises(ForbiddenError):
            rules.check(PROXIES.resolve(PROXY, headers).address)
    with pytest.raises(ForbiddenError):
        rules.check(PROXIES.resolve(PROXY, xff("unknown")).address)
    rules.check(PROXIES.resolve(PROXY, xff("192.0.2.9")).address)


# --- access.client_ip ---------------------------------------------------------------------


def test_client_ip_prefers_what_the_guard_resolved() -> None:
    resolved = ResolvedClient(CLIENT, IPv4Address(PROXY), forwarded=True)
    scope = {"type": "http", "client": (PROXY, 1234), "strongroom.client": resolved}
    assert client_ip(ScopeView(scope)) == CLIENT
    unknown = ResolvedClient(None, IPv4Address(PROXY), forwarded=True)
    assert client_ip(ScopeView({**scope, "strongroom.client": unknown})) is None


@pytest.mark.parametrize(
    ("peer", "address"),
    [
        ("192.0.2.1", "192.0.2.1"),
        ("::ffff:192.0.2.1", "192.0.2.1"),
        ("fe80::1%eth0", None),
        ("::10.0.0.1", None),
        ("010.0.0.1", None),
        ("", None),
    ],
)
def test_client_ip_falls_back_to_the_strict_peer(peer: str, address: str | None) -> None:
    scope = {"type": "http", "client": (peer, 1234)}
    assert client_ip(ScopeView(scope)) == (None if address is None else ip_address(address))
    assert client_ip(ScopeView({"type": "http", "client": None})) is None
