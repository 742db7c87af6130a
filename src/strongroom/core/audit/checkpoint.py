"""Signed tree heads of the audit log: C2SP checkpoints (https://c2sp.org/tlog-checkpoint).

A checkpoint commits to the first ``size`` records of the log: its body is the origin (which log),
the tree size in decimal and the base64 RFC 6962 root, each on its own line, optionally followed
by extension lines; it is signed as a C2SP signed note (``core.crypto.notes``) with Ed25519:

    strongroom.example/audit
    1234
    0F1D...base64...=
    <blank line>
    — strongroom.example/audit <base64(key ID || signature)>

The writer signs one periodically and at shutdown, and writes it both to the primary store and
to a separately configured second sink. ``docs/formats/checkpoint-v1.md`` is normative.

Invariants:

* ``open_checkpoint`` returns a ``Checkpoint`` only if a trusted key's signature verifies and
  the body is exactly in the format above: non-empty origin, decimal size without leading zeros
  (at most 2**53 - 1), canonical base64 of exactly 32 bytes, non-empty extension lines, no empty
  line anywhere (so the body and signatures are separated by exactly one blank line), no
  carriage return, at most 64 KiB. Anything else raises an opaque ``SignatureError``: a stored
  checkpoint that does not parse is as untrustworthy as one that does not verify.
* ``sign_checkpoint`` refuses (``ValueError``) anything ``open_checkpoint`` would refuse, so
  Strongroom never writes a checkpoint it could not read back.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final, NoReturn

from strongroom.core.audit.merkle import HASH_BYTES
from strongroom.core.crypto.notes import (
    NoteDetail,
    NoteSigner,
    NoteVerifier,
    b64decode_canonical,
    open_note,
    sign_note,
)
from strongroom.errors import SignatureError

MAX_TREE_SIZE: Final = 2**53 - 1
"""Sequence numbers are JSON integers (I-JSON), so no log outgrows this."""
MAX_ORIGIN_CHARS: Final = 256
MAX_EXTENSIONS: Final = 16
MAX_EXTENSION_CHARS: Final = 1024
_SIZE = re.compile(r"0|[1-9][0-9]{0,15}")


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A verified tree head: the log ``origin`` had ``size`` records with Merkle ``root``."""

    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _check_origin(self.origin)
        if type(self.size) is not int or not 0 <= self.size <= MAX_TREE_SIZE:
            raise ValueError("a checkpoint size is an integer in [0, 2**53 - 1]")
        if not isinstance(self.root, bytes) or len(self.root) != HASH_BYTES:
            raise ValueError("a checkpoint root is 32 bytes")
        if len(self.extensions) > MAX_EXTENSIONS:
            raise ValueError("too many checkpoint extension lines")
        for line in self.extensions:
            _check_line(line, MAX_EXTENSION_CHARS)

    def body(self) -> str:
        """The note text that is signed: origin, size, root, extension lines, each + newline."""
        lines = [self.origin, str(self.size), base64.b64encode(self.root).decode("ascii")]
        return "".join(f"{line}\n" for line in (*lines, *self.extensions))


def _check_line(line: str, max_chars: int) -> None:
    if type(line) is not str or not line or len(line) > max_chars:
        raise ValueError(f"a checkpoint line is non-empty and at most {max_chars} characters")
    if any(c < " " or "\ud800" <= c <= "\udfff" for c in line):
        raise ValueError("a checkpoint line holds no control character or lone surrogate")


def _check_origin(origin: str) -> None:
    _check_line(origin, MAX_ORIGIN_CHARS)


def sign_checkpoint(
    origin: str,
    size: int,
    root: bytes,
    signer: NoteSigner,
    extensions: Sequence[str] = (),
) -> str:
    """The signed checkpoint text to store in both sinks.

    C2SP recommends that the key name equal the origin; the writer's configuration should do so.
    """
    return sign_note(Checkpoint(origin, size, root, tuple(extensions)).body(), [signer])


def _malformed(detail: str) -> NoReturn:
    raise SignatureError from NoteDetail(detail)


def _parse_body(text: str) -> Checkpoint:
    lines = text.removesuffix("\n").split("\n")
    if len(lines) < 3 or len(lines) > 3 + MAX_EXTENSIONS:  # noqa: PLR2004 - origin, size, root
        _malformed("wrong number of checkpoint lines")
    origin, size_text, root_text, *extensions = lines
    if not _SIZE.fullmatch(size_text):
        _malformed("tree size is not canonical decimal")
    try:
        root = b64decode_canonical(root_text)
        return Checkpoint(origin, int(size_text), root, tuple(extensions))
    except ValueError as exc:
        raise SignatureError from exc


def open_checkpoint(text: str | bytes, verifiers: Iterable[NoteVerifier]) -> Checkpoint:
    """Verify and parse a stored checkpoint; ``SignatureError`` for anything not trustworthy.

    Signatures by keys not in ``verifiers`` are ignored (a witness's cosignature, a retired
    key), as long as one trusted signature verifies. The caller still checks ``origin``: a
    checkpoint of another log, signed by the same key, verifies here.
    """
    opened = open_note(text, verifiers)
    if "\n\n" in opened.text:  # carriage returns are already refused as control characters
        _malformed("empty line in checkpoint body")
    return _parse_body(opened.text)
