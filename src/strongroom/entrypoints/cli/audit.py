"""``strongroom audit ...``: verify, tail and export the audit log; create its signing key.

Reading the log is itself audited: ``tail`` and ``export`` first write an ``audit.read`` record
naming the operating-system user (``cli:<user>``), and refuse if they cannot (fail closed).
``verify`` shows no record content and must work on a tampered log, so it writes nothing.

``verify`` exits 0 only when every check passed *and* an external checkpoint covers the whole
log; 9 (``EXIT_INCOMPLETE``) when every check passed but completeness cannot be proven; 6
(``EXIT_SECURITY``) when a check failed, naming the first bad sequence number.
"""

from __future__ import annotations

import getpass
import json
import os
import secrets
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, BinaryIO

import typer
from rich.table import Table
from rich.text import Text

from strongroom import bootstrap
from strongroom.core.audit.record import bounded_text
from strongroom.entrypoints.cli.output import EXIT_INCOMPLETE, EXIT_SECURITY
from strongroom.errors import InvalidInputError
from strongroom.services.audit_reading import AuditReader

if TYPE_CHECKING:
    from strongroom.entrypoints.cli.state import CliState

app = typer.Typer(help="The tamper-evident audit log: verify, tail, export.", no_args_is_help=True)

_TAIL_COLUMNS = ("seq", "time", "principal", "action", "resource", "outcome", "reason")


def cli_reader() -> AuditReader:
    """The operating-system user running this command, as the reader of the log."""
    try:
        user = getpass.getuser()
    except (OSError, KeyError):  # no login name and no passwd entry (some containers)
        user = f"uid-{os.getuid()}"
    return AuditReader(
        principal=bounded_text(f"cli:{user}", 256), request_id=f"cli-{secrets.token_hex(8)}"
    )


@contextmanager
def _audit_log(state: CliState) -> Iterator[bootstrap.AuditLog]:
    log = bootstrap.AuditLog(state.settings)
    try:
        yield log
    finally:
        log.close()  # a last checkpoint covering this command's own records


def _printable(value: object) -> Text:
    """Record text for a terminal: control and other invisible characters escaped."""
    text = "" if value is None else str(value)
    return Text("".join(c if c.isprintable() else f"\\u{ord(c):04x}" for c in text))


@app.command()
def init(ctx: typer.Context) -> None:
    """Create the checkpoint signing key, external checkpoint directory and audit tables if
    missing (``strongroom init`` does this; use it to upgrade an older instance)."""
    state: CliState = ctx.obj
    key = bootstrap.initialise_audit(state.settings)
    vkey = bootstrap.load_audit_signer(state.settings).verifier.vkey
    state.output.emit(
        {"signing_key_file": str(key), "verifier_key": vkey},
        f"audit trail ready; checkpoint verifier key (publish it to auditors): {vkey}",
    )


@app.command()
def verify(ctx: typer.Context) -> None:
    """Check every record, the Merkle tree and every checkpoint; name the first bad record."""
    state: CliState = ctx.obj
    with _audit_log(state) as log:
        result = log.service().verify()
    state.output.emit(
        {
            "ok": result.ok,
            "records_checked": result.records_checked,
            "problem": None if result.problem is None else str(result.problem),
            "first_bad_seq": result.first_bad_seq,
            "suspect_range": result.suspect_range,
            "signed_size": result.signed_size,
            "proven_size": result.proven_size,
            "complete": result.complete,
            "completeness": result.completeness,
        },
    )
    if not result.ok:
        where = "" if result.first_bad_seq is None else f" at seq {result.first_bad_seq}"
        span = result.suspect_range
        state.output.note(f"audit log FAILED verification{where}: {result.problem}")
        if span is not None:
            state.output.note(
                f"records before {span[0]} are vouched for by a verified checkpoint; "
                f"the first tampered record is in [{span[0]}, {span[1]})"
            )
        raise typer.Exit(EXIT_SECURITY)
    state.output.note(
        f"audit log verified: {result.records_checked} records, "
        f"{result.signed_size} covered by signed checkpoints"
    )
    state.output.note(f"completeness: {result.completeness}")
    if not result.complete:
        raise typer.Exit(EXIT_INCOMPLETE)


@app.command()
def tail(
    ctx: typer.Context,
    count: Annotated[
        int, typer.Option("-n", "--count", min=1, max=10_000, help="How many records.")
    ] = 20,
) -> None:
    """Show the last records (this read's own audit.read record is the last one)."""
    state: CliState = ctx.obj
    with _audit_log(state) as log:
        records = log.service().tail(count, cli_reader())
    table = Table(*_TAIL_COLUMNS)
    for record in records:
        table.add_row(*(_printable(record[column]) for column in _TAIL_COLUMNS))
    state.output.emit(records, table)


def _canonical_line(record: dict[str, Any]) -> bytes:
    """The record's canonical bytes (compact, sorted JSON: see audit-record-v1) and a newline."""
    text = json.dumps(record, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return text.encode("utf-8") + b"\n"


def _open_out(path: Path) -> BinaryIO:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise InvalidInputError(f"{path} exists; export never overwrites") from None
    return os.fdopen(fd, "wb")


@app.command()
def export(
    ctx: typer.Context,
    start: Annotated[int, typer.Option(min=0, help="First sequence number.")] = 0,
    end: Annotated[
        int | None, typer.Option(min=0, help="Stop before this sequence number (default: all).")
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Write to this new file (0600), not stdout.")
    ] = None,
) -> None:
    """Write records as JSON lines, each line exactly a record's canonical bytes."""
    state: CliState = ctx.obj
    if end is not None and end < start:
        raise InvalidInputError("--end must not be below --start")
    handle = sys.stdout.buffer if out is None else _open_out(out)  # refuse before recording
    written = 0
    try:
        with _audit_log(state) as log:
            for record in log.service().export(cli_reader(), start=start, end=end):
                handle.write(_canonical_line(record))
                written += 1
    finally:
        handle.flush()
        if out is not None:
            handle.close()
    if out is not None:
        state.output.emit({"exported": written, "out": str(out)}, f"exported {written} records")
