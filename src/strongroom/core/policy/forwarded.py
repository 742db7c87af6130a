"""The client behind trusted proxies: ``X-Forwarded-For`` and ``Forwarded`` (RFC 7239).

Invariants (``docs/access-control.md``, "Network rules and proxies", is the normative text):

* Proxy headers are read only when the transport peer is in a trusted proxy network, and then
  only from the right up to the first untrusted hop; the part that is read must be well-formed,
  at most ``MAX_HOPS`` hops and ``MAX_PROXY_HEADER_BYTES`` bytes, and when both headers are
  present they must name the same client. Otherwise the request is refused with an
  ``InvalidInputError`` that never echoes the header.
* Every hop is parsed as strictly as any address (``network.parse_address``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

from strongroom.core.policy.network import (
    MAX_ADDRESS_CHARS,
    Address,
    Network,
    check_networks,
    parse_address_or_none,
)
from strongroom.errors import InvalidInputError

MAX_HOPS: Final = 32
MAX_PROXY_HEADER_BYTES: Final = 8192
_BAD_HEADER: Final = "malformed proxy header"
_TOO_MANY_HOPS: Final = "too many proxy hops"
_PROXY_HEADERS: Final = frozenset({b"x-forwarded-for", b"forwarded"})
_MAX_HOP_CHARS: Final = 2 * MAX_ADDRESS_CHARS  # an address, brackets, a port, a quoted param


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
        check_networks("trusted_proxies", self.trusted_proxies)

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
