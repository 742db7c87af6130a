"""Properties of the address parser, the network rules and the proxy-header resolver.

The parser must be total (any text: an address or ``InvalidInputError``, never another
exception), agree with the stdlib on every address it accepts, and read every spelling of an
IPv4-mapped address as the IPv4 address, so that rules decide the same for both. The resolver
must ignore whatever headers an untrusted peer sends, and appending trusted hops must not
change the client it finds.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

from hypothesis import given, settings
from hypothesis import strategies as st

from strongroom.core.policy.conditions import denial_reason
from strongroom.core.policy.forwarded import ClientResolver, ResolvedClient
from strongroom.core.policy.network import (
    NetworkRules,
    parse_address,
    parse_address_or_none,
    parse_networks,
)
from strongroom.errors import ForbiddenError, InvalidInputError

ipv4s = st.integers(0, 2**32 - 1).map(IPv4Address)
ipv6s = st.integers(0, 2**128 - 1).map(IPv6Address)
ADDRESS_ALPHABET = "0123456789abcdefABCDEFxX:.%[]/ _-\t\n\x00\u0660\u0661\uff10\uff11"
address_like = st.text(alphabet=ADDRESS_ALPHABET, max_size=50)


def ipv4_networks() -> st.SearchStrategy[IPv4Network]:
    return st.tuples(ipv4s, st.integers(0, 32)).map(
        lambda t: IPv4Network((t[0], t[1]), strict=False)
    )


def ipv6_networks() -> st.SearchStrategy[IPv6Network]:
    return (
        st.tuples(ipv6s, st.integers(0, 128))
        .map(lambda t: IPv6Network((t[0], t[1]), strict=False))
        .filter(lambda n: not n.subnet_of(IPv6Network("::ffff:0:0/96")))
    )


networks = st.lists(st.one_of(ipv4_networks(), ipv6_networks()), max_size=4).map(tuple)


def mapped_spellings(address: IPv4Address) -> list[str]:
    mapped = IPv6Address(0xFFFF << 32 | int(address))
    high, low = int(address) >> 16, int(address) & 0xFFFF
    return [
        str(mapped),
        mapped.exploded,
        mapped.exploded.upper(),
        f"::ffff:{address}",
        f"::FFFF:{address}",
        f"0:0:0:0:0:ffff:{address}",
        f"0000:0000:0000:0000:0000:FFFF:{address}",
        f"::ffff:{high:x}:{low:x}",
        f"0::ffff:{high:04X}:{low:04x}",
    ]


def decision(rules: NetworkRules, address: IPv4Address | IPv6Address | None) -> str | None:
    try:
        rules.check(address)
    except ForbiddenError as exc:
        reason = denial_reason(exc)
        return "forbidden" if reason is None else reason.value
    return None


@given(ipv4s.filter(lambda a: not a.is_unspecified))
def test_every_mapped_spelling_is_the_ipv4_address(address: IPv4Address) -> None:
    assert parse_address(str(address)) == address
    for text in mapped_spellings(address):
        assert parse_address(text) == address, text


@given(ipv4s.filter(lambda a: not a.is_unspecified), networks, networks)
def test_rules_decide_the_same_for_the_mapped_form(
    address: IPv4Address, allow: tuple[IPv4Network, ...], deny: tuple[IPv4Network, ...]
) -> None:
    rules = NetworkRules(allow=allow, deny=deny)
    mapped = IPv6Address(0xFFFF << 32 | int(address))
    expected = decision(rules, address)
    assert decision(rules, mapped) == expected
    assert decision(rules, parse_address(str(mapped))) == expected


@settings(max_examples=500)
@given(
    st.one_of(
        address_like,
        st.text(max_size=60),
        ipv4s.map(str),
        ipv6s.map(str),
        ipv6s.map(lambda a: a.exploded.upper()),
    )
)
def test_parse_is_total_and_agrees_with_the_stdlib(text: str) -> None:
    try:
        parsed = parse_address(text)
    except InvalidInputError:
        assert parse_address_or_none(text) is None
        return
    assert parse_address_or_none(text) == parsed
    assert text.isascii()
    assert text.strip() == text
    assert "%" not in text
    assert "[" not in text
    if ":" in text:
        stdlib = IPv6Address(text)
        assert parsed == (stdlib.ipv4_mapped or stdlib)
    else:
        assert parsed == IPv4Address(text)


@given(st.one_of(ipv4s, ipv6s))
def test_canonical_text_round_trips_or_is_refused(address: IPv4Address | IPv6Address) -> None:
    value = int(address)
    refused = (
        (isinstance(address, IPv6Address) and (value >> 32 == 0 and value != 1))
        or (isinstance(address, IPv6Address) and value >> 32 == 0xFFFF0000)
        or address.is_unspecified
    )
    parsed = parse_address_or_none(str(address))
    if refused:
        assert parsed is None
    elif isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        assert parsed == address.ipv4_mapped
    else:
        assert parsed == address


@settings(max_examples=300)
@given(st.lists(address_like, max_size=3))
def test_parse_networks_is_total(texts: list[str]) -> None:
    try:
        parsed = parse_networks(texts)
    except InvalidInputError:
        return
    for network in parsed:
        assert not (
            isinstance(network, IPv6Network) and network.subnet_of(IPv6Network("::ffff:0:0/96"))
        )


header_names = st.sampled_from([b"x-forwarded-for", b"forwarded", b"Forwarded", b"via"])
header_values = st.one_of(
    st.binary(max_size=80),
    st.text(alphabet=ADDRESS_ALPHABET + ',;="unknowfrFOR', max_size=80).map(str.encode),
)
header_lists = st.lists(st.tuples(header_names, header_values), max_size=4)
PROXIES = ClientResolver(parse_networks(["10.0.0.0/24", "2001:db8:ffff::/48"]))


@settings(max_examples=500)
@given(header_lists)
def test_resolve_from_a_trusted_peer_only_raises_invalid_input(
    headers: list[tuple[bytes, bytes]],
) -> None:
    try:
        resolved = PROXIES.resolve("10.0.0.5", headers)
    except InvalidInputError as exc:
        message = str(exc)
    else:
        assert resolved.peer == IPv4Address("10.0.0.5")
        return
    assert "proxy" in message


@given(header_lists, st.one_of(ipv4s, ipv6s))
def test_an_untrusted_peer_cannot_change_its_address(
    headers: list[tuple[bytes, bytes]], peer: IPv4Address | IPv6Address
) -> None:
    address = parse_address_or_none(str(peer))
    if address is not None and any(address in n for n in PROXIES.trusted_proxies):
        return
    assert PROXIES.resolve(str(peer), headers) == ResolvedClient(address, address)


trusted_hops = st.integers(1, 254).map(lambda i: f"10.0.0.{i}")


@given(
    st.lists(st.sampled_from(["192.0.2.1", "unknown", "198.51.100.7", "10.0.0.9"]), max_size=5),
    ipv4s.filter(lambda a: not a.is_unspecified and a not in IPv4Network("10.0.0.0/24")),
    st.lists(trusted_hops, max_size=10),
)
def test_the_client_is_the_first_untrusted_hop_from_the_right(
    spoofed: list[str], client: IPv4Address, proxies: list[str]
) -> None:
    chain = ", ".join([*spoofed, str(client), *proxies])
    resolved = PROXIES.resolve("10.0.0.5", [(b"x-forwarded-for", chain.encode())])
    assert resolved == ResolvedClient(client, IPv4Address("10.0.0.5"), forwarded=True)
    element = ", ".join(f'for="{hop}:80"' for hop in [str(client), *proxies])
    by_forwarded = PROXIES.resolve("10.0.0.5", [(b"forwarded", element.encode())])
    assert by_forwarded.address == client


@given(st.integers(0x0A000000, 0x0AFFFFFF).map(IPv4Address))
def test_embedded_forms_of_a_denied_ipv4_address_are_denied(address: IPv4Address) -> None:
    rules = NetworkRules(
        allow=parse_networks(["::/0", "0.0.0.0/0"]), deny=parse_networks(["10.0.0.0/8"])
    )
    value = int(address)
    forms = [
        IPv6Address((0x64FF9B << 96) | value),  # NAT64
        IPv6Address((0x2002 << 112) | (value << 80) | 1),  # 6to4
        IPv6Address((0x2001 << 112) | (0x4136E378 << 64) | (value ^ 0xFFFFFFFF)),  # Teredo
        IPv6Address((0xFE80 << 112) | (0x5EFE << 32) | value),  # ISATAP
    ]
    for form in forms:
        assert decision(rules, parse_address(str(form))) == "network_denied", form
