"""http layer: the ASGI app and the server that runs it; see docs/architecture.md."""
