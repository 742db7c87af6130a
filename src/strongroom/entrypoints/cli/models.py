"""``strongroom model ...``: push, list, show, promote, rollback, verify, export-signature."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from strongroom.core.registry.formats import ModelFormat
from strongroom.core.registry.manifest import ModelCard
from strongroom.core.registry.model import Stage
from strongroom.entrypoints.cli.state import cli_actor
from strongroom.entrypoints.cli.uploads import read_upload
from strongroom.errors import InvalidInputError
from strongroom.services.publishing import PublishRequest
from strongroom.services.registry import VersionView
from strongroom.services.signing import sign_files

if TYPE_CHECKING:
    from strongroom.entrypoints.cli.state import CliState

app = typer.Typer(help="Publish, inspect and move model versions.", no_args_is_help=True)

MAX_SIDE_FILE_BYTES = 64 * 1024 * 1024
MAX_VERSION = 2**31 - 1


def _read_side_file(path: Path | None, what: str) -> bytes | None:
    if path is None:
        return None
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_SIDE_FILE_BYTES + 1)
    except OSError as exc:
        raise InvalidInputError(f"cannot read {what} {path}: {exc.strerror}") from None
    if len(data) > MAX_SIDE_FILE_BYTES:
        raise InvalidInputError(f"{what} {path} is larger than {MAX_SIDE_FILE_BYTES} bytes")
    return data


def _read_json(path: Path | None, what: str) -> Any:
    data = _read_side_file(path, what)
    if data is None:
        return None
    try:
        return json.loads(data, parse_constant=_reject_constant)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidInputError(f"{what} {path} is not valid JSON: {exc}") from None


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not allowed")


def _card(card_file: Path | None, owner: str | None, description: str | None) -> ModelCard:
    raw = _read_json(card_file, "model card") or {}
    if not isinstance(raw, dict):
        raise InvalidInputError("the model card must be a JSON object")
    if owner is not None:
        raw["owner"] = owner
    if description is not None:
        raw["description"] = description
    if "owner" not in raw:
        raise InvalidInputError("a model card owner is required", hint="pass --owner or --card")
    return ModelCard.from_dict(raw)


@app.command()
def push(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Model name, e.g. fraud.")],
    path: Annotated[Path, typer.Argument(help="Model file, directory or .zip/.tar(.gz) archive.")],
    sign_key: Annotated[
        Path | None, typer.Option(help="ECDSA P-256 private key (PEM) to sign with.")
    ] = None,
    sign_key_password_file: Annotated[
        Path | None, typer.Option(help="File holding the signing key's password.")
    ] = None,
    signature: Annotated[
        Path | None, typer.Option(help="Existing signature bundle (e.g. from model_signing).")
    ] = None,
    schema: Annotated[Path | None, typer.Option(help="Input schema JSON.")] = None,
    reference: Annotated[
        Path | None, typer.Option(help="Reference sample (CSV with header) to infer ranges.")
    ] = None,
    card: Annotated[Path | None, typer.Option(help="Model card JSON.")] = None,
    owner: Annotated[str | None, typer.Option(help="Model card owner.")] = None,
    description: Annotated[str | None, typer.Option(help="Model card description.")] = None,
    model_format: Annotated[
        ModelFormat | None, typer.Option("--format", help="Declared format (else detected).")
    ] = None,
    primary: Annotated[
        str | None, typer.Option(help="Model file inside a directory or archive.")
    ] = None,
    trusted_type: Annotated[
        list[str] | None, typer.Option(help="skops: a type the model may load (repeatable).")
    ] = None,
) -> None:
    """Sign (optionally), encrypt and publish a new model version."""
    state: CliState = ctx.obj
    registry = state.container.registry
    files, single_file, excluded = read_upload(
        path, signature, max_bytes=state.settings.max_upload_bytes, limits=registry.limits
    )
    bundle = _read_side_file(signature, "signature")
    try:
        bundle_text = bundle.decode("utf-8") if bundle is not None else None
    except UnicodeDecodeError:
        raise InvalidInputError(f"signature {signature} is not UTF-8 JSON") from None
    if sign_key is not None:
        if bundle_text is not None:
            raise InvalidInputError("use either --sign-key or --signature, not both")
        password = _read_side_file(sign_key_password_file, "key password file")
        bundle_text = sign_files(
            files,
            subject_name=name,
            private_key_pem=_read_side_file(sign_key, "signing key") or b"",
            password=password.rstrip(b"\r\n") if password else None,
            single_file=single_file,
        )
    with (
        state.audited("model.push", name) as audit,
        state.output.console.status("encrypting and publishing...", spinner="dots"),
    ):
        result = registry.publish(
            PublishRequest(
                model=name,
                files=files,
                card=_card(card, owner, description),
                actor=cli_actor(),
                single_file=single_file,
                primary=primary,
                declared_format=model_format,
                signature_bundle=bundle_text,
                input_schema_json=_read_side_file(schema, "schema"),
                reference_csv=_read_side_file(reference, "reference sample"),
                trusted_types=tuple(trusted_type or ()),
            )
        )
        audit.update(
            model_version=result.record.version,
            manifest_digest=result.record.manifest_digest,
            signer=result.signer,
            unsafe_unsigned=result.signer is None,
        )
    for warning in result.warnings:
        state.output.warn(warning)
    for skipped in excluded:
        state.output.warn(f"not published (signature file): {skipped}")
    view = VersionView(record=result.record, manifest=result.manifest)
    state.output.emit(
        {**version_dict(view), "signer": result.signer},
        f"published {name} v{result.record.version} "
        f"({result.manifest.format.value}, signer: {result.signer or 'UNSIGNED'}, "
        f"manifest {result.record.manifest_digest[:16]}...)",
    )


def version_dict(view: VersionView) -> dict[str, Any]:
    record, manifest = view.record, view.manifest
    return {
        "model": record.model,
        "version": record.version,
        "stage": record.stage.value,
        "format": manifest.format.value,
        "manifest_digest": record.manifest_digest,
        "signed": manifest.signature_sha256 is not None,
        "created_at": record.created_at.isoformat(),
        "created_by": record.created_by,
        "files": [{"path": f.path, "sha256": f.sha256, "size": f.size} for f in manifest.files],
        "primary": manifest.primary,
        "card": manifest.card.to_dict(),
        "input_schema": dict(manifest.input_schema),
        "trusted_types": list(manifest.trusted_types),
    }


@app.command("list")
def list_(
    ctx: typer.Context,
    name: Annotated[str | None, typer.Argument(help="List this model's versions.")] = None,
) -> None:
    """List models, or the versions of one model."""
    state: CliState = ctx.obj
    registry = state.container.registry
    if name is None:
        models = registry.list_models()
        table = Table("model", "versions", "production")
        rows = []
        for model in models:
            views = registry.list_versions(model)
            production = next(
                (v.record.version for v in views if v.record.stage == Stage.PRODUCTION), None
            )
            rows.append({"model": model, "versions": len(views), "production": production})
            table.add_row(model, str(len(views)), str(production or "-"))
        state.output.emit(rows, table if rows else "no models yet")
        return
    views = registry.list_versions(name)
    table = Table("version", "stage", "format", "signed", "manifest digest", "created")
    for view in views:
        table.add_row(
            str(view.record.version),
            view.record.stage.value,
            view.manifest.format.value,
            "yes" if view.manifest.signature_sha256 else "NO",
            view.record.manifest_digest[:16] + "...",
            view.record.created_at.strftime("%Y-%m-%d %H:%M:%S UTC"),
        )
    state.output.emit([version_dict(v) for v in views], table)


@app.command()
def show(
    ctx: typer.Context,
    name: str,
    version: Annotated[
        int | None, typer.Argument(min=1, max=MAX_VERSION, help="Default: the production version.")
    ] = None,
) -> None:
    """Show a version's manifest, schema, card and stage history."""
    state: CliState = ctx.obj
    registry = state.container.registry
    view = registry.show(name, version)
    history = [
        {
            "version": e.version,
            "from": e.from_stage.value,
            "to": e.to_stage.value,
            "kind": e.kind,
            "reason": e.reason,
            "actor": e.actor,
            "at": e.at.isoformat(),
        }
        for e in state.container.lifecycle.history(name)
        if e.version == view.record.version
    ]
    data = {**version_dict(view), "history": history}
    state.output.emit(data, json.dumps(data, indent=2, sort_keys=True))


@app.command()
def promote(
    ctx: typer.Context,
    name: str,
    version: Annotated[int, typer.Argument(min=1, max=MAX_VERSION)],
    to: Annotated[Stage, typer.Option("--to", help="Target stage.")],
    reason: Annotated[str, typer.Option(help="Why (kept in the stage history).")],
) -> None:
    """Move a version to staging, production or archived (production is verified first)."""
    state: CliState = ctx.obj
    with state.audited("model.promote", name, model_version=version, to=to.value, reason=reason):
        events = state.container.lifecycle.promote(
            name, version, to, reason=reason, actor=cli_actor()
        )
    _emit_events(state, events)


@app.command()
def rollback(
    ctx: typer.Context,
    name: str,
    reason: Annotated[str, typer.Option(help="Why (kept in the stage history).")],
) -> None:
    """Put back in production the version that served before the current one."""
    state: CliState = ctx.obj
    with state.audited("model.rollback", name, reason=reason) as audit:
        events = state.container.lifecycle.rollback(name, reason=reason, actor=cli_actor())
        audit["model_version"] = events[-1].version
    _emit_events(state, events)


def _emit_events(state: CliState, events: list[Any]) -> None:
    state.output.emit(
        [
            {
                "model": e.model,
                "version": e.version,
                "from": e.from_stage.value,
                "to": e.to_stage.value,
                "kind": e.kind,
            }
            for e in events
        ],
        "\n".join(
            f"{e.model} v{e.version}: {e.from_stage.value} -> {e.to_stage.value}" for e in events
        ),
    )


@app.command()
def verify(
    ctx: typer.Context,
    name: Annotated[str | None, typer.Argument()] = None,
    version: Annotated[int | None, typer.Argument(min=1, max=MAX_VERSION)] = None,
    all_versions: Annotated[bool, typer.Option("--all", help="Verify every version.")] = False,
) -> None:
    """Decrypt and verify versions exactly as loading would; exit 6 if any fails."""
    state: CliState = ctx.obj
    registry = state.container.registry
    if all_versions == (name is not None):
        raise InvalidInputError("give a model name (and optionally a version) or --all")
    if name is not None:
        artifact = registry.open_verified(name, version)
        state.output.emit(
            {
                "model": artifact.model,
                "version": artifact.version,
                "ok": True,
                "signer": artifact.signer,
                "manifest_digest": artifact.manifest_digest,
            },
            f"{artifact.model} v{artifact.version}: OK (signer: {artifact.signer or 'UNSIGNED'})",
        )
        return
    results = list(registry.verify_all())
    failures = [r for r in results if r[2] is not None]
    state.output.emit(
        [
            {"model": m, "version": v, "ok": e is None, "error": getattr(e, "code", None)}
            for m, v, e in results
        ],
        "\n".join(
            f"{m} v{v}: {'OK' if e is None else 'FAILED ' + getattr(e, 'code', 'error')}"
            for m, v, e in results
        )
        or "nothing to verify",
    )
    if failures:
        raise typer.Exit(6)


@app.command("export-signature")
def export_signature(
    ctx: typer.Context,
    name: str,
    version: Annotated[int, typer.Argument(min=1, max=MAX_VERSION)],
    out: Annotated[
        Path | None, typer.Option(help="Write the bundle here instead of stdout.")
    ] = None,
) -> None:
    """Export a version's signature bundle (verifiable with the model_signing tool)."""
    state: CliState = ctx.obj
    bundle = state.container.registry.export_signature(name, version)
    if out is None:
        typer.echo(bundle)
        return
    try:
        out.write_text(bundle, encoding="utf-8")
    except OSError as exc:
        raise InvalidInputError(f"cannot write {out}: {exc.strerror}") from None
    state.output.emit({"written": str(out)}, f"wrote {out}")
