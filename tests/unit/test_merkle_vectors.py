"""RFC 6962 / RFC 9162 proofs against every main vector of transparency-dev/merkle.

The vectors live in ``../shared/vectors/merkle/testdata`` (read in place, never copied). Each JSON
file holds the inputs of one inclusion or consistency check and ``wantErr``: the check must
succeed exactly when ``wantErr`` is false. The ``subtree*`` folders are for subtree proofs, which
Strongroom does not implement; every other file below ``inclusion/`` and ``consistency/``
(including ``additional/`` and ``single-entry/``) is a main vector and is checked.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from strongroom.core.audit import merkle
from strongroom.errors import IntegrityError

pytestmark = pytest.mark.vectors

MAIN_VECTORS = 196
"""Per ``../shared/vectors/README.md``: 98 inclusion and 98 consistency vectors."""


def _b64(value: str | None) -> bytes:
    return base64.b64decode(value) if value else b""


def _proof(values: list[str] | None) -> list[bytes]:
    return [_b64(v) for v in values or []]


def _load(testdata: Path, kind: str) -> list[tuple[Path, dict[str, Any]]]:
    files = sorted((testdata / kind).rglob("*.json"))
    return [(path, json.loads(path.read_text())) for path in files]


def _inclusion_holds(vector: dict[str, Any]) -> bool:
    try:
        merkle.verify_inclusion(
            _b64(vector["leafHash"]),
            vector["leafIdx"],
            vector["treeSize"],
            _proof(vector["proof"]),
            _b64(vector["root"]),
        )
    except IntegrityError:
        return False
    return True


def _consistency_holds(vector: dict[str, Any]) -> bool:
    try:
        merkle.verify_consistency(
            vector["size1"],
            vector["size2"],
            _b64(vector["root1"]),
            _b64(vector["root2"]),
            _proof(vector["proof"]),
        )
    except IntegrityError:
        return False
    return True


def test_every_main_vector(vectors_dir: Path) -> None:
    testdata = vectors_dir / "merkle" / "testdata"
    inclusion = _load(testdata, "inclusion")
    consistency = _load(testdata, "consistency")
    assert len(inclusion) == 98
    assert len(consistency) == 98
    assert len(inclusion) + len(consistency) == MAIN_VECTORS

    wrong = [p.name for p, v in inclusion if _inclusion_holds(v) == v["wantErr"]]
    wrong += [p.name for p, v in consistency if _consistency_holds(v) == v["wantErr"]]
    assert wrong == []

    accepted = [v for _, v in inclusion if not v["wantErr"]]
    accepted += [v for _, v in consistency if not v["wantErr"]]
    # 10 "happy path" vectors and 2 static ones (a one-leaf tree, equal sizes of one).
    assert sum(v["desc"] == "happy path" for v in accepted) == 10
    assert len(accepted) == 12
    refused = MAIN_VECTORS - len(accepted)
    assert refused == 184


def test_happy_path_proofs_are_the_ones_we_generate(vectors_dir: Path) -> None:
    """The vectors' trees are RFC 6962 trees of the leaves 0..7 of RFC 6962's test data; our
    generator must produce the very proofs the vectors accept."""
    testdata = vectors_dir / "merkle" / "testdata"
    inputs = ["", "00", "10", "2021", "3031", "40414243", "5051525354555657"]
    inputs.append("606162636465666768696a6b6c6d6e6f")
    leaves = [merkle.hash_leaf(bytes.fromhex(h)) for h in inputs]
    tree = merkle.MerkleTree(leaves)
    checked = 0
    for _, vector in _load(testdata, "inclusion"):
        if vector["desc"] == "happy path" and vector["treeSize"] <= len(leaves):
            assert _b64(vector["root"]) == tree.root(vector["treeSize"])
            proof = tree.inclusion_proof(vector["leafIdx"], vector["treeSize"])
            assert proof == _proof(vector["proof"])
            checked += 1
    for _, vector in _load(testdata, "consistency"):
        if vector["desc"] == "happy path" and vector["size2"] <= len(leaves):
            assert _b64(vector["root2"]) == tree.root(vector["size2"])
            proof = tree.consistency_proof(vector["size1"], vector["size2"])
            assert proof == _proof(vector["proof"])
            checked += 1
    assert checked >= 8
