"""The tamper-evident audit trail's pure core: records, the Merkle tree, checkpoints, verification.

``record`` defines audit record v1 and its canonical bytes, ``merkle`` the RFC 6962 tree over their
leaf hashes, ``checkpoint`` the signed tree heads (C2SP checkpoints in the signed-note format), and
``verify`` the whole-log check behind ``strongroom audit verify``. No I/O: stores, the group-commit
writer and the sinks for external checkpoints live in adapters and services.
"""
