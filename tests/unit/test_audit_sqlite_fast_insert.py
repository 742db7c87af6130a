"""The SQLite audit insert fast path stores exactly what SQLAlchemy's generic insert stores."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa

from strongroom.adapters.storage.audit_sql import SqlAuditStore, build_audit_tables
from strongroom.core.audit.record import AuditEvent, Outcome


def _records() -> list:
    events = [
        AuditEvent(
            time=datetime(2026, 11, 22, 12, 0, i, 123456 + i, tzinfo=UTC),
            principal=None if i == 2 else f"svc:p{i}",
            action="model.predict",
            resource="model:fraud",
            outcome=Outcome.DENIED if i % 2 else Outcome.ALLOWED,
            request_id=f"r{i}",
            details={"status": 200 + i},
        )
        for i in range(5)
    ]
    return [event.sequenced(i) for i, event in enumerate(events)]


def _rows(path: Path) -> list[tuple]:
    with sqlite3.connect(path) as db:
        return db.execute("SELECT * FROM audit_records ORDER BY seq").fetchall()


def test_fast_path_rows_equal_generic_rows(tmp_path: Path) -> None:
    records = _records()
    fast = SqlAuditStore(f"sqlite:///{tmp_path / 'fast.db'}")
    fast.migrate()
    fast.append_batch(records)
    fast.close()

    generic = SqlAuditStore(f"sqlite:///{tmp_path / 'generic.db'}")
    generic.migrate()
    generic.close()
    table = build_audit_tables().records
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'generic.db'}")
    with engine.begin() as conn:
        conn.execute(
            table.insert(),
            [
                {
                    "seq": r.seq,
                    "canonical": r.canonical,
                    "leaf_hash": r.leaf_hash(),
                    "time": r.time,
                    "action": r.action,
                    "principal": r.principal,
                    "outcome": str(r.outcome),
                }
                for r in records
            ],
        )
    engine.dispose()
    fast_rows = _rows(tmp_path / "fast.db")
    assert len(fast_rows) == 5
    assert fast_rows == _rows(tmp_path / "generic.db")
    reread = SqlAuditStore(f"sqlite:///{tmp_path / 'fast.db'}")
    assert [row.canonical for row in reread.read(0, 10)] == [r.canonical for r in records]
    reread.close()
