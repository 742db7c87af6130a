"""``/v1/models``: list, show, publish, promote and roll back model versions.

Each route names its action and resource in the request's audit record before anything else,
then authorizes on the model *name* before the registry is consulted (as the inference routes
do), so a caller without rights on a model cannot learn whether it exists. The list view
filters models with ``permitted`` (the same rules, item by item).

Publishing streams the multipart upload to a private temporary directory (``uploads``), then
runs the same use case as ``strongroom model push`` (``RegistryService.publish``: format gate,
signature policy, runtime validation, encryption) in a worker thread. Promote and rollback go
through ``LifecycleService`` (a version reaches production only after ``open_verified``), then
refresh this worker's warm models at once; other workers follow within ``model_refresh_s``.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any, Final

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from strongroom.core.audit.record import bounded_text
from strongroom.core.identity.principal import Principal
from strongroom.core.policy.rbac import Action, Resource, permitted
from strongroom.core.registry.formats import ModelFormat
from strongroom.core.registry.manifest import ModelCard
from strongroom.core.registry.model import Stage, StageEvent, check_model_name
from strongroom.entrypoints.http import schemas
from strongroom.entrypoints.http.app import ServerParts
from strongroom.entrypoints.http.bodies import json_response, parse_version, read_json
from strongroom.entrypoints.http.guard import RequestLog, request_log
from strongroom.entrypoints.http.routes.caller import require_standing
from strongroom.entrypoints.http.uploads import (
    PartRule,
    ReceivedPart,
    receive_form,
    upload_directory,
)
from strongroom.errors import InvalidInputError, StrongroomError
from strongroom.services.publishing import PublishRequest, files_from_upload
from strongroom.services.registry import VersionView

MIB: Final = 1024 * 1024
_LOG: Final = logging.getLogger("strongroom.http.admin")


def version_out(view: VersionView) -> schemas.VersionOut:
    record, manifest = view.record, view.manifest
    card = manifest.card.to_dict()
    return schemas.VersionOut(
        model=record.model,
        version=record.version,
        stage=record.stage,
        format=manifest.format.value,
        manifest_digest=record.manifest_digest,
        signed=manifest.signature_sha256 is not None,
        created_at=record.created_at,
        created_by=record.created_by,
        files=[schemas.FileOut(path=f.path, sha256=f.sha256, size=f.size) for f in manifest.files],
        primary=manifest.primary,
        card=schemas.ModelCardOut(**card),
        input_schema=dict(manifest.input_schema),
        trusted_types=list(manifest.trusted_types),
    )


def event_out(event: StageEvent) -> schemas.StageEventOut:
    return schemas.StageEventOut(
        model=event.model,
        version=event.version,
        from_stage=event.from_stage,
        to_stage=event.to_stage,
        kind=event.kind,
        reason=event.reason,
        actor=event.actor,
        at=event.at,
    )


def _model_log(request: Request, action: Action) -> tuple[RequestLog, str]:
    """Name the action and model in the audit record, then check the name (400 if invalid)."""
    log = request_log(request.scope)
    name = request.path_params["name"]
    log.action = action.value
    log.resource = bounded_text(f"model:{name}", 256)
    return log, check_model_name(name)


class RegistryAdminRoutes:
    def __init__(self, parts: ServerParts) -> None:
        self._parts = parts
        self._access = parts.access
        self._registry = parts.registry
        self._lifecycle = parts.lifecycle
        settings = parts.settings
        self._upload_root = settings.home / "uploads"
        self._rules = {
            "artifact": PartRule(settings.max_upload_bytes),
            "signature": PartRule(16 * MIB),
            "schema": PartRule(16 * MIB),
            "reference": PartRule(64 * MIB),
            "card": PartRule(MIB),
            "format": PartRule(64),
            "primary": PartRule(1024),
            "trusted_type": PartRule(256, repeat=256),
        }

    def routes(self) -> list[Route]:
        model = "/v1/models/{name}"
        return [
            Route("/v1/models", self.list_models, methods=["GET"]),
            Route(model, self.show_model, methods=["GET"]),
            Route(model + "/versions", self.publish, methods=["POST"]),
            Route(model + "/versions/{version}", self.show_version, methods=["GET"]),
            Route(model + "/versions/{version}/promote", self.promote, methods=["POST"]),
            Route(model + "/rollback", self.rollback, methods=["POST"]),
        ]

    # --- reading --------------------------------------------------------------------------------

    async def list_models(self, request: Request) -> Response:
        log = request_log(request.scope)
        log.action, log.resource = Action.MODEL_READ.value, "model:*"
        principal = await self._access.authenticate(request)
        require_standing(self._access, request, principal)
        names = await asyncio.to_thread(self._registry.list_models)
        allowed = permitted(
            principal,
            Action.MODEL_READ,
            [Resource.model(name) for name in names],
            self._access.context(request),
        )
        models = await asyncio.to_thread(self._summaries, [r.name for r in allowed])
        log.details["count"] = len(models)
        return json_response(schemas.ModelList(models=models))

    def _summaries(self, names: list[str]) -> list[schemas.ModelSummary]:
        summaries = []
        for name in names:
            views = self._registry.list_versions(name)
            production = [v.record.version for v in views if v.record.stage is Stage.PRODUCTION]
            summaries.append(
                schemas.ModelSummary(
                    name=name,
                    versions=len(views),
                    latest_version=max((v.record.version for v in views), default=None),
                    production_version=production[0] if production else None,
                )
            )
        return summaries

    async def show_model(self, request: Request) -> Response:
        _log, name = _model_log(request, Action.MODEL_READ)
        await self._access.require(request, Action.MODEL_READ, Resource.model(name))

        def read() -> schemas.ModelDetail:
            views = self._registry.list_versions(name)
            return schemas.ModelDetail(
                name=name,
                production_version=self._registry.production_version(name),
                versions=[version_out(v) for v in views],
                history=[event_out(e) for e in self._lifecycle.history(name)],
            )

        return json_response(await asyncio.to_thread(read))

    async def show_version(self, request: Request) -> Response:
        log, name = _model_log(request, Action.MODEL_READ)
        await self._access.require(request, Action.MODEL_READ, Resource.model(name))
        version = parse_version(request.path_params["version"])
        log.model_version = version

        def read() -> schemas.VersionDetail:
            view = self._registry.show(name, version)
            history = [event_out(e) for e in self._lifecycle.history(name) if e.version == version]
            return schemas.VersionDetail(**version_out(view).model_dump(), history=history)

        detail = await asyncio.to_thread(read)
        log.manifest_digest = detail.manifest_digest
        return json_response(detail)

    # --- publishing -----------------------------------------------------------------------------

    async def publish(self, request: Request) -> Response:
        log, name = _model_log(request, Action.MODEL_PUSH)
        principal = await self._access.require(request, Action.MODEL_PUSH, Resource.model(name))
        with upload_directory(self._upload_root) as directory:
            parts = await receive_form(request, directory, self._rules)
            publish = await asyncio.to_thread(self._publish_request, name, parts, principal)
        result = await asyncio.to_thread(self._registry.publish, publish)
        record = result.record
        log.model_version, log.manifest_digest = record.version, record.manifest_digest
        log.details.update(
            signer=result.signer, unsafe_unsigned=result.signer is None, files=len(publish.files)
        )
        body = schemas.PublishResult(
            version=version_out(VersionView(record=record, manifest=result.manifest)),
            signer=result.signer,
            warnings=list(result.warnings),
        )
        location = f"/v1/models/{name}/versions/{record.version}"
        return json_response(body, 201, {"location": location})

    def _publish_request(
        self, name: str, parts: dict[str, list[ReceivedPart]], principal: Principal
    ) -> PublishRequest:
        """Read the received parts back (in a worker thread) into the publish use case's input."""
        artifact = _one(parts, "artifact")
        if artifact is None or not artifact.filename:
            raise InvalidInputError("the form needs an 'artifact' file part with a file name")
        files, single = files_from_upload(
            artifact.filename, artifact.read_bytes(), self._registry.limits
        )
        signature, schema, reference, card, fmt, primary = (
            _one(parts, key)
            for key in ("signature", "schema", "reference", "card", "format", "primary")
        )
        return PublishRequest(
            model=name,
            files=files,
            card=_card(card, principal.id),
            actor=principal.id,
            single_file=single,
            primary=primary.read_text() if primary else None,
            declared_format=_format(fmt),
            signature_bundle=signature.read_text() if signature else None,
            input_schema_json=schema.read_bytes() if schema else None,
            reference_csv=reference.read_bytes() if reference else None,
            trusted_types=tuple(p.read_text() for p in parts.get("trusted_type", ())),
        )

    # --- stage changes --------------------------------------------------------------------------

    async def promote(self, request: Request) -> Response:
        log, name = _model_log(request, Action.MODEL_PROMOTE)
        principal = await self._access.require(request, Action.MODEL_PROMOTE, Resource.model(name))
        version = parse_version(request.path_params["version"])
        log.model_version = version
        body = await read_json(request, schemas.PromoteRequest)
        log.details.update(to=body.to, reason=bounded_text(body.reason))
        events = await asyncio.to_thread(
            self._lifecycle.promote,
            name,
            version,
            Stage(body.to),
            reason=body.reason,
            actor=principal.id,
        )
        return await self._stage_changed(log, name, events)

    async def rollback(self, request: Request) -> Response:
        log, name = _model_log(request, Action.MODEL_ROLLBACK)
        principal = await self._access.require(request, Action.MODEL_ROLLBACK, Resource.model(name))
        body = await read_json(request, schemas.RollbackRequest)
        log.details["reason"] = bounded_text(body.reason)
        events = await asyncio.to_thread(
            self._lifecycle.rollback, name, reason=body.reason, actor=principal.id
        )
        return await self._stage_changed(log, name, events)

    async def _stage_changed(
        self, log: RequestLog, name: str, events: list[StageEvent]
    ) -> Response:
        moved = events[-1]
        log.model_version = moved.version
        try:
            view = await asyncio.to_thread(self._registry.show, name, moved.version)
            log.manifest_digest = view.record.manifest_digest
            await asyncio.to_thread(self._parts.host.refresh)
        except StrongroomError as exc:  # the change is made; the refresher will catch up
            _LOG.error("after a stage change of %s: %s", name, exc.code)
        return json_response(schemas.StageChange(events=[event_out(e) for e in events]))


def _one(parts: dict[str, list[ReceivedPart]], name: str) -> ReceivedPart | None:
    received = parts.get(name)
    return received[0] if received else None


def _format(part: ReceivedPart | None) -> ModelFormat | None:
    if part is None:
        return None
    try:
        return ModelFormat(part.read_text().strip())
    except ValueError:
        raise InvalidInputError(
            f"unknown model format; use one of: {', '.join(f.value for f in ModelFormat)}"
        ) from None


def _card(part: ReceivedPart | None, owner: str) -> ModelCard:
    """The model card part, or a card owned by the publishing principal."""
    if part is None:
        return ModelCard(owner=owner)
    try:
        raw: Any = json.loads(part.read_text(), parse_constant=_no_constant)
    except ValueError:
        raise InvalidInputError("the card part must be JSON without NaN or infinities") from None
    if not isinstance(raw, dict):
        raise InvalidInputError("the card part must be a JSON object")
    raw.setdefault("owner", owner)
    return ModelCard.from_dict(raw)


def _no_constant(name: str) -> None:
    raise ValueError(name)
