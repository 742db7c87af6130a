"""``strongroom principal ...`` and ``strongroom apikey ...``: identities and their credentials."""

from __future__ import annotations

import typer

app = typer.Typer(help="Principals (users, services), roles and grants.", no_args_is_help=True)
apikeys = typer.Typer(help="API keys: issue, rotate, revoke, list.", no_args_is_help=True)
