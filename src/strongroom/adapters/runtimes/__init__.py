"""runtimes layer; see docs/architecture.md."""
