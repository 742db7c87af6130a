"""Serving models: verified versions kept warm, swapped without downtime.

``ModelHost`` is what the inference routes ask for a model. It holds, per model name, the
production version loaded through ``RegistryService.load_version`` (so through
``open_verified``: decrypted, digest-checked against the signed manifest, signature policy
re-evaluated), plus a small LRU of explicitly requested versions.

Invariants:

* **Only verified bytes.** Every ``ServedModel`` was built by ``load_version``; nothing else
  creates one.
* **Only valid inputs.** Each ``ServedModel`` holds the ``InputValidator`` compiled from its
  version's signed input schema when it was loaded; the inference route calls
  ``check_inputs`` before ``predict``. A schema that no longer fits the model fails the load
  (as an integrity failure: publish checked that it fit), it is never served unchecked.
* **Hot swap.** ``refresh`` (run every few seconds by the server, and at once after a promote or
  rollback made through this process) compares each model's production version with the one
  held; a different version is loaded *first*, then the entry is replaced in one assignment. A
  request that already took the old ``ServedModel`` finishes on it; the next one gets the new.
  A model no longer in production stops being served by name.
* **A failed load keeps the old version serving** and is reported (``problems``, and readiness):
  the old version was verified when loaded and is still what the last good state held, while a
  new version that fails verification may be tampered with. The error is logged at ERROR
  (CRITICAL for integrity failures).
* **Reads are lock-free.** ``production`` and ``version`` are dict reads on the request path;
  loads take a lock so one version is never loaded twice at once. ``refresh`` and loads block
  (decryption, ONNX session creation): call them from a worker thread.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Any, Final

from strongroom.core.detectors.inputs import InputValidator
from strongroom.core.registry.formats import ModelFormat
from strongroom.core.registry.model import Stage
from strongroom.core.registry.runtime import LoadedModel, ModelSignature
from strongroom.core.types import Clock
from strongroom.errors import (
    IntegrityError,
    InvalidInputError,
    NotFoundError,
    SecurityError,
    StrongroomError,
)
from strongroom.services.registry import LoadedVersion, RegistryService

DEFAULT_PINNED_VERSIONS: Final = 8
FAILURE_BACKOFF_S: Final = 30.0
MAX_REMEMBERED_FAILURES: Final = 256
SERVABLE_STAGES: Final = frozenset({Stage.STAGING, Stage.PRODUCTION})
_LOG: Final = logging.getLogger("strongroom.inference")


@dataclass(frozen=True, slots=True)
class ServedModel:
    """One loaded, verified model version; immutable, so requests can hold it safely."""

    name: str
    version: int
    manifest_digest: str
    format: ModelFormat
    model: LoadedModel
    loaded_at: datetime
    validator: InputValidator
    """Compiled from the version's signed input schema; see ``check_inputs``."""
    output_names: tuple[str, ...] = field(init=False)
    """The signature's output names, in order (computed once: read on every request)."""

    def __post_init__(self) -> None:
        names = tuple(spec.name for spec in self.model.signature.outputs)
        object.__setattr__(self, "output_names", names)

    @property
    def signature(self) -> ModelSignature:
        return self.model.signature

    def check_inputs(self, inputs: Mapping[str, Any]) -> None:
        """Raise ``InvalidInputError`` unless ``inputs`` satisfy the version's input schema
        (ranges, categories, NaN and infinities, string rules); the message names the input,
        feature, row and reason, never the offending value."""
        self.validator.validate(inputs)

    def predict(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        return self.model.predict(inputs)


@dataclass(frozen=True, slots=True)
class RefreshReport:
    loaded: tuple[tuple[str, int], ...]
    removed: tuple[str, ...]
    failed: tuple[tuple[str, str], ...]
    """(model, stable error code) of production versions that could not be loaded."""


class ModelHost:
    """Warm production versions and an LRU of pinned versions; see the module docstring."""

    def __init__(
        self,
        registry: RegistryService,
        clock: Clock,
        *,
        max_pinned: int = DEFAULT_PINNED_VERSIONS,
    ) -> None:
        if max_pinned < 1:
            raise ValueError("max_pinned must be at least 1")
        self._registry = registry
        self._clock = clock
        self._max_pinned = max_pinned
        self._production: dict[str, ServedModel] = {}
        self._pinned: OrderedDict[tuple[str, int], ServedModel] = OrderedDict()
        self._problems: dict[str, str] = {}
        self._load_lock = threading.Lock()
        self._failures: dict[tuple[str, int], tuple[float, StrongroomError]] = {}
        self._refreshed = False

    # --- the request path (no I/O) ------------------------------------------------------------

    def production(self, name: str) -> ServedModel | None:
        """The warm production version of ``name``, or None if none is loaded."""
        return self._production.get(name)

    def pinned(self, name: str, version: int) -> ServedModel | None:
        """A warm explicitly requested version (or the production one), or None."""
        served = self._production.get(name)
        if served is not None and served.version == version:
            return served
        return self._pinned.get((name, version))

    def served(self) -> Mapping[str, ServedModel]:
        return MappingProxyType(dict(self._production))

    def problems(self) -> Mapping[str, str]:
        """Model name -> error code of its last failed load (cleared by a good one)."""
        return MappingProxyType(dict(self._problems))

    def ready(self) -> bool:
        """True once a refresh completed and every production version is loaded."""
        return self._refreshed and not self._problems

    # --- loading (blocking: call from a worker thread) -----------------------------------------

    def load_production(self, name: str) -> ServedModel:
        """Resolve and load ``name``'s production version now (first request for a model this
        process has not loaded yet). ``NotFoundError`` when it has none."""
        with self._load_lock:  # read under the lock: never install an older version
            version = self._registry.production_version(name)
            if version is None:
                raise NotFoundError(f"model {name!r} has no production version")
            current = self._production.get(name)
            if current is not None and current.version == version:
                return current
            try:
                served = self._load(name, version)
            except StrongroomError as exc:
                self._report_failure(name, version, exc)
                raise
            self._production[name] = served
            self._problems.pop(name, None)
            return served

    def load_pinned(self, name: str, version: int) -> ServedModel:
        """Load a specific version (``/versions/{v}`` routes), kept in a bounded LRU.

        Only versions in ``staging`` or ``production`` are served by number: a version pushed
        but never promoted, or archived by a rollback, is not (``NotFoundError``), so the
        promotion gate cannot be bypassed by naming the version.
        """
        with self._load_lock:
            self._check_servable(name, version)
            warm = self.pinned(name, version)
            if warm is not None:
                self._pinned.pop((name, version), None)
            else:
                warm = self._load(name, version)
            self._pinned[(name, version)] = warm
            while len(self._pinned) > self._max_pinned:
                self._pinned.popitem(last=False)
            return warm

    def _check_servable(self, name: str, version: int) -> None:
        if self._registry.stage_of(name, version) not in SERVABLE_STAGES:
            raise NotFoundError(f"model {name!r} version {version} is not released")

    def refresh(self) -> RefreshReport:
        """Bring every model's production version in line with the registry (hot swap)."""
        loaded: list[tuple[str, int]] = []
        failed: list[tuple[str, str]] = []
        with self._load_lock:  # reads and installs under one lock: no stale overwrite
            wanted = {name: self._registry.production_version(name) for name in self._models()}
            for name, version in wanted.items():
                current = self._production.get(name)
                if version is None or (current is not None and current.version == version):
                    continue
                try:
                    self._production[name] = self._load(name, version)
                except StrongroomError as exc:
                    self._report_failure(name, version, exc)
                    failed.append((name, exc.code))
                    continue
                self._problems.pop(name, None)
                loaded.append((name, version))
            removed = [n for n in self._production if wanted.get(n) is None]
            for name in removed:
                del self._production[name]
                self._problems.pop(name, None)
            self._drop_unreleased_pinned()
            self._refreshed = True
        for name, version in loaded:
            _LOG.info("serving %s version %d", name, version)
        for name in removed:
            _LOG.info("%s has no production version any more: no longer served", name)
        return RefreshReport(tuple(loaded), tuple(removed), tuple(failed))

    def _drop_unreleased_pinned(self) -> None:
        for name, version in list(self._pinned):
            try:
                self._check_servable(name, version)
            except StrongroomError:
                del self._pinned[(name, version)]

    def _models(self) -> list[str]:
        names = set(self._registry.list_models())
        return sorted(names | set(self._production))

    def _load(self, name: str, version: int) -> ServedModel:
        """Load through ``open_verified``. A version that failed recently fails again at once
        for ``FAILURE_BACKOFF_S`` instead of being decrypted and verified on every request."""
        key = (name, version)
        failure = self._failures.get(key)
        if failure is not None and time.monotonic() - failure[0] < FAILURE_BACKOFF_S:
            raise failure[1]
        try:
            loaded = self._registry.load_version(name, version)
            validator = _compile_validator(loaded)
        except StrongroomError as exc:
            self._failures[key] = (time.monotonic(), exc)
            while len(self._failures) > MAX_REMEMBERED_FAILURES:
                del self._failures[next(iter(self._failures))]
            raise
        self._failures.pop(key, None)
        return ServedModel(
            name=loaded.name,
            version=loaded.version,
            manifest_digest=loaded.manifest_digest,
            format=loaded.format,
            model=loaded.model,
            loaded_at=self._clock(),
            validator=validator,
        )

    def _report_failure(self, name: str, version: int, exc: StrongroomError) -> None:
        self._problems[name] = exc.code
        keeping = self._production.get(name)
        still = f"; still serving version {keeping.version}" if keeping else ""
        level = (
            logging.CRITICAL if isinstance(exc, IntegrityError | SecurityError) else logging.ERROR
        )
        _LOG.log(level, "cannot load %s version %d (%s)%s", name, version, exc.code, still)


def _compile_validator(loaded: LoadedVersion) -> InputValidator:
    """The version's validator. Publish checked that the schema fits the model, so a misfit
    now means the manifest or the runtime changed under it: an integrity failure, logged with
    its reason here (the error itself stays opaque)."""
    try:
        return InputValidator(loaded.input_schema, loaded.model.signature)
    except InvalidInputError as exc:
        _LOG.error(
            "%s version %d: the input schema does not fit the model: %s",
            loaded.name,
            loaded.version,
            exc,
        )
        raise IntegrityError from exc
