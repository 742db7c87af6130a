"""crypto layer; see docs/architecture.md."""
