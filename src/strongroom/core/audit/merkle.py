"""RFC 6962 / RFC 9162 Merkle tree over audit leaf hashes: roots, proofs and their verification.

The audit log is the ordered list of its records' leaf hashes (``SHA-256(0x00 || record)``,
computed by ``record.leaf_hash``); this module only ever sees those 32-byte hashes. It is the
tree of RFC 6962 section 2.1 (equivalently RFC 9162 section 2.1 and c2sp.org/merkle-tree):

* the empty tree hashes to ``SHA-256("")``;
* an interior node is ``SHA-256(0x01 || left || right)``;
* a tree of ``n > 1`` leaves splits at ``k``, the largest power of two smaller than ``n``.

Three tools, for three callers:

* ``TreeBuilder`` (a *compact range*) is for the writer: ``append`` is O(1) amortised, memory is
  one hash per set bit of the size (at most 53), and ``root()`` is O(log n). Its state can be
  persisted and restored, so a restarted writer need not re-read the whole log.
* ``MerkleTree`` is a snapshot of a whole list of leaves, for serving proofs: building it costs
  one hash per leaf, and every root, inclusion proof and consistency proof for any size up to the
  snapshot's is then O(log n). The module functions ``root``/``inclusion_proof``/
  ``consistency_proof`` are one-shot conveniences over it.
* ``verify_inclusion``/``verify_consistency`` are RFC 9162 sections 2.1.3.2 and 2.1.4.2, and
  pass every main vector of transparency-dev/merkle. They raise ``IntegrityError`` (opaque, no
  reason given) and return nothing: there is no boolean to forget to check.

Invariants: pure (no I/O), no module-level mutable state, all hashes are ``bytes`` of length 32;
a leaf of any other length is a ``ValueError`` when *building* (a caller bug) and a failed proof
when *verifying* (untrusted input).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from typing import Final

from strongroom.errors import IntegrityError

HASH_BYTES: Final = 32
EMPTY_ROOT: Final = hashlib.sha256(b"").digest()
"""The root of the tree of no leaves: SHA-256 of the empty string."""
_LEAF_PREFIX: Final = b"\x00"
_NODE_PREFIX: Final = b"\x01"


def hash_leaf(data: bytes) -> bytes:
    """RFC 6962 leaf hash of an entry: ``SHA-256(0x00 || data)``."""
    return hashlib.sha256(_LEAF_PREFIX + data).digest()


def hash_children(left: bytes, right: bytes) -> bytes:
    """RFC 6962 interior node hash: ``SHA-256(0x01 || left || right)``."""
    return hashlib.sha256(_NODE_PREFIX + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two strictly smaller than ``n`` (``n >= 2``)."""
    return 1 << ((n - 1).bit_length() - 1)


def _check_leaf(leaf_hash: bytes) -> None:
    if not isinstance(leaf_hash, bytes) or len(leaf_hash) != HASH_BYTES:
        raise ValueError("a leaf hash is 32 bytes")


# --- incremental building -------------------------------------------------------------------------


class TreeBuilder:
    """The compact range ``[0, size)``: the roots of the perfect subtrees that make up the tree.

    ``nodes`` lists those roots from the largest (leftmost) subtree to the smallest, one per set
    bit of ``size``. That is all the state needed to append and to compute the root, so the
    writer can persist ``(size, nodes)`` next to each checkpoint and ``restore`` them on start.
    Restored state is untrusted until its ``root()`` equals the root of a verified checkpoint.
    """

    __slots__ = ("_nodes", "_size")

    def __init__(self) -> None:
        self._size = 0
        self._nodes: list[bytes] = []

    @classmethod
    def restore(cls, size: int, nodes: Sequence[bytes]) -> TreeBuilder:
        """Resume from persisted ``(size, nodes)``; ``ValueError`` if their shapes disagree."""
        if size < 0 or len(nodes) != size.bit_count():
            raise ValueError("a compact range has one node per set bit of its size")
        for node in nodes:
            _check_leaf(node)
        builder = cls()
        builder._size = size
        builder._nodes = list(nodes)
        return builder

    @property
    def size(self) -> int:
        return self._size

    @property
    def nodes(self) -> tuple[bytes, ...]:
        return tuple(self._nodes)

    def append(self, leaf_hash: bytes) -> None:
        """Add the next leaf. Each trailing set bit of the old size merges one subtree."""
        _check_leaf(leaf_hash)
        node, size = leaf_hash, self._size
        while size & 1:
            node = hash_children(self._nodes.pop(), node)
            size >>= 1
        self._nodes.append(node)
        self._size += 1

    def root(self) -> bytes:
        """The RFC 6962 root of the leaves appended so far (folds the subtrees right to left)."""
        if not self._nodes:
            return EMPTY_ROOT
        node = self._nodes[-1]
        for left in reversed(self._nodes[:-1]):
            node = hash_children(left, node)
        return node

    def copy(self) -> TreeBuilder:
        return TreeBuilder.restore(self._size, self._nodes)


# --- snapshots and proofs -------------------------------------------------------------------------


class MerkleTree:
    """All levels of the tree over a fixed list of leaves, for O(log n) roots and proofs.

    Level 0 holds the leaves; level ``h`` holds the roots of the perfect, aligned subtrees of
    ``2**h`` leaves. Any subtree the RFC recursion asks for is either one of those or splits into
    one of those and a smaller right part, so each lookup costs O(log n) hashes. Memory is about
    two hashes per leaf (6.4 MB for 100,000 leaves).
    """

    __slots__ = ("_levels",)

    def __init__(self, leaves: Sequence[bytes]) -> None:
        level = list(leaves)
        for leaf in level:
            _check_leaf(leaf)
        levels = [level]
        while len(level) > 1:
            level = [hash_children(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
            levels.append(level)
        self._levels = levels

    @property
    def size(self) -> int:
        return len(self._levels[0])

    def _size_or_default(self, size: int | None) -> int:
        chosen = self.size if size is None else size
        if not 0 <= chosen <= self.size:
            raise ValueError("tree size out of range")
        return chosen

    def _subtree(self, lo: int, hi: int) -> bytes:
        """MTH of leaves ``[lo, hi)``, ``lo < hi``."""
        n = hi - lo
        height = n.bit_length() - 1
        if n == 1 << height and lo % n == 0:
            return self._levels[height][lo >> height]
        k = _split(n)
        return hash_children(self._subtree(lo, lo + k), self._subtree(lo + k, hi))

    def root(self, size: int | None = None) -> bytes:
        """The root of the first ``size`` leaves (all of them by default)."""
        n = self._size_or_default(size)
        return EMPTY_ROOT if n == 0 else self._subtree(0, n)

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        """RFC 9162 2.1.3.1 PATH(index, D[0:size]), ordered from the leaf up."""
        n = self._size_or_default(size)
        if not 0 <= index < n:
            raise ValueError("leaf index out of range")
        path: list[bytes] = []
        lo, hi = 0, n
        while hi - lo > 1:
            k = _split(hi - lo)
            if index < lo + k:
                path.append(self._subtree(lo + k, hi))
                hi = lo + k
            else:
                path.append(self._subtree(lo, lo + k))
                lo += k
        path.reverse()
        return path

    def consistency_proof(self, old_size: int, new_size: int | None = None) -> list[bytes]:
        """RFC 9162 2.1.4.1 PROOF(old_size, D[0:new_size]).

        Empty when the sizes are equal. ``old_size == 0 < new_size`` is refused: every tree
        extends the empty tree, so there is nothing to prove (and verifiers refuse such proofs).
        """
        n = self._size_or_default(new_size)
        if not 0 <= old_size <= n:
            raise ValueError("old size out of range")
        if old_size == n:
            return []
        if old_size == 0:
            raise ValueError("a consistency proof from the empty tree is meaningless")
        proof: list[bytes] = []
        lo, hi, include_own = 0, n, True
        while old_size != hi:
            k = _split(hi - lo)
            if old_size <= lo + k:
                proof.append(self._subtree(lo + k, hi))
                hi = lo + k
            else:
                proof.append(self._subtree(lo, lo + k))
                lo, include_own = lo + k, False
        if not include_own:
            proof.append(self._subtree(lo, hi))
        proof.reverse()
        return proof


def root(leaves: Sequence[bytes]) -> bytes:
    """The RFC 6962 root of ``leaves`` (leaf hashes), in O(log n) memory."""
    builder = TreeBuilder()
    for leaf in leaves:
        builder.append(leaf)
    return builder.root()


def inclusion_proof(leaves: Sequence[bytes], index: int) -> list[bytes]:
    """Inclusion proof of ``leaves[index]`` in the tree of all ``leaves``."""
    return MerkleTree(leaves).inclusion_proof(index)


def consistency_proof(leaves: Sequence[bytes], old_size: int) -> list[bytes]:
    """Proof that the tree of ``leaves[:old_size]`` is a prefix of the tree of ``leaves``."""
    return MerkleTree(leaves).consistency_proof(old_size)


# --- verification ---------------------------------------------------------------------------------


def _same(a: bytes, b: bytes) -> bool:
    return hmac.compare_digest(a, b)


def _all_hashes(values: Sequence[bytes]) -> bool:
    return all(isinstance(v, bytes) and len(v) == HASH_BYTES for v in values)


def verify_inclusion(
    leaf_hash: bytes, index: int, tree_size: int, proof: Sequence[bytes], root: bytes
) -> None:
    """Raise ``IntegrityError`` unless ``proof`` shows ``leaf_hash`` at ``index`` under ``root``.

    RFC 9162 section 2.1.3.2, with every hash required to be 32 bytes.
    """
    if not 0 <= index < tree_size or not _all_hashes([leaf_hash, root, *proof]):
        raise IntegrityError
    fn, sn, node = index, tree_size - 1, leaf_hash
    for sibling in proof:
        if sn == 0:
            raise IntegrityError
        if fn & 1 or fn == sn:
            node = hash_children(sibling, node)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            node = hash_children(node, sibling)
        fn >>= 1
        sn >>= 1
    if sn != 0 or not _same(node, root):
        raise IntegrityError


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> None:
    """Raise ``IntegrityError`` unless ``proof`` shows the old tree is a prefix of the new one.

    RFC 9162 section 2.1.4.2, with the edge cases of transparency-dev/merkle (whose vectors this
    passes): equal sizes need an empty proof and equal roots (and size 0 needs the empty-tree
    root); a proof *from* size 0 to a larger size is refused as meaningless.
    """
    if not 0 <= old_size <= new_size:
        raise IntegrityError
    if old_size == new_size:
        if proof or not _same(old_root, new_root):
            raise IntegrityError
        if old_size == 0 and not _same(old_root, EMPTY_ROOT):
            raise IntegrityError
        return
    if old_size == 0 or not proof or not _all_hashes([old_root, new_root, *proof]):
        raise IntegrityError
    path = list(proof)
    if old_size == 1 << (old_size.bit_length() - 1):
        path.insert(0, old_root)
    first, second = _consistency_roots(old_size, new_size, path)
    if not _same(first, old_root) or not _same(second, new_root):
        raise IntegrityError


def _consistency_roots(old_size: int, new_size: int, path: list[bytes]) -> tuple[bytes, bytes]:
    """Steps 3 to 7 of RFC 9162 2.1.4.2: the old and new roots that ``path`` implies."""
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    first = second = path[0]
    for node in path[1:]:
        if sn == 0:
            raise IntegrityError
        if fn & 1 or fn == sn:
            first = hash_children(node, first)
            second = hash_children(node, second)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            second = hash_children(second, node)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise IntegrityError
    return first, second
