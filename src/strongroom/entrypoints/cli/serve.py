"""``strongroom serve``: run the HTTPS server of this instance until interrupted.

Command-line options override the settings (environment, ``strongroom.toml``) for this run only;
``entrypoints.http.server.serve`` hands them on to the worker processes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from strongroom.config import load_settings
from strongroom.entrypoints.http import server

if TYPE_CHECKING:
    from strongroom.entrypoints.cli.state import CliState


def serve(
    ctx: typer.Context,
    host: Annotated[
        str | None,
        typer.Option(help="Address to listen on (default 127.0.0.1; 0.0.0.0 for all)."),
    ] = None,
    port: Annotated[int | None, typer.Option(min=1, max=65535, help="Port (default 8443).")] = None,
    workers: Annotated[
        int | None, typer.Option(min=1, max=64, help="Worker processes (default 1).")
    ] = None,
    unsafe_plaintext: Annotated[
        bool,
        typer.Option(
            "--unsafe-plaintext",
            help="Serve plain HTTP without TLS: only behind a TLS-terminating proxy on a"
            " trusted network. Warned about at every start.",
        ),
    ] = False,
) -> None:
    """Serve the inference and admin APIs over HTTPS (TLS 1.2+, optional mTLS)."""
    state: CliState = ctx.obj  # uvicorn logs where it listens; the server logs its certificate
    settings = load_settings(
        home=state.home,
        host=host,
        port=port,
        workers=workers,
        unsafe_plaintext=True if unsafe_plaintext else None,
    )
    server.serve(settings)
