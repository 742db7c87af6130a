"""``strongroom`` command line: the root app, global options and the error boundary.

Every command gets its services from ``bootstrap`` through ``CliState``; nothing here builds an
adapter. ``run()`` is the only place errors become exit codes (see ``output``).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated

import typer

from strongroom import __version__, bootstrap
from strongroom.entrypoints.cli import (
    accounts,
    audit,
    keys,
    limits,
    maintenance,
    models,
    principals,
    quickstart,
    serve,
)
from strongroom.entrypoints.cli.output import EXIT_FAILURE, Output
from strongroom.entrypoints.cli.state import CliState
from strongroom.errors import StrongroomError

app = typer.Typer(
    name="strongroom",
    help="Deploy machine-learning models securely: encrypted, signed, versioned registry.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(models.app, name="model")
app.add_typer(keys.app, name="keys")
app.add_typer(maintenance.app, name="registry")
app.add_typer(audit.app, name="audit")
app.add_typer(principals.app, name="principal")
app.add_typer(principals.apikeys, name="apikey")
app.add_typer(limits.app, name="limits")


@app.callback()
def main(
    ctx: typer.Context,
    home: Annotated[
        Path | None,
        typer.Option(
            "--home",
            envvar="STRONGROOM_HOME",
            help="Data directory of the instance (default: ./strongroom-data).",
        ),
    ] = None,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print one JSON document instead of tables.")
    ] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log details.")] = False,
) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    state = CliState(home=home, output=Output(json_mode=json_output))
    ctx.obj = state
    ctx.call_on_close(state.close)


@app.command()
def version(ctx: typer.Context) -> None:
    """Print the Strongroom version."""
    state: CliState = ctx.obj
    state.output.emit({"version": __version__}, f"strongroom {__version__}")


@app.command()
def init(
    ctx: typer.Context,
    admin_user: Annotated[
        str, typer.Option(help="Name of the first administrator (user:<name>).")
    ] = "admin",
    admin_password_file: Annotated[
        Path | None,
        typer.Option(help="Read the administrator's password from this file (else generated)."),
    ] = None,
) -> None:
    """Create an embedded instance: data directory, sealed keyring, databases, audit key,
    server secret, development TLS certificate and the first administrator (password + TOTP)."""
    state: CliState = ctx.obj
    result = bootstrap.initialise(state.settings)
    if result.generated_passphrase_file is not None:
        state.override(keyring_passphrase_file=result.generated_passphrase_file)
    admin = accounts.create_admin_account(state, admin_user, admin_password_file)
    state.output.emit(
        {
            "home": str(result.home),
            "keyring": str(result.keyring),
            "generated_passphrase_file": (
                str(result.generated_passphrase_file) if result.generated_passphrase_file else None
            ),
            "admin": admin.user_id,
            "admin_password": admin.generated_password,
            "admin_totp_secret": admin.totp_secret,
            "admin_totp_uri": admin.totp_uri,
        },
        f"initialised Strongroom in {result.home}",
    )
    if result.generated_passphrase_file is not None:
        state.output.warn(
            f"generated a development keyring passphrase in {result.generated_passphrase_file}; "
            "in production keep it outside the data directory and point "
            "STRONGROOM_KEYRING_PASSPHRASE_FILE at it"
        )
    if not state.output.json_mode:
        _show_admin(state, admin)


def _show_admin(state: CliState, admin: accounts.AdminAccount) -> None:
    out = state.output
    out.note(f"administrator {admin.user_id} (shown once, keep it safe):")
    if admin.generated_password is not None:
        out.note(f"  password:    {admin.generated_password}")
    out.note(f"  TOTP secret: {admin.totp_secret}")
    out.note(f"  TOTP URI:    {admin.totp_uri}")


app.command(name="quickstart")(quickstart.quickstart)
app.command(name="serve")(serve.serve)


def run() -> None:
    """Console-script entry point: the one error boundary of the CLI.

    Typer's standalone mode handles usage errors (exit 2), ``--help`` and ``typer.Exit``;
    everything Strongroom raises on purpose becomes its stable code and exit status here, and
    anything else a one-line internal error, never a traceback.
    """
    output = Output(json_mode="--json" in sys.argv[1:])
    try:
        app()
    except StrongroomError as error:
        sys.exit(output.error(error))
    except Exception as exc:
        logging.getLogger("strongroom").info("unexpected error", exc_info=True)
        output.errors.print(
            f"error [internal]: unexpected {type(exc).__name__}; run with -v for details",
            markup=False,
        )
        sys.exit(EXIT_FAILURE)
