"""Client addresses and network rules: strict parsing, allow and deny lists, proxy headers.

A request is judged by the address of its client. This module turns text (a transport peer, a
proxy header, a setting) into that address, and decides whether an address may call at all.
It is pure: no I/O, no settings of its own; the one bounded ``lru_cache`` holds parses of peer
and hop strings, which are a pure function of their text.

Invariants (``docs/access-control.md``, "Network rules and proxies", is the normative text):

* Parsing is strict and never guesses. Only dotted-quad IPv4 without leading zeros and RFC 4291
  IPv6 text are read; anything else (zone ids, ``010.0.0.1``, ``0x0a.0.0.1``, ``10.1``,
  ``167772161``, spaces, non-ASCII digits, brackets, ports, more than 45 characters) raises
  ``InvalidInputError``. An IPv4-mapped address (``::ffff:a.b.c.d`` in any spelling) *is* the
  IPv4 address; IPv4-compatible (``::a.b.c.d``), IPv4-translated (``::ffff:0:a.b.c.d``) and
  unspecified addresses are refused (``conditions.normalize_client_ip`` holds these rules).
* Deny beats allow. An address in a deny network is refused even if an allow network holds it.
  IPv6 forms that carry an IPv4 address (NAT64 ``64:ff9b::/96`` and ``64:ff9b:1::/48``, 6to4
  ``2002::/16``, Teredo ``2001::/32``, ISATAP interface ids) are matched as IPv6 against allow
  lists (an IPv4 allow rule never admits them) and, in addition, every IPv4 address they may
  carry is tested against the deny list, so an IPv4 deny rule cannot be bypassed through them.
* When any rule applies, no address, or one that cannot be judged, is refused (fail closed).
* Proxy headers (``X-Forwarded-For``, ``Forwarded``) are read only when the transport peer is in
  a trusted proxy network, and then only from the right up to the first untrusted hop; the
  part that is read must be well-formed, at most ``MAX_HOPS`` hops and ``MAX_PROXY_HEADER_BYTES``
  bytes, and when both headers are present they must name the same client. Otherwise the request
  is refused with an ``InvalidInputError`` that never echoes the header.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import Final

from strongroom.core.policy.conditions import Reason, normalize_client_ip
from strongroom.core.policy.conditions import deny as refuse
from strongroom.errors import InvalidInputError

Address = IPv4Address | IPv6Address
Network = IPv4Network | IPv6Network

MAX_ADDRESS_CHARS: Final = 45  # "0000:0000:0000:0000:0000:ffff:255.255.255.255"
MAX_NETWORK_CHARS: Final = MAX_ADDRESS_CHARS + 4  # "/128"
MAX_NETWORKS: Final = 1024
MAX_HOPS: Final = 32
MAX_PROXY_HEADER_BYTES: Final = 8192

_OCTET: Final = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9][0-9]|[0-9])"
_IPV4_RE: Final = re.compile(rf"{_OCTET}(?:\.{_OCTET}){{3}}")
_IPV6_RE: Final = re.compile(r"[0-9A-Fa-f:.]+")  # then the stdlib parser decides
_PREFIX_RE: Final = re.compile(r"0|[1-9][0-9]{0,2}")

_MAPPED: Final = IPv6Network("::ffff:0:0/96")
_NAT64: Final = IPv6Network("64:ff9b::/96")
_NAT64_LOCAL: Final = IPv6Network("64:ff9b:1::/48")
_NAT64_LOCAL_PREFIXES: Final = (48, 56, 64, 96)  # RFC 6052 lengths a /48 prefix can be used at
_U_OCTET: Final = 8  # RFC 6052: bits 64-71 are reserved and never carry IPv4 bits
_ISATAP_IDS: Final = frozenset({0x00005EFE, 0x02005EFE})  # RFC 5214 interface id, u bit 0 or 1

_BAD_HEADER: Final = "malformed proxy header"
_TOO_MANY_HOPS: Final = "too many proxy hops"
_PROXY_HEADERS: Final = frozenset({b"x-forwarded-for", b"forwarded"})
_MAX_HOP_CHARS: Final = 2 * MAX_ADDRESS_CHARS  # an address, brackets, a port, a quoted param


def _literal(text: str) -> Address:
    """The address ``text`` spells, read strictly; the value rules are not applied here."""
    if not isinstance(text, str) or not 0 < len(text) <= MAX_ADDRESS_CHARS:
        raise InvalidInputError("invalid IP address")
    if ":" not in text:
        if _IPV4_RE.fullmatch(text):
            return IPv4Address(text)
    elif _IPV6_RE.fullmatch(text) and ("." not in text or _ipv4_tail_ok(text)):
        try:
            return IPv6Address(text)
        except ValueError:
            pass
    raise InvalidInputError("invalid IP address")


def _ipv4_tail_ok(text: str) -> bool:
    """An embedded dotted quad must be strict too (older Pythons accepted leading zeros)."""
    return bool(_IPV4_RE.fullmatch(text.rpartition(":")[2]))


def parse_address(text: str) -> Address:
    """The one client address ``text`` names, or ``InvalidInputError``.

    An IPv4-mapped IPv6 address comes back as its IPv4 address, so that every later comparison
    sees one spelling per host.
    """
    return normalize_client_ip(_literal(text))


@functools.lru_cache(maxsize=4096)
def _cached_address(text: str) -> Address | None:
    """Peers and proxies repeat; parsing costs microseconds, a cache hit a fraction of one."""
    try:
        return parse_address(text)
    except InvalidInputError:
        return None


def parse_address_or_none(text: str) -> Address | None:
    """``parse_address``, with None for anything it refuses; cached (bounded) for the request
    path, where peers repeat. Long strings never reach, and never fill, the cache."""
    if not isinstance(text, str) or len(text) > MAX_ADDRESS_CHARS:
        return None
    return _cached_address(text)


def _parse_network(text: str) -> Network:
    if not isinstance(text, str) or len(text) > MAX_NETWORK_CHARS:
        raise InvalidInputError("a network is a CIDR string such as 10.0.0.0/8")
    base, slash, prefix = text.partition("/")
    shown = repr(text)
    try:
        address = _literal(base)
    except InvalidInputError:
        raise InvalidInputError(f"invalid network {shown}: bad address") from None
    if slash and not _PREFIX_RE.fullmatch(prefix):
        raise InvalidInputError(f"invalid network {shown}: the prefix is a decimal length")
    length = int(prefix) if slash else address.max_prefixlen
    try:
        network = (
            IPv4Network((address, length))
            if isinstance(address, IPv4Address)
            else IPv6Network((address, length))
        )
    except ValueError:
        raise InvalidInputError(
            f"invalid network {shown}", hint="the prefix is too long or host bits are set"
        ) from None
    _check_network(network)
    return network


def _check_network(network: object) -> None:
    if not isinstance(network, IPv4Network | IPv6Network):
        raise InvalidInputError("networks must be ipaddress networks")
    if isinstance(network, IPv6Network) and network.subnet_of(_MAPPED):
        raise InvalidInputError(
            f"network {network} is IPv4-mapped", hint="write it as an IPv4 network"
        )


def parse_networks(texts: Iterable[str]) -> tuple[Network, ...]:
    """Strict CIDRs (``10.0.0.0/8``, ``2001:db8::/32``, a bare address for one host).

    Host bits set, netmask forms, zone ids and IPv4-mapped networks are refused rather than
    converted: a rule should read exactly as it is enforced.
    """
    if isinstance(texts, str | bytes):
        raise InvalidInputError("networks must be a list of CIDR strings, not one string")
    networks: list[Network] = []
    for text in texts:
        if len(networks) == MAX_NETWORKS:
            raise InvalidInputError(f"at most {MAX_NETWORKS} networks per list")
        networks.append(_parse_network(text))
    return tuple(networks)


def _check_networks(name: str, networks: object) -> None:
    if not isinstance(networks, tuple) or len(networks) > MAX_NETWORKS:
        raise InvalidInputError(f"{name} must be a tuple of at most {MAX_NETWORKS} networks")
    for network in networks:
        _check_network(network)


def _rfc6052(value: int, prefix_length: int) -> IPv4Address:
    """The IPv4 address embedded after a NAT64 prefix of ``prefix_length`` bits (RFC 6052)."""
    raw = value.to_bytes(16, "big")
    start = prefix_length // 8
    octets = [byte for index, byte in enumerate(raw) if index >= start and index != _U_OCTET]
    return IPv4Address(bytes(octets[:4]))


def embedded_ipv4(address: Address) -> tuple[IPv4Address, ...]:
    """Every IPv4 address an IPv6 transition form may carry (none for other addresses).

    Used against deny lists only: a candidate that is not really the client can only make the
    decision stricter, never admit anyone.
    """
    if isinstance(address, IPv4Address):
        return ()
    value = int(address)
    found: tuple[IPv4Address, ...] = ()
    if address in _NAT64:
        found = (IPv4Address(value & 0xFFFFFFFF),)
    elif address in _NAT64_LOCAL:
        found = tuple(_rfc6052(value, length) for length in _NAT64_LOCAL_PREFIXES)
    elif address.sixtofour is not None:
        found = (address.sixtofour,)
    elif address.teredo is not None:
        found = address.teredo  # (server, client): both, the stricter reading
    elif (value >> 32) & 0xFFFFFFFF in _ISATAP_IDS:
        found = (IPv4Address(value & 0xFFFFFFFF),)
    return found


@dataclass(frozen=True)
class NetworkRules:
    """Allow and deny lists of networks; empty lists are no rule. Deny beats allow."""

    allow: tuple[Network, ...] = ()
    deny: tuple[Network, ...] = ()

    def __post_init__(self) -> None:
        _check_networks("allow", self.allow)
        _check_networks("deny", self.deny)

    @property
    def applies(self) -> bool:
        """Whether any rule is set (then an unknown address is refused)."""
        return bool(self.allow or self.deny)

    def check(self, address: Address | None) -> None:
        """Return if ``address`` may call; else raise the opaque ``ForbiddenError``.

        Reasons: ``no_client_address``, ``bad_client_address`` (zone id, IPv4-compatible and
        the other refused forms), ``network_denied``, ``network_not_allowed``.
        """
        if not self.applies:
            return
        if address is None:
            refuse(Reason.NO_CLIENT_ADDRESS)
        canonical = _canonical_or_none(address)
        if canonical is None:
            refuse(Reason.BAD_CLIENT_ADDRESS)
        if self.deny and _in_any((canonical, *embedded_ipv4(canonical)), self.deny):
            refuse(Reason.NETWORK_DENIED)
        if self.allow and not _in_any((canonical,), self.allow):
            refuse(Reason.NETWORK_NOT_ALLOWED)


def _canonical_or_none(address: Address) -> Address | None:
    try:
        return normalize_client_ip(address)
    except InvalidInputError:
        return None


def _in_any(addresses: tuple[Address, ...], networks: tuple[Network, ...]) -> bool:
    return any(address in network for address in addresses for network in networks)


@dataclass(frozen=True, slots=True)
class ResolvedClient:
    """Who the client is, as far as the server can tell.

    ``address`` is the client (None: unknown, unparseable, a zone id, or a proxy said
    ``unknown`` or gave an obfuscated name); ``peer`` the parsed transport peer; ``forwarded``
    whether ``address`` came from a trusted proxy's header rather than the transport.
    """

    address: Address | None
    peer: Address | None
    forwarded: bool = False


@dataclass(frozen=True)
class ClientResolver:
    """Finds the client address of a request from its transport peer and, behind trusted
    proxies only, their ``X-Forwarded-For`` / ``Forwarded`` headers."""

    trusted_proxies: tuple[Network, ...] = ()

    def __post_init__(self) -> None:
        _check_networks("trusted_proxies", self.trusted_proxies)

    def resolve(self, peer: str | None, headers: Sequence[tuple[bytes, bytes]]) -> ResolvedClient:
        """The client of a request. Headers are not even looked at unless the peer is trusted.

        Raises ``InvalidInputError`` when the part of the headers that is read cannot be (see
        the module invariants). Only hops written by trusted proxies are skipped, so what a
        client wrote itself is never believed past the hop a trusted proxy added for it.
        """
        address = None if peer is None else parse_address_or_none(peer)
        if address is None or not self.trusted_proxies or not self._trusted(address):
            return ResolvedClient(address, address)
        forwarded_for, forwarded = _proxy_lines(headers)
        if not forwarded_for and not forwarded:
            return ResolvedClient(address, address)
        found: list[Address | None] = []
        if forwarded_for:
            found.append(self._walk(_hops(forwarded_for, _split_commas), _read_forwarded_for))
        if forwarded:
            found.append(self._walk(_hops(forwarded, _split_elements), _read_forwarded))
        if len(found) == 2 and found[0] != found[1]:  # noqa: PLR2004 - both headers
            raise InvalidInputError("conflicting proxy headers")
        return ResolvedClient(found[0], address, forwarded=True)

    def _trusted(self, address: Address) -> bool:
        return any(address in network for network in self.trusted_proxies)

    def _walk(self, hops: list[str], read: Callable[[str], Address | None]) -> Address | None:
        """From the right, skip trusted proxies; the first other hop is the client. When every
        hop is a trusted proxy, the leftmost one is (a request from a proxy host itself)."""
        address: Address | None = None
        for hop in reversed(hops):
            address = read(hop)
            if address is None or not self._trusted(address):
                return address
        return address


def _proxy_lines(headers: Sequence[tuple[bytes, bytes]]) -> tuple[list[str], list[str]]:
    """The ``X-Forwarded-For`` and ``Forwarded`` lines in order, within the size bound."""
    forwarded_for: list[str] = []
    forwarded: list[str] = []
    size = 0
    for name, value in headers:
        lowered = name.lower()  # ASGI servers lower-case names; a test or a shim may not
        if lowered not in _PROXY_HEADERS:
            continue
        size += len(value)
        if size > MAX_PROXY_HEADER_BYTES:
            raise InvalidInputError("proxy headers too large")
        lines = forwarded_for if lowered == b"x-forwarded-for" else forwarded
        if len(lines) == MAX_HOPS:  # every line holds at least one hop
            raise InvalidInputError(_TOO_MANY_HOPS)
        lines.append(value.decode("latin-1"))
    return forwarded_for, forwarded


def _hops(lines: list[str], split: Callable[[str], list[str]]) -> list[str]:
    """Several lines of one header are one list, in order (RFC 9110 section 5.3)."""
    hops: list[str] = []
    for line in lines:
        hops.extend(split(line))
        if len(hops) > MAX_HOPS:
            raise InvalidInputError(_TOO_MANY_HOPS)
    return hops


def _split_commas(line: str) -> list[str]:
    if line.count(",") >= MAX_HOPS:  # refuse before building thousands of strings
        raise InvalidInputError(_TOO_MANY_HOPS)
    return line.split(",")


_QUOTED: Final = r'"[\t !#-\[\]-~]*+(?:\\[\t -~][\t !#-\[\]-~]*+)*+"'
_ELEMENT_RE: Final = re.compile(r'(?:[^",]++|"[^"\\]*+(?:\\.[^"\\]*+)*+")*+')  # possessive


def _split_elements(line: str) -> list[str]:
    """``Forwarded`` elements: commas outside quoted strings; an open quote is malformed.

    One possessive regex call per element keeps this linear and in C, whatever the quotes.
    """
    if '"' not in line:
        return _split_commas(line)
    elements: list[str] = []
    position = 0
    while True:
        match = _ELEMENT_RE.match(line, position)  # always matches, perhaps empty
        end = match.end() if match is not None else position
        elements.append(line[position:end])
        if end == len(line):
            return elements
        if len(elements) == MAX_HOPS:
            raise InvalidInputError(_TOO_MANY_HOPS)
        if line[end] != ",":  # stopped at a quote that never closes
            raise InvalidInputError(_BAD_HEADER)
        position = end + 1


_PORT: Final = r"(?::[0-9]{1,5})?"
_XFF_HOP_RE: Final = re.compile(
    rf"\[(?P<bracketed>[^\]]*)\]{_PORT}|(?P<v4>[0-9.]+){_PORT}|(?P<v6>[0-9A-Fa-f:.]+)"
)
_OBFUSCATED: Final = r"_[A-Za-z0-9._-]+"
_NODE_RE: Final = re.compile(
    rf"(?:\[(?P<bracketed>[^\]]*)\]|(?P<v4>[0-9.]+)|(?P<hidden>{_OBFUSCATED}|(?i:unknown)))"
    rf"(?::(?:[0-9]{{1,5}}|{_OBFUSCATED}))?"
)


def _read_forwarded_for(hop: str) -> Address | None:
    """One ``X-Forwarded-For`` hop: an address, optionally with a port, or ``unknown``."""
    text = hop.strip(" \t")
    if len(text) > _MAX_HOP_CHARS:
        raise InvalidInputError(_BAD_HEADER)
    if text.lower() == "unknown":
        return None
    match = _XFF_HOP_RE.fullmatch(text)
    if match is None:
        raise InvalidInputError(_BAD_HEADER)
    bracketed = match.group("bracketed")
    if bracketed is not None and ":" not in bracketed:  # brackets are for IPv6 only
        raise InvalidInputError(_BAD_HEADER)
    return _hop_address(bracketed or match.group("v4") or match.group("v6"))


def _hop_address(text: str | None) -> Address:
    address = None if text is None else parse_address_or_none(text)
    if address is None:
        raise InvalidInputError(_BAD_HEADER)
    return address


def _read_forwarded(element: str) -> Address | None:
    """The ``for=`` node of one ``Forwarded`` element (RFC 7239 section 6); None when it is
    absent, ``unknown`` or an obfuscated identifier."""
    node = _for_value(element)
    if node is None:
        return None
    match = _NODE_RE.fullmatch(node) if len(node) <= _MAX_HOP_CHARS else None
    if match is None:
        raise InvalidInputError(_BAD_HEADER)
    if match.group("hidden") is not None:
        return None
    bracketed = match.group("bracketed")
    if bracketed is not None and ":" not in bracketed:  # brackets are for IPv6 only
        raise InvalidInputError(_BAD_HEADER)
    return _hop_address(bracketed or match.group("v4"))


_TCHARS: Final = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_PAIR_RE: Final = re.compile(rf"[ \t]*({_TCHARS})=({_TCHARS}|{_QUOTED})[ \t]*")
_UNESCAPE_RE: Final = re.compile(r"\\(.)")


def _for_value(element: str) -> str | None:
    """The (unquoted) ``for`` value of ``pair *( ";" pair )``; a repeated parameter, an empty
    pair or a stray character is malformed."""
    seen: set[str] = set()
    value: str | None = None
    position = 0
    while True:
        match = _PAIR_RE.match(element, position)
        if match is None:
            raise InvalidInputError(_BAD_HEADER)
        name = match.group(1).lower()
        if name in seen:
            raise InvalidInputError(_BAD_HEADER)
        seen.add(name)
        if name == "for":
            raw = match.group(2)
            value = _UNESCAPE_RE.sub(r"\1", raw[1:-1]) if raw.startswith('"') else raw
        position = match.end()
        if position == len(element):
            return value
        if element[position] != ";":
            raise InvalidInputError(_BAD_HEADER)
        position += 1
