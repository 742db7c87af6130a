"""ModelHost: only verified, released versions; hot swap; failure back-off."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from conftest import Harness, TrainedModel
from strongroom.core.registry.model import Stage
from strongroom.errors import IntegrityError, NotFoundError
from strongroom.services.inference import ModelHost


def _host(harness: Harness) -> ModelHost:
    return ModelHost(harness.registry, lambda: datetime.now(UTC))


def _promote(harness: Harness, version: int, stage: Stage) -> None:
    harness.lifecycle.promote("fraud", version, stage, reason="t", actor="test")


@pytest.fixture
def two_versions(fake_harness: Harness, trained_model: TrainedModel) -> Harness:
    for _ in range(2):
        fake_harness.publish("fraud", {"model.onnx": trained_model.onnx})
    return fake_harness


def test_refresh_swaps_to_the_promoted_version_and_drops_demoted(two_versions: Harness) -> None:
    host = _host(two_versions)
    assert host.refresh().loaded == ()
    assert host.production("fraud") is None
    _promote(two_versions, 1, Stage.PRODUCTION)
    assert host.refresh().loaded == (("fraud", 1),)
    old = host.production("fraud")
    assert old is not None
    assert old.version == 1
    _promote(two_versions, 2, Stage.PRODUCTION)
    host.refresh()
    new = host.production("fraud")
    assert new is not None
    assert new.version == 2
    assert old.version == 1  # a request holding the old one still has a working model
    two_versions.lifecycle.rollback("fraud", reason="t", actor="test")
    host.refresh()
    back = host.production("fraud")
    assert back is not None
    assert back.version == 1


def test_unreleased_versions_are_not_served_by_number(two_versions: Harness) -> None:
    host = _host(two_versions)
    with pytest.raises(NotFoundError):
        host.load_pinned("fraud", 1)  # pushed, never promoted
    _promote(two_versions, 1, Stage.STAGING)
    assert host.load_pinned("fraud", 1).version == 1
    _promote(two_versions, 1, Stage.PRODUCTION)
    _promote(two_versions, 2, Stage.STAGING)
    _promote(two_versions, 2, Stage.PRODUCTION)
    two_versions.lifecycle.rollback("fraud", reason="t", actor="test")  # 2 archived
    with pytest.raises(NotFoundError):
        host.load_pinned("fraud", 2)


def test_pinned_versions_leave_the_cache_once_archived(two_versions: Harness) -> None:
    host = _host(two_versions)
    _promote(two_versions, 1, Stage.STAGING)
    assert host.load_pinned("fraud", 1).version == 1
    assert host.pinned("fraud", 1) is not None
    _promote(two_versions, 1, Stage.PRODUCTION)
    _promote(two_versions, 2, Stage.STAGING)
    _promote(two_versions, 2, Stage.PRODUCTION)  # 1 is archived
    host.refresh()
    assert host.pinned("fraud", 1) is None


def test_a_failing_version_is_not_reloaded_on_every_request(
    two_versions: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    _promote(two_versions, 1, Stage.PRODUCTION)
    host = _host(two_versions)
    calls: list[Any] = []

    def tampered(name: str, version: int | None = None) -> Any:
        calls.append((name, version))
        raise IntegrityError

    monkeypatch.setattr(two_versions.registry, "load_version", tampered)
    for _ in range(3):
        with pytest.raises(IntegrityError):
            host.load_production("fraud")
    assert calls == [("fraud", 1)]
    assert host.problems() == {"fraud": "security.integrity"}
    assert not host.ready()
