"""kms layer; see docs/architecture.md."""
