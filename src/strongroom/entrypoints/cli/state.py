"""Per-invocation CLI state, and the audit record every registry-changing command writes.

A command that changes the registry or its keys runs inside ``state.audited(...)``, which writes
exactly one audit record of its outcome (allowed, or error with the stable error code) to the
instance's tamper-evident audit log. Reading the audit log is audited by the audit commands.
"""

from __future__ import annotations

import getpass
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from strongroom import bootstrap
from strongroom.config import Settings, load_settings
from strongroom.core.audit.record import AuditEvent, Outcome, bounded_text
from strongroom.entrypoints.cli.output import Output
from strongroom.errors import SecurityError, StrongroomError


def cli_actor() -> str:
    return bounded_text(f"cli:{getpass.getuser()}", 256)


@dataclass
class CliState:
    """Settings parsed once, the container built on first use, closed when the command ends."""

    home: Path | None
    output: Output
    _settings: Settings | None = None
    _container: bootstrap.Container | None = field(default=None, repr=False)

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_settings(home=self.home)
        return self._settings

    @property
    def container(self) -> bootstrap.Container:
        if self._container is None:
            self._container = bootstrap.build_container(self.settings)
        return self._container

    def override(self, **updates: Any) -> None:
        """Use these settings values from now on (``init`` after generating a passphrase)."""
        self.close()
        self._settings = self.settings.model_copy(update=updates)

    def reload(self) -> None:
        """Re-read settings (after the quickstart wrote a configuration file)."""
        self.close()
        self._settings = load_settings(home=self.home)

    def close(self) -> None:
        if self._container is not None:
            self._container.audit.close()
            self._container = None

    @contextmanager
    def audited(self, action: str, resource: str, **details: Any) -> Iterator[dict[str, Any]]:
        """Run a registry-changing action and write one audit record of its outcome.

        The record is written after the action, with its outcome; the caller may add details
        (e.g. the version published) to the yielded dict. If the audit log cannot be written
        the command fails (``audit.unavailable``), even though the action itself happened:
        the operator sees it at once.
        """
        started = time.monotonic()
        extra: dict[str, Any] = {}
        try:
            yield extra
        except StrongroomError as exc:
            outcome = Outcome.DENIED if isinstance(exc, SecurityError) else Outcome.ERROR
            self._record(action, resource, outcome, exc.code, started, {**details, **extra})
            raise
        self._record(action, resource, Outcome.ALLOWED, None, started, {**details, **extra})

    def _record(
        self,
        action: str,
        resource: str,
        outcome: Outcome,
        reason: str | None,
        started: float,
        details: dict[str, Any],
    ) -> None:
        self.container.audit.record(
            AuditEvent(
                time=datetime.now(UTC),
                principal=cli_actor(),
                action=action,
                resource=bounded_text(resource, 256),
                outcome=outcome,
                reason=reason,
                request_id=f"cli-{secrets.token_hex(8)}",
                model_version=details.pop("model_version", None),
                manifest_digest=details.pop("manifest_digest", None),
                latency_us=int((time.monotonic() - started) * 1_000_000),
                details={k: v for k, v in details.items() if v is not None},
            )
        )
