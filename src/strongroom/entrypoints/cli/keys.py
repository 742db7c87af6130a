"""``strongroom keys ...``: list key-encryption-key versions, rotate, retire."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer
from rich.progress import Progress
from rich.table import Table

from strongroom.entrypoints.cli.output import EXIT_CONFLICT, EXIT_SECURITY

if TYPE_CHECKING:
    from strongroom.entrypoints.cli.state import CliState

app = typer.Typer(help="Key-encryption keys: list, rotate, retire.", no_args_is_help=True)


@app.command("list")
def list_(ctx: typer.Context) -> None:
    """List KEK versions and how many artifacts each one wraps."""
    state: CliState = ctx.obj
    usage = state.container.keys.usage()
    table = Table("key", "version", "created", "state", "artifacts")
    rows = []
    for item in usage:
        info = item.info
        status = "retired" if info.retired else "active"
        table.add_row(
            info.key_id,
            str(info.version),
            info.created_at.isoformat(),
            status,
            str(item.artifacts),
        )
        rows.append(
            {
                "key_id": info.key_id,
                "version": info.version,
                "created_at": info.created_at,
                "retired": info.retired,
                "artifacts": item.artifacts,
            }
        )
    state.output.emit(rows, table)


@app.command()
def rotate(
    ctx: typer.Context,
    retire_old: Annotated[
        bool, typer.Option("--retire-old", help="Retire every older version afterwards.")
    ] = False,
) -> None:
    """Create a new KEK version and re-wrap every data key (bodies are not re-encrypted)."""
    state: CliState = ctx.obj
    service = state.container.keys
    with (
        state.audited("key.rotate", service.key_id, retire_old=retire_old) as audit,
        Progress(console=state.output.errors, disable=state.output.json_mode) as progress,
    ):
        task = progress.add_task("re-wrapping data keys", total=None)

        def advance(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        report = service.rotate(retire_old=retire_old, on_progress=advance)
        audit.update(
            new_version=report.new_version.version,
            rewrapped=report.rewrapped,
            failures=len(report.failures),
            retired_below=report.retired_below,
        )
    failures = [
        {"model": f.model, "version": f.version, "path": f.path, "error": f.code}
        for f in report.failures
    ]
    summary = f"key version {report.new_version.version} is current; re-wrapped "
    summary += f"{report.rewrapped} data keys"
    if report.retired_below:
        summary += f"; versions below {report.retired_below} retired"
    state.output.emit(
        {
            "new_version": report.new_version.version,
            "rewrapped": report.rewrapped,
            "already_current": report.already_current,
            "retired_below": report.retired_below,
            "retire_refused": report.retire_refused,
            "failures": failures,
        },
        summary,
    )
    for failure in report.failures:
        state.output.warn(
            f"could not re-wrap {failure.model} v{failure.version} {failure.path}: {failure.code}"
        )
    if report.retire_refused:
        state.output.warn(f"older key versions were not retired: {report.retire_refused}")
    if report.failures:
        raise typer.Exit(EXIT_SECURITY)
    if report.retire_refused:
        raise typer.Exit(EXIT_CONFLICT)


@app.command()
def retire(
    ctx: typer.Context,
    below: Annotated[int, typer.Option("--below", help="Retire every version below this one.")],
) -> None:
    """Set the minimum decryption version (refused while artifacts still need older ones)."""
    state: CliState = ctx.obj
    keys = state.container.keys
    with state.audited("key.retire", keys.key_id, below=below):
        keys.retire_below(below)
    state.output.emit({"min_decryption_version": below}, f"key versions below {below} retired")
