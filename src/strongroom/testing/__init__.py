"""testing layer; see docs/architecture.md."""
