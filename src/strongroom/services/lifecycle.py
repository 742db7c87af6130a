"""Stage lifecycle of model versions: promote, roll back, history.

Stages move ``none -> staging -> production -> archived`` (rules in ``core.registry.model``).
Promoting to production, and rolling back, first open the target version through
``RegistryService.open_verified``: a version that does not verify never reaches production.
The store archives the replaced production version in the same transaction, so there is never
a moment with two production versions or none.
"""

from __future__ import annotations

from strongroom.core.registry.model import (
    Stage,
    StageEvent,
    VersionRecord,
    check_model_name,
    check_reason,
    check_transition,
)
from strongroom.core.registry.ports import MetadataStore
from strongroom.core.types import Clock
from strongroom.errors import InvalidTransitionError
from strongroom.services.registry import RegistryService


class LifecycleService:
    def __init__(self, *, metadata: MetadataStore, registry: RegistryService, clock: Clock) -> None:
        self._metadata = metadata
        self._registry = registry
        self._clock = clock

    def history(self, model: str) -> list[StageEvent]:
        return self._metadata.stage_history(check_model_name(model))

    def promote(
        self, model: str, version: int, target: Stage, *, reason: str, actor: str
    ) -> list[StageEvent]:
        """Move a version to ``target``. Promoting to production verifies the version first
        (a version that cannot be opened never reaches production) and archives the current
        production version in the same transaction."""
        reason = check_reason(reason)
        record = self._metadata.get_version(check_model_name(model), version)
        check_transition(record.stage, target)
        if target == Stage.PRODUCTION:
            self._registry.open_verified(model, version)
        return self._move(record, target, reason=reason, actor=actor, kind="promote")

    def rollback(self, model: str, *, reason: str, actor: str) -> list[StageEvent]:
        """Put back in production the version that was there before the current one."""
        reason = check_reason(reason)
        model = check_model_name(model)
        current = self._metadata.production_version(model)
        if current is None:
            raise InvalidTransitionError(f"model {model!r} has no production version to roll back")
        previous = self._previous_production(model, current)
        record = self._metadata.get_version(model, previous)
        self._registry.open_verified(model, previous)
        return self._move(record, Stage.PRODUCTION, reason=reason, actor=actor, kind="rollback")

    def _previous_production(self, model: str, current: int) -> int:
        """The version in production before ``current``, with stack semantics: a promotion
        pushes, a rollback pops the version it rolled back from. Rolling back twice goes two
        steps back, never forward again to the version just rolled back."""
        stack: list[int] = []
        for event in self._metadata.stage_history(model):
            if event.to_stage != Stage.PRODUCTION:
                continue
            if event.kind == "rollback" and stack:
                stack.pop()
                if stack and stack[-1] == event.version:
                    continue
            stack.append(event.version)
        if not stack or stack[-1] != current or len(stack) < 2:  # noqa: PLR2004
            raise InvalidTransitionError(f"no earlier production version of {model!r} exists")
        return stack[-2]

    def _move(
        self, record: VersionRecord, target: Stage, *, reason: str, actor: str, kind: str
    ) -> list[StageEvent]:
        now = self._clock()
        events = [
            StageEvent(record.model, record.version, record.stage, target, reason, actor, now, kind)
        ]
        replace = None
        if target == Stage.PRODUCTION:
            replace = self._metadata.production_version(record.model)
            if replace is not None:
                events.insert(
                    0,
                    StageEvent(
                        record.model,
                        replace,
                        Stage.PRODUCTION,
                        Stage.ARCHIVED,
                        reason,
                        actor,
                        now,
                        "replaced",
                    ),
                )
        self._metadata.change_stage(
            record.model, record.version, record.stage, target, events, replace_production=replace
        )
        return events
