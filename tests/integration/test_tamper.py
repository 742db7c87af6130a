"""1,000 random bit flips and swaps against the real adapters give 0 successful loads.

The registry holds three models (two versions of one, so that swaps between versions of the
same model are tried as well as swaps between models). Each trial applies one mutation to the
SQLite database or the blob files, tries ``open_verified`` on every version, and restores the
original state. A load that succeeds while the mutation is in place is a failure of the test,
and so is any error other than the opaque security errors.
"""

from __future__ import annotations

import random
import sqlite3
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from conftest import Harness
from strongroom.core.crypto import envelope
from strongroom.errors import SecurityError

TRIALS = 1000
VERSION_COLUMNS = ("manifest_json", "manifest_digest", "signature_bundle", "created_by")
# artifacts.key_version is left out on purpose: it is a rotation index, not a security field
# (the KEK version is authenticated by the key wrapping); open_verified ignores it.
ARTIFACT_COLUMNS = ("blob_id", "path", "sha256", "size")


class Tamperer:
    def __init__(self, harness: Harness, root: Path, rng: random.Random) -> None:
        self.db = sqlite3.connect(root / "registry.db")
        self.blob_root = root / "blobs"
        self.rng = rng
        self.versions = [
            (m, r.version)
            for m in harness.registry.list_models()
            for r in harness.metadata.list_versions(m)
        ]
        self.owner = {a.blob_id: (m, v) for m, v, a in harness.metadata.iter_artifacts()}
        self.blob_ids = sorted(self.owner)

    def blob_path(self, blob_id: str) -> Path:
        return self.blob_root / blob_id[:2] / blob_id

    # Each mutation returns (undo callable, the versions it affects).

    def flip_blob_bit(self):
        blob_id = self.rng.choice(self.blob_ids)
        path = self.blob_path(blob_id)
        original = path.read_bytes()
        data = bytearray(original)
        # Half the flips aim at the header (magic, segment size, nonce prefix, wrapped key).
        limit = 120 if self.rng.random() < 0.5 else len(data)
        position = self.rng.randrange(min(limit, len(data)))
        data[position] ^= 1 << self.rng.randrange(8)
        path.write_bytes(bytes(data))
        return (lambda: path.write_bytes(original)), {self.owner[blob_id]}

    def swap_blobs(self):
        a, b = self.rng.sample(self.blob_ids, 2)
        pa, pb = self.blob_path(a), self.blob_path(b)
        da, db = pa.read_bytes(), pb.read_bytes()
        pa.write_bytes(db)
        pb.write_bytes(da)
        return (lambda: (pa.write_bytes(da), pb.write_bytes(db))), {self.owner[a], self.owner[b]}

    def swap_wrapped_keys(self):
        a, b = self.rng.sample(self.blob_ids, 2)
        pa, pb = self.blob_path(a), self.blob_path(b)
        da = pa.read_bytes()
        with pa.open("rb") as fa, pb.open("rb") as fb:
            ha, hb = envelope.read_header(fa), envelope.read_header(fb)
        # Keep a's own fixed header and body; graft b's key block (key id, version, wrapped key).
        grafted = ha.fixed_bytes + hb.to_bytes()[len(hb.fixed_bytes) :] + da[ha.header_length :]
        pa.write_bytes(grafted)
        return (lambda: pa.write_bytes(da)), {self.owner[a]}

    def swap_nonce_prefix(self):
        a, b = self.rng.sample(self.blob_ids, 2)
        pa = self.blob_path(a)
        da = pa.read_bytes()
        with pa.open("rb") as fa, self.blob_path(b).open("rb") as fb:
            ha, hb = envelope.read_header(fa), envelope.read_header(fb)
        start = len(ha.fixed_bytes) - len(ha.nonce_prefix)
        pa.write_bytes(da[:start] + hb.nonce_prefix + da[start + len(ha.nonce_prefix) :])
        return (lambda: pa.write_bytes(da)), {self.owner[a]}

    def flip_column_bit(self):
        table, columns, key = (
            ("model_versions", VERSION_COLUMNS, "rowid")
            if self.rng.random() < 0.6
            else ("artifacts", ARTIFACT_COLUMNS, "rowid")
        )
        column = self.rng.choice(columns)
        rowid, value, model, version = self.rng.choice(
            self.db.execute(f"SELECT {key}, {column}, model, version FROM {table}").fetchall()
        )
        if isinstance(value, int):
            mutated: object = value ^ (1 << self.rng.randrange(8))
        else:
            raw = bytearray(value.encode())
            raw[self.rng.randrange(len(raw))] ^= 1 << self.rng.randrange(7)
            mutated = raw.decode("latin-1")
        return self._set(table, column, key, rowid, mutated, value), {(model, version)}

    def shift_created_at(self):
        """Move a version's creation time by a random, still valid amount."""
        rowid, value, model, version = self.rng.choice(
            self.db.execute(
                "SELECT rowid, created_at, model, version FROM model_versions"
            ).fetchall()
        )
        shifted = datetime.fromisoformat(value) + timedelta(
            seconds=self.rng.choice((-1, 1)) * self.rng.randrange(1, 10**7),
            microseconds=self.rng.randrange(0, 2),
        )
        undo = self._set("model_versions", "created_at", "rowid", rowid, str(shifted), value)
        return undo, {(model, version)}

    def swap_version_fields(self):
        (ma, va), (mb, vb) = self.rng.sample(self.versions, 2)
        column = self.rng.choice(("manifest_json", "signature_bundle", "manifest_digest"))
        get = f"SELECT {column} FROM model_versions WHERE model=? AND version=?"
        a = self.db.execute(get, (ma, va)).fetchone()[0]
        b = self.db.execute(get, (mb, vb)).fetchone()[0]
        put = f"UPDATE model_versions SET {column}=? WHERE model=? AND version=?"
        self.db.execute(put, (b, ma, va))
        self.db.execute(put, (a, mb, vb))
        self.db.commit()

        def undo():
            self.db.execute(put, (a, ma, va))
            self.db.execute(put, (b, mb, vb))
            self.db.commit()

        return undo, {(ma, va), (mb, vb)}

    def swap_artifact_rows(self):
        a, b = self.rng.sample(self.blob_ids, 2)
        self.db.execute("UPDATE artifacts SET blob_id='tmp' WHERE blob_id=?", (a,))
        self.db.execute("UPDATE artifacts SET blob_id=? WHERE blob_id=?", (a, b))
        self.db.execute("UPDATE artifacts SET blob_id=? WHERE blob_id='tmp'", (b,))
        self.db.commit()

        def undo():
            self.db.execute("UPDATE artifacts SET blob_id='tmp' WHERE blob_id=?", (a,))
            self.db.execute("UPDATE artifacts SET blob_id=? WHERE blob_id=?", (a, b))
            self.db.execute("UPDATE artifacts SET blob_id=? WHERE blob_id='tmp'", (b,))
            self.db.commit()

        return undo, {self.owner[a], self.owner[b]}

    def _set(self, table, column, key, rowid, mutated, original):
        sql = f"UPDATE {table} SET {column}=? WHERE {key}=?"
        self.db.execute(sql, (mutated, rowid))
        self.db.commit()

        def undo():
            self.db.execute(sql, (original, rowid))
            self.db.commit()

        return undo


@pytest.mark.slow
def test_random_tampering_never_loads(real_harness: Harness, trained_model, tmp_path: Path):
    harness = real_harness
    onnx = trained_model.onnx
    harness.publish("fraud", {"model.onnx": onnx})
    harness.publish(
        "fraud", {"model.onnx": onnx, "README.md": b"second version\n"}, single_file=False
    )
    harness.publish("credit", {"model.onnx": onnx})
    for model, version in (("fraud", 1), ("fraud", 2), ("credit", 1)):
        harness.registry.open_verified(model, version)  # all good before tampering

    rng = random.Random(20261122)
    tamper = Tamperer(harness, tmp_path, rng)
    mutations = [
        tamper.flip_blob_bit,
        tamper.flip_blob_bit,
        tamper.swap_blobs,
        tamper.swap_wrapped_keys,
        tamper.swap_nonce_prefix,
        tamper.flip_column_bit,
        tamper.flip_column_bit,
        tamper.swap_version_fields,
        tamper.swap_artifact_rows,
    ]
    applied: Counter[str] = Counter()
    loaded_while_tampered = []
    unexpected = []
    attempts = 0
    for trial in range(TRIALS):
        mutation = rng.choice(mutations)
        undo, affected = mutation()
        applied[mutation.__name__] += 1
        for model, version in sorted(affected):
            attempts += 1
            try:
                harness.registry.open_verified(model, version)
            except SecurityError:
                continue
            except Exception as exc:
                unexpected.append((trial, mutation.__name__, repr(exc)))
            else:
                loaded_while_tampered.append((trial, mutation.__name__, model, version))
        undo()

    assert attempts >= TRIALS
    assert loaded_while_tampered == [], "a tampered version loaded"
    assert unexpected == [], "tampering must surface as an opaque security error"
    assert sum(applied.values()) == TRIALS and len(applied) == len(set(mutations))
    for model, version in tamper.versions:  # every undo restored a loadable registry
        harness.registry.open_verified(model, version)
