"""``strongroom registry ...``: maintenance of the stored artifacts."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from strongroom.entrypoints.cli.state import CliState

app = typer.Typer(help="Registry maintenance.", no_args_is_help=True)


@app.command()
def gc(
    ctx: typer.Context,
    apply: Annotated[
        bool, typer.Option("--apply", help="Delete; without it, only report (dry run).")
    ] = False,
    min_age_minutes: Annotated[
        int,
        typer.Option(min=0, max=525_600, help="Leave alone blobs written more recently than this."),
    ] = 60,
) -> None:
    """Find (and with --apply delete) blobs that no version references.

    Such orphans are left by a publish interrupted between writing its blobs and committing its
    metadata. Blobs younger than --min-age-minutes are left alone: they may belong to a publish
    that is still running.
    """
    state: CliState = ctx.obj
    with state.audited("registry.gc", "artifacts", apply=apply) as audit:
        report = state.container.registry.collect_garbage(
            dry_run=not apply, min_age=timedelta(minutes=min_age_minutes)
        )
        audit["orphans"] = len(report.orphan_blobs)
    verb = "would delete" if report.dry_run else "deleted"
    state.output.emit(
        {
            "dry_run": report.dry_run,
            "orphan_blobs": report.orphan_blobs,
            "temporaries_removed": report.temporaries_removed,
            "too_young": report.too_young,
        },
        f"{verb} {len(report.orphan_blobs)} orphan blob(s)"
        + ("" if report.dry_run else f" and {report.temporaries_removed} temporary file(s)"),
    )
