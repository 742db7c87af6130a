"""C2SP signed notes and checkpoints: interop with Go's sumdb/note, and strict parsing.

The Go vectors are the fixed, published keys and notes of golang.org/x/mod/sumdb/note's
note_test.go (the PeterNeumann and EnochRoot keys are test keys published there). Ed25519 is
deterministic, so signing the same text with the same key must reproduce Go's note byte for byte.
Every other key here is generated at test time.
"""

from __future__ import annotations

import base64
import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from strongroom.core.audit.checkpoint import Checkpoint, open_checkpoint, sign_checkpoint
from strongroom.core.audit.merkle import EMPTY_ROOT, hash_leaf
from strongroom.core.crypto.notes import (
    MAX_SIGNATURES,
    NoteSigner,
    NoteVerifier,
    key_id,
    open_note,
    sign_note,
)
from strongroom.errors import ConfigurationError, InvalidInputError, SignatureError

# --- golang.org/x/mod/sumdb/note, note_test.go ----------------------------------------------------

PETER_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
PETER_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
ENOCH_VKEY = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop"
TEXT = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
)
PETER_SIG = (
    "— PeterNeumann "
    "x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
)
ENOCH_SIG = (
    "— EnochRoot "
    "rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox33WWd1RvMc+QQ=\n"
)


def peter() -> NoteVerifier:
    return NoteVerifier.from_vkey(PETER_VKEY)


def enoch() -> NoteVerifier:
    return NoteVerifier.from_vkey(ENOCH_VKEY)


def test_go_verifier_keys_parse_and_format_back() -> None:
    assert peter().name == "PeterNeumann"
    assert peter().key_id == 0xC74F20A3
    assert peter().vkey == PETER_VKEY
    assert enoch().vkey == ENOCH_VKEY
    assert key_id("PeterNeumann", peter().public_key) == 0xC74F20A3


def test_go_note_verifies() -> None:
    opened = open_note(TEXT + "\n" + PETER_SIG, [peter()])
    assert opened.text == TEXT
    assert opened.verified_by == (peter(),)
    assert open_note((TEXT + "\n" + PETER_SIG).encode(), [peter()]).text == TEXT


def test_go_signer_key_reproduces_go_note_byte_for_byte() -> None:
    signer = NoteSigner.from_skey(PETER_SKEY)
    assert signer.verifier == peter()
    assert signer.to_skey() == PETER_SKEY
    assert sign_note(TEXT, [signer]) == TEXT + "\n" + PETER_SIG
    assert "AYEKFALV" not in repr(signer)


def test_go_open_semantics() -> None:
    both = TEXT + "\n" + PETER_SIG + ENOCH_SIG
    assert open_note(both, [peter()]).verified_by == (peter(),)  # Enoch's: unknown, ignored
    assert open_note(both, [peter(), enoch()]).verified_by == (peter(), enoch())
    with pytest.raises(SignatureError):
        open_note(both, [])
    repeated = TEXT + "\n" + PETER_SIG * 2 + ENOCH_SIG * 2
    assert open_note(repeated, [peter()]).verified_by == (peter(),)
    with pytest.raises(SignatureError):  # a trusted key's bad signature refuses the whole note
        open_note(TEXT + "\n" + PETER_SIG[:60] + "ABCD" + PETER_SIG[60:], [peter()])
    for count in (MAX_SIGNATURES + 1, 101):
        with pytest.raises(SignatureError):
            open_note(TEXT + "\n" + PETER_SIG * count, [peter()])
    assert open_note(TEXT + "\n" + PETER_SIG * MAX_SIGNATURES, [peter()]).text == TEXT


@pytest.mark.parametrize(
    "note",
    [
        TEXT,
        TEXT + "\n",
        TEXT + "\n" + PETER_SIG[:-1],
        "\x01" + TEXT + "\n" + PETER_SIG,
        TEXT
        + "\n"
        + "— Bad Name x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=",  # noqa: E501 - Go's vector
        TEXT + "\n" + PETER_SIG + "Unexpected line.\n",
        TEXT.replace("\n", "\r\n") + "\r\n" + PETER_SIG,
        TEXT + "\n" + PETER_SIG.replace("=\n", "\n"),
        TEXT + "\n" + PETER_SIG.replace("nAM=", "nAN="),
        TEXT + "\n" + PETER_SIG.replace("— ", "-- "),
        TEXT.replace("cryptography", "cryptographY") + "\n" + PETER_SIG,
    ],
)
def test_go_malformed_notes_are_refused(note: str) -> None:
    with pytest.raises(SignatureError):
        open_note(note, [peter()])


def test_go_invalid_utf8_is_refused() -> None:
    with pytest.raises(SignatureError):
        open_note(b"\xff" + (TEXT + "\n" + PETER_SIG).encode(), [peter()])


def test_go_verifier_key_manglings_are_refused() -> None:
    """Go's TestNewVerifier: every proper substring and every one-byte change is refused."""
    b = PETER_VKEY.encode()
    refused = 0
    for i in range(len(b) + 1):
        for j in range(i + 1, len(b) + 1):
            if (i, j) != (0, len(b)):
                with pytest.raises(InvalidInputError):
                    NoteVerifier.from_vkey(b[i:j].decode())
                refused += 1
    for i in range(len(b)):
        mangled = bytearray(b)
        mangled[i] += 1
        with pytest.raises(InvalidInputError):
            NoteVerifier.from_vkey(mangled.decode())
        refused += 1
    for bad in (
        "PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY==",
        "PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        "PeterNeumann+C74F20A3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
    ):
        with pytest.raises(InvalidInputError):
            NoteVerifier.from_vkey(bad)
    assert refused == len(b) * (len(b) + 1) // 2 - 1 + len(b)


def test_go_signer_key_manglings_are_refused() -> None:
    b = PETER_SKEY.encode()
    for i in range(len(b)):
        mangled = bytearray(b)
        mangled[i] += 1
        with pytest.raises(InvalidInputError):
            NoteSigner.from_skey(mangled.decode())
    for cut in range(1, len(b)):
        with pytest.raises(InvalidInputError):
            NoteSigner.from_skey(PETER_SKEY[:cut])


# --- checkpoints ----------------------------------------------------------------------------------

ORIGIN = "strongroom.test/audit"
ROOT = hash_leaf(b"root")


def new_signer(name: str = ORIGIN) -> NoteSigner:
    return NoteSigner.generate(name, os.urandom)


def test_checkpoint_round_trip() -> None:
    signer = new_signer()
    text = sign_checkpoint(ORIGIN, 1234, ROOT, signer)
    body = f"{ORIGIN}\n1234\n{base64.b64encode(ROOT).decode()}\n\n"
    assert text.startswith(body)
    assert text.count("\n") == 5
    assert text.endswith("\n")
    assert open_checkpoint(text, [signer.verifier]) == Checkpoint(ORIGIN, 1234, ROOT)
    ext = sign_checkpoint(ORIGIN, 0, EMPTY_ROOT, signer, extensions=["ts 1700000000", "x"])
    opened = open_checkpoint(ext, [signer.verifier])
    assert opened.extensions == ("ts 1700000000", "x")
    assert opened.size == 0


def test_checkpoint_trust() -> None:
    signer, witness, stranger = new_signer(), new_signer("witness.test/w1"), new_signer()
    text = sign_note(Checkpoint(ORIGIN, 9, ROOT).body(), [signer, witness])
    assert open_checkpoint(text, [signer.verifier]).size == 9  # the cosignature is ignored
    assert open_checkpoint(text, [witness.verifier]).size == 9
    with pytest.raises(SignatureError):
        open_checkpoint(text, [stranger.verifier])  # same name, other key: unknown
    with pytest.raises(SignatureError):
        open_checkpoint(sign_checkpoint(ORIGIN, 9, ROOT, stranger), [signer.verifier])


def test_conflicting_trusted_keys_are_a_configuration_error() -> None:
    signer, other = new_signer(), new_signer()
    clash = NoteVerifier(ORIGIN, other.verifier.public_key)
    object.__setattr__(clash, "key_id", signer.key_id)
    with pytest.raises(ConfigurationError):
        open_checkpoint(sign_checkpoint(ORIGIN, 1, ROOT, signer), [signer.verifier, clash])


def malformed_bodies() -> list[str]:
    root = base64.b64encode(ROOT).decode()
    urlsafe = base64.urlsafe_b64encode(b"\xff" * 32).decode()
    return [
        f"{ORIGIN}\n012\n{root}\n",
        f"{ORIGIN}\n+12\n{root}\n",
        f"{ORIGIN}\n 12\n{root}\n",
        f"{ORIGIN}\n1e3\n{root}\n",
        f"{ORIGIN}\n9007199254740992\n{root}\n",
        f"{ORIGIN}\n-1\n{root}\n",
        f"{ORIGIN}\n12\n{base64.b64encode(ROOT[:31]).decode()}\n",
        f"{ORIGIN}\n12\n{base64.b64encode(ROOT + b'x').decode()}\n",
        f"{ORIGIN}\n12\n{root.rstrip('=')}\n",
        f"{ORIGIN}\n12\n{urlsafe}\n",
        f"\n12\n{root}\n",
        f"{ORIGIN}\n12\n",
        f"{ORIGIN}\n12\n{root}\n\next\n",
        f"{ORIGIN}\n12\n{root}\n" + "e\n" * 17,
        f"{ORIGIN}\n12\n{root}\n" + "e" * 1025 + "\n",
        f"{ORIGIN}\n12\n{root}\n\n",
        "\n" + f"{ORIGIN}\n12\n{root}\n",
    ]


@pytest.mark.parametrize("body", malformed_bodies())
def test_malformed_checkpoints_are_refused_even_when_signed(body: str) -> None:
    signer = new_signer()
    with pytest.raises(SignatureError):
        open_checkpoint(sign_note(body, [signer]), [signer.verifier])


def test_other_malformed_notes() -> None:
    signer = new_signer()
    good = sign_checkpoint(ORIGIN, 12, ROOT, signer)
    for bad in (
        good.replace("\n\n", "\n\n\n"),
        good.replace("\n\n", "\n"),
        good + "\n",
        good.rstrip("\n"),
        good.replace("\n", "\r\n"),
        good + "x" * (64 * 1024),
    ):
        with pytest.raises(SignatureError):
            open_checkpoint(bad, [signer.verifier])


@pytest.mark.parametrize(
    ("origin", "size", "root", "extensions"),
    [
        ("", 1, ROOT, ()),
        ("a\nb", 1, ROOT, ()),
        ("o" * 257, 1, ROOT, ()),
        (ORIGIN, -1, ROOT, ()),
        (ORIGIN, 2**53, ROOT, ()),
        (ORIGIN, True, ROOT, ()),
        (ORIGIN, 1, ROOT[:31], ()),
        (ORIGIN, 1, ROOT, ("",)),
        (ORIGIN, 1, ROOT, ("a\tb",)),
    ],
)
def test_sign_checkpoint_refuses_what_open_would_refuse(
    origin: str, size: int, root: bytes, extensions: tuple[str, ...]
) -> None:
    with pytest.raises(ValueError):
        sign_checkpoint(origin, size, root, new_signer(), extensions)


@given(
    position=st.integers(min_value=0),
    replacement=st.text(max_size=2),
    delete=st.integers(min_value=0, max_value=2),
)
def test_every_edit_of_a_signed_checkpoint_is_refused_or_harmless(
    position: int, replacement: str, delete: int
) -> None:
    signer = new_signer()
    good = sign_checkpoint(ORIGIN, 4711, ROOT, signer)
    at = position % len(good)
    edited = good[:at] + replacement + good[at + delete :]
    try:
        opened = open_checkpoint(edited, [signer.verifier])
    except SignatureError:
        return
    assert opened == Checkpoint(ORIGIN, 4711, ROOT)
    assert edited.startswith(Checkpoint(ORIGIN, 4711, ROOT).body() + "\n")
