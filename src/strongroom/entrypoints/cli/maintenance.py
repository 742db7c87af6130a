"""``strongroom registry ...``: maintenance of the stored artifacts."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from strongroom.entrypoints.cli.main import CliState

app = typer.Typer(help="Registry maintenance.", no_args_is_help=True)


@app.command()
def gc(
    ctx: typer.Context,
    apply: Annotated[
        bool, typer.Option("--apply", help="Delete; without it, only report (dry run).")
    ] = False,
) -> None:
    """Find (and with --apply delete) blobs that no version references.

    Such orphans are left by a publish interrupted between writing its blobs and committing its
    metadata. Run it when no publish is in progress.
    """
    state: CliState = ctx.obj
    report = state.container.registry.collect_garbage(dry_run=not apply)
    verb = "would delete" if report.dry_run else "deleted"
    state.output.emit(
        {
            "dry_run": report.dry_run,
            "orphan_blobs": report.orphan_blobs,
            "temporaries_removed": report.temporaries_removed,
        },
        f"{verb} {len(report.orphan_blobs)} orphan blob(s)"
        + ("" if report.dry_run else f" and {report.temporaries_removed} temporary file(s)"),
    )
