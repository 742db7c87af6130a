"""Client addresses and network rules: strict parsing, allow and deny lists.

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
* Proxy headers are read by ``forwarded.ClientResolver``, with ``parse_address`` for each hop.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
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


def check_networks(name: str, networks: object) -> None:
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
        check_networks("allow", self.allow)
        check_networks("deny", self.deny)

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
