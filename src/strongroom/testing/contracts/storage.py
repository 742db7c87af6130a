"""Contract suites of the registry storage ports (``core.registry.ports``).

Every ``MetadataStore`` and ``BlobStore`` (SQL, local files, in-memory fakes, any future S3 or
other backend) must pass the same tests. An adapter's test module subclasses the suite and
provides the store as a fixture:

    class TestSqliteMetadataStore(MetadataStoreContract):
        @pytest.fixture
        def metadata_store(self, tmp_path): ...  # a migrated, empty store; close it afterwards

    class TestLocalBlobStore(BlobStoreContract):
        @pytest.fixture
        def blob_store(self, tmp_path): ...  # an empty store

Beyond the port docstrings, the suites pin these behaviours so that all stores agree:
``list_models`` and ``list_ids`` are sorted; ``production_version`` is ``None`` for an unknown
model while ``list_versions`` and ``stage_history`` raise ``NotFoundError``; artifacts come back
sorted by path (code-point order); times come back as aware UTC datetimes and naive ones are
refused; stage events must concern the versions being changed; a chunk iterator that fails in
``put`` gives ``StorageError``, unless it raised a Strongroom error, which passes unchanged.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone

import pytest

from strongroom.core.registry.model import ArtifactRecord, Stage, StageEvent, VersionRecord
from strongroom.core.registry.ports import BlobStore, MetadataStore
from strongroom.errors import (
    ConflictError,
    InvalidInputError,
    NotFoundError,
    StorageError,
    TooLargeError,
)

BASE_TIME = datetime(2025, 3, 4, 5, 6, 7, 123456, tzinfo=UTC)


def blob_id_for(*parts: object) -> str:
    """A valid, deterministic blob id (32 lower-case hex characters) named by ``parts``."""
    return hashlib.sha256("/".join(map(str, parts)).encode()).hexdigest()[:32]


def make_record(
    model: str = "fraud",
    version: int = 1,
    *,
    stage: Stage = Stage.NONE,
    paths: tuple[str, ...] = ("model.onnx",),
    signature: str | None = None,
    created_at: datetime = BASE_TIME,
) -> VersionRecord:
    artifacts = tuple(
        ArtifactRecord(
            path=path,
            blob_id=blob_id_for(model, version, path),
            size=index * (3 << 30),  # 0, then sizes beyond 32 bits
            sha256=hashlib.sha256(path.encode()).hexdigest(),
            key_version=index + 1,
        )
        for index, path in enumerate(paths)
    )
    return VersionRecord(
        model=model,
        version=version,
        stage=stage,
        manifest_json=f'{{"model":"{model}","version":{version},"note":"Grüße ✓"}}',
        manifest_digest="sha256:" + hashlib.sha256(f"{model}{version}".encode()).hexdigest(),
        signature_bundle=signature,
        created_at=created_at,
        created_by="alice@example.com",
        artifacts=artifacts,
    )


def sorted_artifacts(record: VersionRecord) -> VersionRecord:
    """``record`` as a store gives it back: artifacts sorted by path."""
    return dataclasses.replace(
        record, artifacts=tuple(sorted(record.artifacts, key=lambda a: a.path))
    )


def stage_event(
    version: int,
    from_stage: Stage,
    to_stage: Stage,
    *,
    model: str = "fraud",
    kind: str = "promote",
    at: datetime = BASE_TIME,
    reason: str = "validated on the March backtest",
) -> StageEvent:
    return StageEvent(model, version, from_stage, to_stage, reason, "bob", at, kind)


def move(
    store: MetadataStore, version: int, expected: Stage, target: Stage, *, model: str = "fraud"
) -> StageEvent:
    """Change a stage with the matching single event; return the event."""
    event = stage_event(version, expected, target, model=model)
    store.change_stage(model, version, expected, target, [event])
    return event


class MetadataStoreContract:
    """Behaviour of every ``MetadataStore``; the fixture gives a migrated, empty store."""

    def test_empty_store(self, metadata_store: MetadataStore) -> None:
        assert metadata_store.list_models() == []
        assert list(metadata_store.iter_artifacts()) == []
        assert metadata_store.next_version("fraud") == 1
        assert metadata_store.production_version("fraud") is None

    def test_migrate_is_idempotent_and_keeps_data(self, metadata_store: MetadataStore) -> None:
        record = make_record()
        metadata_store.add_version(record)
        metadata_store.migrate()
        metadata_store.migrate()
        assert metadata_store.get_version("fraud", 1) == record

    def test_round_trip_preserves_every_field(self, metadata_store: MetadataStore) -> None:
        record = make_record(
            "fraud.eu_v2-b",
            7,
            stage=Stage.STAGING,
            paths=("z/weights.bin", "model.onnx", "Ä/é.txt", "B.json", "a.json"),
            created_at=datetime(2024, 2, 29, 23, 59, 59, 999999, tzinfo=UTC),
        )
        record = dataclasses.replace(
            record, manifest_json=record.manifest_json + " " * 100_000, created_by="Zoë <z@ex>"
        )
        metadata_store.add_version(record)
        stored = metadata_store.get_version(record.model, record.version)
        assert stored == sorted_artifacts(record)
        assert [a.path for a in stored.artifacts] == sorted(a.path for a in record.artifacts)
        assert stored.signature_bundle is None
        assert stored.created_at.utcoffset() == timedelta(0)
        assert stored.created_at.microsecond == 999999
        assert metadata_store.list_versions(record.model) == [stored]

    def test_round_trip_with_signature_and_another_time_zone(
        self, metadata_store: MetadataStore
    ) -> None:
        india = timezone(timedelta(hours=5, minutes=30))
        created = datetime(2025, 6, 1, 12, 0, 0, 1, tzinfo=india)
        bundle = '{"mediaType":"application/vnd.dev.sigstore.bundle.v0.3+json"}'
        record = make_record(signature=bundle, created_at=created, paths=())
        metadata_store.add_version(record)
        stored = metadata_store.get_version("fraud", 1)
        assert stored == record
        assert stored.artifacts == ()
        assert stored.signature_bundle == bundle
        assert stored.created_at.utcoffset() == timedelta(0)
        assert stored.created_at == datetime(2025, 6, 1, 6, 30, 0, 1, tzinfo=UTC)

    def test_naive_times_are_refused(self, metadata_store: MetadataStore) -> None:
        with pytest.raises(InvalidInputError):
            metadata_store.add_version(make_record(created_at=datetime(2025, 1, 1)))  # noqa: DTZ001 - the point of the test
        assert metadata_store.list_models() == []

    def test_malformed_blob_ids_are_refused(self, metadata_store: MetadataStore) -> None:
        record = make_record()
        bad = dataclasses.replace(record.artifacts[0], blob_id="../" + "0" * 29)
        with pytest.raises(InvalidInputError):
            metadata_store.add_version(dataclasses.replace(record, artifacts=(bad,)))
        assert metadata_store.list_models() == []

    def test_duplicate_version_is_a_conflict(self, metadata_store: MetadataStore) -> None:
        record = make_record()
        metadata_store.add_version(record)
        again = dataclasses.replace(make_record(paths=("other.onnx",)), manifest_json="{}")
        with pytest.raises(ConflictError):
            metadata_store.add_version(again)
        assert metadata_store.get_version("fraud", 1) == record
        assert len(list(metadata_store.iter_artifacts())) == 1

    def test_reused_blob_id_is_a_conflict_and_stores_nothing(
        self, metadata_store: MetadataStore
    ) -> None:
        first = make_record(paths=("model.onnx",))
        metadata_store.add_version(first)
        second = make_record(version=2, paths=("a.onnx", "b.onnx"))
        reused = dataclasses.replace(second.artifacts[1], blob_id=first.artifacts[0].blob_id)
        with pytest.raises(ConflictError):
            metadata_store.add_version(
                dataclasses.replace(second, artifacts=(second.artifacts[0], reused))
            )
        with pytest.raises(NotFoundError):
            metadata_store.get_version("fraud", 2)
        assert metadata_store.list_versions("fraud") == [first]
        assert metadata_store.next_version("fraud") == 2
        assert [a for _, _, a in metadata_store.iter_artifacts()] == list(first.artifacts)

    def test_duplicate_path_in_a_version_is_a_conflict(self, metadata_store: MetadataStore) -> None:
        record = make_record(paths=("a.onnx", "b.onnx"))
        clash = dataclasses.replace(record.artifacts[1], path="a.onnx")
        with pytest.raises(ConflictError):
            metadata_store.add_version(
                dataclasses.replace(record, artifacts=(record.artifacts[0], clash))
            )
        assert metadata_store.list_models() == []

    def test_unknown_model_version_and_blob_are_not_found(
        self, metadata_store: MetadataStore
    ) -> None:
        metadata_store.add_version(make_record())
        with pytest.raises(NotFoundError):
            metadata_store.get_version("credit", 1)
        with pytest.raises(NotFoundError):
            metadata_store.get_version("fraud", 2)
        with pytest.raises(NotFoundError):
            metadata_store.list_versions("credit")
        with pytest.raises(NotFoundError):
            metadata_store.stage_history("credit")
        with pytest.raises(NotFoundError):
            move(metadata_store, 2, Stage.NONE, Stage.STAGING)
        with pytest.raises(NotFoundError):
            metadata_store.set_artifact_key_version(blob_id_for("nothing"), 2)
        assert metadata_store.production_version("credit") is None

    def test_next_version_follows_the_highest_per_model(
        self, metadata_store: MetadataStore
    ) -> None:
        for version in (1, 2, 5):
            metadata_store.add_version(make_record(version=version))
        metadata_store.add_version(make_record("credit", 1))
        assert metadata_store.next_version("fraud") == 6
        assert metadata_store.next_version("credit") == 2
        assert metadata_store.next_version("aml") == 1

    def test_list_models_is_sorted_and_distinct(self, metadata_store: MetadataStore) -> None:
        names = ["zeta", "a-b", "ab", "a.c", "alpha", "a_b", "0day"]
        for name in names:
            metadata_store.add_version(make_record(name, 1))
            metadata_store.add_version(make_record(name, 2))
        assert metadata_store.list_models() == sorted(names)

    def test_list_versions_ascending(self, metadata_store: MetadataStore) -> None:
        records = {v: make_record(version=v, paths=(f"m{v}.onnx", "aux.json")) for v in (3, 1, 2)}
        for record in records.values():
            metadata_store.add_version(record)
        metadata_store.add_version(make_record("credit", 1))
        listed = metadata_store.list_versions("fraud")
        assert listed == [sorted_artifacts(records[v]) for v in (1, 2, 3)]

    def test_change_stage_moves_and_records(self, metadata_store: MetadataStore) -> None:
        metadata_store.add_version(make_record())
        first = move(metadata_store, 1, Stage.NONE, Stage.STAGING)
        assert metadata_store.get_version("fraud", 1).stage == Stage.STAGING
        assert metadata_store.production_version("fraud") is None
        second = move(metadata_store, 1, Stage.STAGING, Stage.PRODUCTION)
        assert metadata_store.production_version("fraud") == 1
        assert metadata_store.stage_history("fraud") == [first, second]

    def test_wrong_expected_stage_is_a_conflict(self, metadata_store: MetadataStore) -> None:
        metadata_store.add_version(make_record(stage=Stage.STAGING))
        with pytest.raises(ConflictError):
            move(metadata_store, 1, Stage.NONE, Stage.PRODUCTION)
        assert metadata_store.get_version("fraud", 1).stage == Stage.STAGING
        assert metadata_store.stage_history("fraud") == []

    def test_two_production_versions_are_refused(self, metadata_store: MetadataStore) -> None:
        metadata_store.add_version(make_record(version=1))
        metadata_store.add_version(make_record(version=2, stage=Stage.STAGING))
        promoted = move(metadata_store, 1, Stage.NONE, Stage.PRODUCTION)
        with pytest.raises(ConflictError):
            move(metadata_store, 2, Stage.STAGING, Stage.PRODUCTION)
        assert metadata_store.get_version("fraud", 2).stage == Stage.STAGING
        assert metadata_store.production_version("fraud") == 1
        assert metadata_store.stage_history("fraud") == [promoted]

    def test_adding_a_second_production_version_is_refused(
        self, metadata_store: MetadataStore
    ) -> None:
        metadata_store.add_version(make_record(version=1, stage=Stage.PRODUCTION))
        with pytest.raises(ConflictError):
            metadata_store.add_version(make_record(version=2, stage=Stage.PRODUCTION))
        assert [r.version for r in metadata_store.list_versions("fraud")] == [1]
        metadata_store.add_version(make_record("credit", 1, stage=Stage.PRODUCTION))
        assert metadata_store.production_version("credit") == 1

    def test_replace_production_archives_the_old_version(
        self, metadata_store: MetadataStore
    ) -> None:
        metadata_store.add_version(make_record(version=1, stage=Stage.PRODUCTION))
        metadata_store.add_version(make_record(version=2, stage=Stage.STAGING))
        events = [
            stage_event(1, Stage.PRODUCTION, Stage.ARCHIVED, kind="replaced"),
            stage_event(2, Stage.STAGING, Stage.PRODUCTION),
        ]
        metadata_store.change_stage(
            "fraud", 2, Stage.STAGING, Stage.PRODUCTION, events, replace_production=1
        )
        assert metadata_store.get_version("fraud", 1).stage == Stage.ARCHIVED
        assert metadata_store.production_version("fraud") == 2
        assert metadata_store.stage_history("fraud") == events

    def test_replace_production_requires_it_in_production(
        self, metadata_store: MetadataStore
    ) -> None:
        metadata_store.add_version(make_record(version=1, stage=Stage.STAGING))
        metadata_store.add_version(make_record(version=2, stage=Stage.STAGING))
        with pytest.raises(ConflictError):
            metadata_store.change_stage(
                "fraud", 2, Stage.STAGING, Stage.PRODUCTION, [], replace_production=1
            )
        assert [r.stage for r in metadata_store.list_versions("fraud")] == [Stage.STAGING] * 2
        assert metadata_store.production_version("fraud") is None

    def test_failed_replacement_leaves_production_untouched(
        self, metadata_store: MetadataStore
    ) -> None:
        metadata_store.add_version(make_record(version=1, stage=Stage.PRODUCTION))
        metadata_store.add_version(make_record(version=2, stage=Stage.STAGING))
        events = [stage_event(1, Stage.PRODUCTION, Stage.ARCHIVED, kind="replaced")]
        with pytest.raises(ConflictError):  # version 2 is in staging, not none
            metadata_store.change_stage(
                "fraud", 2, Stage.NONE, Stage.PRODUCTION, events, replace_production=1
            )
        assert metadata_store.production_version("fraud") == 1
        assert metadata_store.get_version("fraud", 2).stage == Stage.STAGING
        assert metadata_store.stage_history("fraud") == []

    def test_rollback_re_promotes_an_archived_version(self, metadata_store: MetadataStore) -> None:
        for version in (1, 2):
            metadata_store.add_version(make_record(version=version))
        move(metadata_store, 1, Stage.NONE, Stage.PRODUCTION)
        metadata_store.change_stage(
            "fraud", 2, Stage.NONE, Stage.PRODUCTION, [], replace_production=1
        )
        rollback = [
            stage_event(2, Stage.PRODUCTION, Stage.ARCHIVED, kind="replaced"),
            stage_event(1, Stage.ARCHIVED, Stage.PRODUCTION, kind="rollback"),
        ]
        metadata_store.change_stage(
            "fraud", 1, Stage.ARCHIVED, Stage.PRODUCTION, rollback, replace_production=2
        )
        assert metadata_store.production_version("fraud") == 1
        assert metadata_store.get_version("fraud", 2).stage == Stage.ARCHIVED
        assert metadata_store.stage_history("fraud")[-2:] == rollback

    def test_stage_history_is_oldest_first_per_model(self, metadata_store: MetadataStore) -> None:
        metadata_store.add_version(make_record())
        metadata_store.add_version(make_record("credit", 1))
        india = timezone(timedelta(hours=5, minutes=30))
        expected = []
        for index, (start, end) in enumerate(
            [(Stage.NONE, Stage.STAGING), (Stage.STAGING, Stage.ARCHIVED)]
        ):
            at = (BASE_TIME + timedelta(microseconds=index)).astimezone(india)
            same_time = [  # two events at the same instant keep the order given
                stage_event(1, start, end, at=at, reason=f"étape {index} — ok ✓"),
                stage_event(1, start, end, at=at, reason=f"second note {index}", kind="note"),
            ]
            metadata_store.change_stage("fraud", 1, start, end, same_time)
            move(metadata_store, 1, start, end, model="credit")
            expected.extend(same_time)
        history = metadata_store.stage_history("fraud")
        assert history == expected
        assert all(e.at.utcoffset() == timedelta(0) for e in history)
        assert [e.model for e in metadata_store.stage_history("credit")] == ["credit"] * 2

    def test_stage_events_must_concern_the_change(self, metadata_store: MetadataStore) -> None:
        for version in (1, 2):
            metadata_store.add_version(make_record(version=version))
        metadata_store.add_version(make_record("credit", 1))
        foreign = [
            stage_event(1, Stage.NONE, Stage.STAGING, model="credit"),
            stage_event(2, Stage.NONE, Stage.STAGING),
            stage_event(1, Stage.NONE, Stage.STAGING, at=datetime(2025, 1, 1)),  # noqa: DTZ001 - naive on purpose
        ]
        for event in foreign:
            with pytest.raises(InvalidInputError):
                metadata_store.change_stage("fraud", 1, Stage.NONE, Stage.STAGING, [event])
        assert metadata_store.get_version("fraud", 1).stage == Stage.NONE
        assert metadata_store.stage_history("fraud") == []

    def test_iter_artifacts_lists_every_artifact(self, metadata_store: MetadataStore) -> None:
        records = [
            make_record(version=1, paths=("a.onnx", "b.json")),
            make_record(version=2, paths=("a.onnx",)),
            make_record("credit", 1, paths=("c.onnx", "d.txt", "e.bin")),
            make_record("aml", 1, paths=()),
        ]
        for record in records:
            metadata_store.add_version(record)
        expected = {(r.model, r.version, a) for r in records for a in r.artifacts}
        listed = list(metadata_store.iter_artifacts())
        assert len(listed) == len(expected) == 6
        assert set(listed) == expected

    def test_set_artifact_key_version_changes_one_artifact(
        self, metadata_store: MetadataStore
    ) -> None:
        record = make_record(paths=("a.onnx", "b.json"))
        metadata_store.add_version(record)
        target = record.artifacts[1]
        metadata_store.set_artifact_key_version(target.blob_id, 9)
        stored = metadata_store.get_version("fraud", 1)
        assert stored.artifacts == (record.artifacts[0], dataclasses.replace(target, key_version=9))
        assert {a.key_version for _, _, a in metadata_store.iter_artifacts()} == {1, 9}
        with pytest.raises(InvalidInputError):
            metadata_store.set_artifact_key_version("../" + target.blob_id[3:], 9)

    def test_artifacts_can_be_updated_while_iterating(self, metadata_store: MetadataStore) -> None:
        paths = tuple(f"part-{i}.bin" for i in range(7))
        metadata_store.add_version(make_record(paths=paths))
        metadata_store.add_version(make_record(version=2, paths=paths))
        seen = []
        for _, _, artifact in metadata_store.iter_artifacts():
            metadata_store.set_artifact_key_version(artifact.blob_id, 42)
            seen.append(artifact.blob_id)
        assert sorted(seen) == sorted(set(seen))
        assert len(seen) == 2 * len(paths)
        assert {a.key_version for _, _, a in metadata_store.iter_artifacts()} == {42}


INVALID_BLOB_IDS = [
    "../x",
    "/etc/passwd",
    "0123456789ABCDEF0123456789ABCDEF",  # upper case
    "0" * 31,
    "0" * 33,
    "0" * 31 + "\x00",
    "0" * 32 + "\n",
    "",
    "g" * 32,
    "../" + "0" * 29,
    "/" + "0" * 31,
    "0" * 16 + "/" + "0" * 15,
    "\u0660" * 32,  # ARABIC-INDIC DIGIT ZERO: a digit, but not an ASCII one
    " " + "0" * 31,
]


def payload(size: int, seed: str = "blob") -> bytes:
    """Deterministic bytes that do not repeat within a chunk."""
    return hashlib.shake_256(seed.encode()).digest(size)


def chunked(data: bytes, size: int = 65536) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def failing_chunks(error: BaseException, head: bytes = b"partial") -> Iterator[bytes]:
    yield head
    raise error


class BlobStoreContract:
    """Behaviour of every ``BlobStore``; the fixture gives an empty store."""

    def read(self, store: BlobStore, blob_id: str) -> bytes:
        with store.open(blob_id) as source:
            return source.read()

    def test_put_and_open_round_trip(self, blob_store: BlobStore) -> None:
        blob_id = blob_id_for("a")
        data = payload(300_001)
        assert blob_store.put(blob_id, [data[:2], b"", data[2:]]) == len(data)
        assert blob_store.exists(blob_id)
        assert self.read(blob_store, blob_id) == data
        assert blob_store.list_ids() == [blob_id]

    def test_empty_and_large_blobs(self, blob_store: BlobStore) -> None:
        empty, large = blob_id_for("empty"), blob_id_for("large")
        data = payload(4 << 20)
        assert blob_store.put(empty, []) == 0
        assert blob_store.put(large, chunked(data)) == len(data)
        assert self.read(blob_store, empty) == b""
        assert self.read(blob_store, large) == data

    def test_open_gives_a_seekable_binary_file(self, blob_store: BlobStore) -> None:
        blob_id = blob_id_for("seek")
        blob_store.put(blob_id, [b"header", b"body"])
        with blob_store.open(blob_id) as source:
            assert source.read(6) == b"header"
            source.seek(0)
            assert source.read() == b"headerbody"

    def test_put_replaces_and_open_readers_keep_the_old_bytes(self, blob_store: BlobStore) -> None:
        blob_id = blob_id_for("rotate")
        old, new = payload(200_000, "old"), payload(100_000, "new")
        blob_store.put(blob_id, [old])
        with blob_store.open(blob_id) as reader:
            head = reader.read(10)
            assert blob_store.put(blob_id, chunked(new, 4096)) == len(new)
            assert head + reader.read() == old
        assert self.read(blob_store, blob_id) == new
        assert blob_store.list_ids() == [blob_id]

    def test_unknown_blob_is_not_found(self, blob_store: BlobStore) -> None:
        blob_id = blob_id_for("missing")
        assert not blob_store.exists(blob_id)
        with pytest.raises(NotFoundError):
            blob_store.open(blob_id)

    def test_delete_is_idempotent(self, blob_store: BlobStore) -> None:
        keep, gone = blob_id_for("keep"), blob_id_for("gone")
        blob_store.delete(gone)
        blob_store.put(keep, [b"k"])
        blob_store.put(gone, [b"g"])
        blob_store.delete(gone)
        blob_store.delete(gone)
        assert not blob_store.exists(gone)
        with pytest.raises(NotFoundError):
            blob_store.open(gone)
        assert blob_store.list_ids() == [keep]

    def test_list_ids_is_sorted(self, blob_store: BlobStore) -> None:
        ids = [blob_id_for(i) for i in range(20)]
        for blob_id in ids:
            blob_store.put(blob_id, [blob_id.encode()])
        assert blob_store.list_ids() == sorted(ids)

    def test_failed_put_stores_nothing(self, blob_store: BlobStore) -> None:
        blob_id = blob_id_for("crash")
        with pytest.raises(StorageError):
            blob_store.put(blob_id, failing_chunks(RuntimeError("disk gone")))
        assert not blob_store.exists(blob_id)
        assert blob_store.list_ids() == []
        assert blob_store.remove_stale_temporaries() >= 0
        assert blob_store.remove_stale_temporaries() == 0

    def test_failed_put_keeps_the_previous_blob(self, blob_store: BlobStore) -> None:
        blob_id = blob_id_for("keep-old")
        blob_store.put(blob_id, [b"old content"])
        with pytest.raises(StorageError):
            blob_store.put(blob_id, failing_chunks(OSError("no space")))
        with pytest.raises(TooLargeError):  # Strongroom errors from the producer pass unchanged
            blob_store.put(blob_id, failing_chunks(TooLargeError("upload over the limit")))
        assert self.read(blob_store, blob_id) == b"old content"
        assert blob_store.list_ids() == [blob_id]

    def test_remove_stale_temporaries_on_a_clean_store(self, blob_store: BlobStore) -> None:
        blob_store.put(blob_id_for("x"), [b"x"])
        assert blob_store.remove_stale_temporaries() == 0
        assert blob_store.list_ids() == [blob_id_for("x")]

    def test_modified_at_is_recent_and_moves_on_replace(self, blob_store: BlobStore) -> None:
        blob_id = blob_id_for("mtime")
        before = datetime.now(UTC) - timedelta(seconds=5)
        blob_store.put(blob_id, [b"one"])
        first = blob_store.modified_at(blob_id)
        assert first.tzinfo is not None
        assert before <= first <= datetime.now(UTC) + timedelta(seconds=5)
        blob_store.put(blob_id, [b"two"])
        assert blob_store.modified_at(blob_id) >= first
        with pytest.raises(NotFoundError):
            blob_store.modified_at(blob_id_for("absent"))

    def test_no_temporaries_after_successful_and_failed_puts(self, blob_store: BlobStore) -> None:
        blob_store.put(blob_id_for("a"), [b"a"])
        with pytest.raises(StorageError):
            blob_store.put(blob_id_for("b"), failing_chunks(OSError("disk full")))
        assert blob_store.count_temporaries() == 0
        cutoff = datetime.now(UTC) - timedelta(hours=1)
        assert blob_store.remove_stale_temporaries(older_than=cutoff) == 0

    @pytest.mark.parametrize("blob_id", INVALID_BLOB_IDS)
    def test_malformed_blob_ids_are_refused(self, blob_store: BlobStore, blob_id: str) -> None:
        with pytest.raises(InvalidInputError):
            blob_store.put(blob_id, [b"x"])
        with pytest.raises(InvalidInputError):
            blob_store.open(blob_id)
        with pytest.raises(InvalidInputError):
            blob_store.exists(blob_id)
        with pytest.raises(InvalidInputError):
            blob_store.delete(blob_id)
        assert blob_store.list_ids() == []
