"""Strongroom: deploy machine-learning models securely.

Encrypted, signed, versioned model registry; hardened inference API; tamper-evident audit trail.
"""

__version__ = "0.1.0"
