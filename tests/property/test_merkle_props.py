"""Property tests of the RFC 6962 Merkle tree against independent, recursive oracles.

The oracles follow the RFC's recursive definitions literally (MTH, PATH, SUBPROOF) and evaluate
proofs by recursion, while ``merkle`` builds levels and verifies with RFC 9162's bit arithmetic:
two different routes to the same answers.

Mutations: a changed bit in a proof element, a root or the leaf must always be refused. A changed
index or size is refused *unless* it describes the same chain of hashes: an inclusion proof for
leaf 0 of a 3-leaf tree also "proves" leaf 0 of a 4-leaf tree whose last leaf is missing, because
proofs do not bind the size; the signed checkpoint does. For those, verification must agree with
the recursive oracle, and the oracle must refuse almost every such mutation.
"""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from strongroom.core.audit import merkle
from strongroom.errors import IntegrityError


def make_leaves(size: int, seed: int) -> list[bytes]:
    return [merkle.hash_leaf(f"{seed}/{i}".encode()) for i in range(size)]


def split(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def mth(leaves: list[bytes]) -> bytes:
    """RFC 6962 2.1 MTH, by its recursive definition."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return leaves[0]
    k = split(len(leaves))
    return hashlib.sha256(b"\x01" + mth(leaves[:k]) + mth(leaves[k:])).digest()


def path(m: int, leaves: list[bytes]) -> list[bytes]:
    """RFC 6962 2.1.1 PATH, literally."""
    if len(leaves) == 1:
        return []
    k = split(len(leaves))
    if m < k:
        return [*path(m, leaves[:k]), mth(leaves[k:])]
    return [*path(m - k, leaves[k:]), mth(leaves[:k])]


def subproof(m: int, leaves: list[bytes], b: bool) -> list[bytes]:
    """RFC 6962 2.1.2 SUBPROOF, literally."""
    n = len(leaves)
    if m == n:
        return [] if b else [mth(leaves)]
    k = split(n)
    if m <= k:
        return [*subproof(m, leaves[:k], b), mth(leaves[k:])]
    return [*subproof(m - k, leaves[k:], False), mth(leaves[:k])]


class ShortProofError(Exception):
    pass


def inclusion_oracle(leaf: bytes, index: int, size: int, proof: list[bytes], root: bytes) -> bool:
    """Does ``proof`` recompute ``root``, evaluated by recursion over the tree's shape?"""
    if not 0 <= index < size or any(len(h) != 32 for h in [leaf, root, *proof]):
        return False
    rest = list(proof)

    def up(i: int, n: int) -> bytes:
        if n == 1:
            return leaf
        if not rest:
            raise ShortProofError
        k, sibling = split(n), rest.pop()
        if i < k:
            return merkle.hash_children(up(i, k), sibling)
        return merkle.hash_children(sibling, up(i - k, n - k))

    try:
        computed = up(index, size)
    except ShortProofError:
        return False
    return not rest and computed == root


def consistency_oracle(m: int, n: int, old: bytes, new: bytes, proof: list[bytes]) -> bool:
    if not 0 < m < n:
        return 0 <= m == n and not proof and old == new and (m > 0 or old == mth([]))
    if any(len(h) != 32 for h in [old, new, *proof]):
        return False
    rest = list(proof)

    def up(m: int, n: int, own: bool) -> tuple[bytes, bytes]:
        if m == n:
            if own:
                return old, old
            if not rest:
                raise ShortProofError
            node = rest.pop()
            return node, node
        if not rest:
            raise ShortProofError
        k, sibling = split(n), rest.pop()
        if m <= k:
            first, second = up(m, k, own)
            return first, merkle.hash_children(second, sibling)
        first, second = up(m - k, n - k, False)
        return merkle.hash_children(sibling, first), merkle.hash_children(sibling, second)

    try:
        first, second = up(m, n, True)
    except ShortProofError:
        return False
    return not rest and first == old and second == new


def holds(check: object, *args: object) -> bool:
    try:
        check(*args)  # type: ignore[operator]
    except IntegrityError:
        return False
    return True


def flip(value: bytes, bit: int) -> bytes:
    data = bytearray(value)
    data[(bit // 8) % len(data)] ^= 1 << (bit % 8)
    return bytes(data)


sizes = st.integers(min_value=0, max_value=300)
seeds = st.integers(min_value=0, max_value=2**32)


@given(size=sizes, seed=seeds)
def test_roots_agree(size: int, seed: int) -> None:
    leaves = make_leaves(size, seed)
    expected = mth(leaves)
    builder = merkle.TreeBuilder()
    for leaf in leaves:
        builder.append(leaf)
    assert merkle.root(leaves) == expected
    assert merkle.MerkleTree(leaves).root() == expected
    assert builder.root() == expected
    assert builder.size == size
    assert len(builder.nodes) == size.bit_count()
    restored = merkle.TreeBuilder.restore(size, builder.nodes)
    assert restored.root() == expected


@settings(max_examples=30)
@given(size=st.integers(min_value=0, max_value=150), seed=seeds)
def test_builder_root_equals_every_prefix_root(size: int, seed: int) -> None:
    leaves = make_leaves(size, seed)
    tree = merkle.MerkleTree(leaves)
    builder = merkle.TreeBuilder()
    assert builder.root() == tree.root(0) == merkle.EMPTY_ROOT
    for m, leaf in enumerate(leaves, start=1):
        builder.append(leaf)
        assert builder.root() == tree.root(m) == mth(leaves[:m])


@given(size=st.integers(min_value=1, max_value=300), seed=seeds, data=st.data())
def test_inclusion_proofs_verify_and_match_the_rfc(
    size: int, seed: int, data: st.DataObject
) -> None:
    leaves = make_leaves(size, seed)
    tree = merkle.MerkleTree(leaves)
    tree_size = data.draw(st.integers(min_value=1, max_value=size))
    index = data.draw(st.integers(min_value=0, max_value=tree_size - 1))
    proof = tree.inclusion_proof(index, tree_size)
    root = tree.root(tree_size)
    assert proof == path(index, leaves[:tree_size])
    merkle.verify_inclusion(leaves[index], index, tree_size, proof, root)
    if tree_size == size:
        assert merkle.inclusion_proof(leaves, index) == proof


@given(size=st.integers(min_value=1, max_value=300), seed=seeds, data=st.data())
def test_consistency_proofs_verify_and_match_the_rfc(
    size: int, seed: int, data: st.DataObject
) -> None:
    leaves = make_leaves(size, seed)
    old_size = data.draw(st.integers(min_value=1, max_value=size))
    proof = merkle.consistency_proof(leaves, old_size)
    assert proof == (subproof(old_size, leaves, True) if old_size < size else [])
    merkle.verify_consistency(old_size, size, mth(leaves[:old_size]), mth(leaves), proof)


@given(size=st.integers(min_value=1, max_value=300), seed=seeds, data=st.data())
def test_inclusion_mutations(size: int, seed: int, data: st.DataObject) -> None:
    leaves = make_leaves(size, seed)
    index = data.draw(st.integers(min_value=0, max_value=size - 1))
    proof = merkle.inclusion_proof(leaves, index)
    root = merkle.root(leaves)
    bit = data.draw(st.integers(min_value=0, max_value=255))
    # Content mutations: always refused.
    assert not holds(merkle.verify_inclusion, flip(leaves[index], bit), index, size, proof, root)
    assert not holds(merkle.verify_inclusion, leaves[index], index, size, proof, flip(root, bit))
    if proof:
        at = data.draw(st.integers(min_value=0, max_value=len(proof) - 1))
        bad = [*proof[:at], flip(proof[at], bit), *proof[at + 1 :]]
        assert not holds(merkle.verify_inclusion, leaves[index], index, size, bad, root)
        assert not holds(merkle.verify_inclusion, leaves[index], index, size, proof[:-1], root)
    assert not holds(merkle.verify_inclusion, leaves[index], index, size, [*proof, root], root)
    # Position mutations: refused exactly when the recursive oracle refuses them.
    other_index = data.draw(
        st.integers(min_value=-2, max_value=size + 2).filter(lambda i: i != index)
    )
    other_size = data.draw(
        st.integers(min_value=0, max_value=2 * size + 2).filter(lambda n: n != size)
    )
    for i, n in ((other_index, size), (index, other_size)):
        expected = inclusion_oracle(leaves[index], i, n, proof, root)
        assert holds(merkle.verify_inclusion, leaves[index], i, n, proof, root) == expected
    assert not inclusion_oracle(leaves[index], other_index, size, proof, root)


@given(size=st.integers(min_value=2, max_value=300), seed=seeds, data=st.data())
def test_consistency_mutations(size: int, seed: int, data: st.DataObject) -> None:
    leaves = make_leaves(size, seed)
    old_size = data.draw(st.integers(min_value=1, max_value=size - 1))
    proof = merkle.consistency_proof(leaves, old_size)
    old, new = mth(leaves[:old_size]), mth(leaves)
    bit = data.draw(st.integers(min_value=0, max_value=255))
    at = data.draw(st.integers(min_value=0, max_value=len(proof) - 1))
    bad = [*proof[:at], flip(proof[at], bit), *proof[at + 1 :]]
    assert not holds(merkle.verify_consistency, old_size, size, old, new, bad)
    assert not holds(merkle.verify_consistency, old_size, size, flip(old, bit), new, proof)
    assert not holds(merkle.verify_consistency, old_size, size, old, flip(new, bit), proof)
    assert not holds(merkle.verify_consistency, old_size, size, old, new, proof[:-1])
    assert not holds(merkle.verify_consistency, old_size, size, old, new, [*proof, new])
    assert not holds(merkle.verify_consistency, old_size, size, new, old, proof)
    m2 = data.draw(st.integers(min_value=-1, max_value=size + 1).filter(lambda m: m != old_size))
    n2 = data.draw(st.integers(min_value=0, max_value=2 * size).filter(lambda n: n != size))
    for m, n in ((m2, size), (old_size, n2)):
        expected = consistency_oracle(m, n, old, new, proof)
        assert holds(merkle.verify_consistency, m, n, old, new, proof) == expected


@settings(max_examples=25)
@given(size=st.integers(min_value=1, max_value=64), seed=seeds)
def test_size_and_index_mutations_are_almost_always_refused(size: int, seed: int) -> None:
    """Over every leaf of a tree and every other size and index, the oracle (and so the verifier)
    accepts a moved proof only in the rare same-shape cases."""
    leaves = make_leaves(size, seed)
    tree = merkle.MerkleTree(leaves)
    root = tree.root()
    accepted = tried = 0
    for index in range(size):
        proof = tree.inclusion_proof(index)
        for n in range(1, 2 * size + 1):
            if n == size:
                continue
            tried += 1
            verdict = holds(merkle.verify_inclusion, leaves[index], index, n, proof, root)
            assert verdict == inclusion_oracle(leaves[index], index, n, proof, root)
            accepted += verdict
        for i in range(size):
            if i != index:
                assert not holds(merkle.verify_inclusion, leaves[index], i, size, proof, root)
    assert accepted <= tried // 2


def test_a_proof_does_not_bind_the_tree_size() -> None:
    """Why size mutations are compared with an oracle: this is RFC 6962, not a bug."""
    leaves = make_leaves(3, 0)
    proof = merkle.inclusion_proof(leaves, 0)
    merkle.verify_inclusion(leaves[0], 0, 4, proof, merkle.root(leaves))
    with pytest.raises(IntegrityError):
        merkle.verify_inclusion(leaves[0], 0, 6, proof, merkle.root(leaves))
