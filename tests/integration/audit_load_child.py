"""Child process of the kill -9 test: an audit writer on a SQLite file under load.

Usage: ``python audit_load_child.py <database> <external dir> <signer key file> <threads>``.
Each thread records events forever and prints the sequence number of every record that
``record()`` acknowledged, one per line, *after* it returned. The parent kills this process with
SIGKILL at some point and then checks that every printed number is in the database.
"""

from __future__ import annotations

import sys
import threading
from datetime import UTC, datetime
from pathlib import Path

from strongroom.adapters.storage.audit_sql import SqlAuditStore
from strongroom.adapters.storage.checkpoint_dir import DirectoryCheckpointSink
from strongroom.core.audit.record import AuditEvent, Outcome
from strongroom.core.crypto.notes import NoteSigner
from strongroom.services.audit import AuditWriter

ORIGIN = "kill9.test/audit"


def main() -> None:
    database, external, key_file, threads = sys.argv[1:5]
    store = SqlAuditStore(f"sqlite:///{database}")
    signer = NoteSigner.from_skey(Path(key_file).read_text(encoding="utf-8").strip())
    writer = AuditWriter(
        store,
        DirectoryCheckpointSink(Path(external)),
        signer,
        ORIGIN,
        lambda: datetime.now(UTC),
        checkpoint_every=200,
    )
    writer.start()
    printing = threading.Lock()

    def load(worker: int) -> None:
        count = 0
        while True:
            count += 1
            event = AuditEvent(
                time=datetime.now(UTC),
                principal=f"service:load-{worker}",
                action="model.predict",
                resource="model:fraud",
                outcome=Outcome.ALLOWED,
                request_id=f"w{worker}-{count}",
            )
            record = writer.record(event)
            with printing:
                sys.stdout.write(f"{record.seq}\n")
                sys.stdout.flush()

    for worker in range(int(threads)):
        threading.Thread(target=load, args=(worker,), daemon=True).start()
    threading.Event().wait()  # until killed


if __name__ == "__main__":
    main()
