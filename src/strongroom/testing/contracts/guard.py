"""Contract suite of the guard-override store port (``core.policy.overrides``).

Every ``GuardOverrideStore`` (SQLite, PostgreSQL, the in-memory fake) must pass the same tests.
An adapter's test module subclasses the suite and provides the port as a fixture:

    class TestSqliteGuardOverrideStore(GuardOverrideStoreContract):
        @pytest.fixture
        def guard_store(self, tmp_path): ...  # a migrated, empty store; close it afterwards

Beyond the port docstring, the suite pins: overrides come back exactly as put (every policy
field, the same instant as an aware UTC time); a put replaces the whole override of its (kind,
subject); the list is ordered by (kind, subject); malformed input is an ``InvalidInputError``
that stores nothing; concurrent upserts of one subject leave exactly one of them, whole.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from strongroom.core.policy.limits import Quota, QuotaPeriod, Rate
from strongroom.core.policy.overrides import (
    GuardOverride,
    GuardOverrideStore,
    GuardPolicy,
    SubjectKind,
)
from strongroom.errors import InvalidInputError, NotFoundError

BASE_TIME = datetime(2026, 4, 5, 6, 7, 8, 123456, tzinfo=UTC)
CET = timezone(timedelta(hours=1))
THREADS = 8

FULL_POLICY = GuardPolicy(
    rate=Rate(per_second=12.5, burst=40),
    model_rate=Rate(per_second=3, burst=1),
    quota=Quota(limit=100_000, period=QuotaPeriod.MONTH),
    max_concurrent=7,
    deny_networks=("2001:db8::/32", "10.0.0.0/8", "192.0.2.0/24"),
)


def override(
    subject: str = "fraud",
    kind: SubjectKind = SubjectKind.MODEL,
    policy: GuardPolicy | None = None,
    **fields: Any,
) -> GuardOverride:
    values: dict[str, Any] = {
        "kind": kind,
        "subject": subject,
        "policy": GuardPolicy(max_concurrent=4) if policy is None else policy,
        "updated_at": BASE_TIME,
        "updated_by": "user:alice",
    }
    values.update(fields)
    return GuardOverride(**values)


def run_concurrently(count: int, work: Callable[[int], object]) -> list[object]:
    barrier = threading.Barrier(count, timeout=30)

    def start(index: int) -> object:
        barrier.wait()
        return work(index)

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(start, range(count)))


class GuardOverrideStoreContract:
    """Behaviour of every ``GuardOverrideStore``; the fixture gives a migrated, empty store."""

    def test_an_empty_store_lists_nothing(self, guard_store: GuardOverrideStore) -> None:
        assert guard_store.list_overrides() == []
        with pytest.raises(NotFoundError):
            guard_store.delete_override(SubjectKind.MODEL, "fraud")

    def test_an_override_round_trips_exactly(self, guard_store: GuardOverrideStore) -> None:
        put = override(
            "user:zoe+risk@example.com",
            SubjectKind.PRINCIPAL,
            FULL_POLICY,
            updated_at=BASE_TIME.astimezone(CET),
            updated_by="svc:operator-console",
        )
        guard_store.put_override(put)
        [listed] = guard_store.list_overrides()
        assert listed == put
        assert listed.policy.to_dict() == FULL_POLICY.to_dict()
        assert listed.policy.deny_networks == ("10.0.0.0/8", "192.0.2.0/24", "2001:db8::/32")
        assert listed.updated_at == BASE_TIME
        assert listed.updated_at.utcoffset() == timedelta(0)

    def test_an_empty_policy_round_trips(self, guard_store: GuardOverrideStore) -> None:
        put = override("fraud", policy=GuardPolicy())
        guard_store.put_override(put)
        assert guard_store.list_overrides() == [put]

    def test_a_put_replaces_the_whole_override(self, guard_store: GuardOverrideStore) -> None:
        guard_store.put_override(override("fraud", policy=FULL_POLICY))
        later = override(
            "fraud",
            policy=GuardPolicy(quota=Quota(limit=10, period=QuotaPeriod.DAY)),
            updated_at=BASE_TIME + timedelta(hours=1),
            updated_by="user:bob",
        )
        guard_store.put_override(later)
        assert guard_store.list_overrides() == [later]

    def test_delete_removes_once(self, guard_store: GuardOverrideStore) -> None:
        guard_store.put_override(override("fraud"))
        guard_store.put_override(override("credit"))
        guard_store.delete_override(SubjectKind.MODEL, "fraud")
        assert [o.subject for o in guard_store.list_overrides()] == ["credit"]
        with pytest.raises(NotFoundError):
            guard_store.delete_override(SubjectKind.MODEL, "fraud")
        assert [o.subject for o in guard_store.list_overrides()] == ["credit"]

    def test_principal_and_model_overrides_are_distinct(
        self, guard_store: GuardOverrideStore
    ) -> None:
        model = override("scoring", SubjectKind.MODEL, GuardPolicy(max_concurrent=1))
        principal = override("svc:scoring", SubjectKind.PRINCIPAL, GuardPolicy(max_concurrent=2))
        guard_store.put_override(principal)
        guard_store.put_override(model)
        assert guard_store.list_overrides() == [model, principal]
        with pytest.raises(NotFoundError):
            guard_store.delete_override(SubjectKind.MODEL, "other")
        guard_store.delete_override(SubjectKind.MODEL, "scoring")
        assert guard_store.list_overrides() == [principal]
        with pytest.raises(NotFoundError):
            guard_store.delete_override(SubjectKind.MODEL, "scoring")
        guard_store.delete_override(SubjectKind.PRINCIPAL, "svc:scoring")
        assert guard_store.list_overrides() == []

    def test_overrides_are_listed_by_kind_then_subject(
        self, guard_store: GuardOverrideStore
    ) -> None:
        wanted = [
            (SubjectKind.MODEL, "a-model"),
            (SubjectKind.MODEL, "b.model"),
            (SubjectKind.MODEL, "z9"),
            (SubjectKind.PRINCIPAL, "svc:z"),
            (SubjectKind.PRINCIPAL, "user:B"),
            (SubjectKind.PRINCIPAL, "user:a"),
        ]
        for kind, subject in reversed(wanted):
            guard_store.put_override(override(subject, kind))
        assert [(o.kind, o.subject) for o in guard_store.list_overrides()] == wanted

    def test_malformed_input_stores_nothing(self, guard_store: GuardOverrideStore) -> None:
        bad_puts: list[object] = [
            FULL_POLICY,
            override(updated_by=""),
            override(updated_by="user:" + "x" * 132),
        ]
        for bad in bad_puts:
            with pytest.raises(InvalidInputError):
                guard_store.put_override(bad)  # type: ignore[arg-type]
        guard_store.put_override(override("fraud"))
        for kind, subject in (("server", "fraud"), (SubjectKind.MODEL, "svc:fraud")):
            with pytest.raises(InvalidInputError):
                guard_store.delete_override(kind, subject)  # type: ignore[arg-type]
        assert guard_store.list_overrides() == [override("fraud")]

    def test_kind_may_be_given_as_its_value(self, guard_store: GuardOverrideStore) -> None:
        guard_store.put_override(override("svc:batch", SubjectKind.PRINCIPAL))
        guard_store.delete_override("principal", "svc:batch")  # type: ignore[arg-type]
        assert guard_store.list_overrides() == []

    def test_concurrent_upserts_leave_one_whole_override(
        self, guard_store: GuardOverrideStore
    ) -> None:
        puts = [
            override(
                "fraud",
                policy=GuardPolicy(max_concurrent=n + 1, rate=Rate(per_second=n + 1, burst=n + 1)),
                updated_at=BASE_TIME + timedelta(seconds=n),
                updated_by=f"user:writer{n}",
            )
            for n in range(THREADS)
        ]
        run_concurrently(THREADS, lambda n: guard_store.put_override(puts[n]))
        [stored] = guard_store.list_overrides()
        assert stored in puts

    def test_concurrent_puts_of_distinct_subjects_all_land(
        self, guard_store: GuardOverrideStore
    ) -> None:
        run_concurrently(THREADS, lambda n: guard_store.put_override(override(f"model-{n}")))
        listed = [o.subject for o in guard_store.list_overrides()]
        assert listed == [f"model-{n}" for n in range(THREADS)]
