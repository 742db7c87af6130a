"""Encrypted publish and verified load of a 200 MB model, against plain baselines, in one run.

Baselines measured in the same run on the same file and disk:
  copy              read the plaintext file and write a copy (with fsync, as publish does)
  read+hash         load the plaintext file into memory and SHA-256 it: what an unencrypted
                    registry does to hand verified bytes to a runtime (the target's baseline)
  read+hash stream  SHA-256 the file in 8 MiB chunks, keeping nothing (a lower bound: it
                    never materialises the model in memory)

Measured through the real service with the real adapters (SQLite, local blob files, sealed
local keyring, ECDSA P-256 signature):
  publish        RegistryService.publish: hash, signature check, ONNX validation, schema,
                 envelope encryption, atomic blob writes, metadata commit
  verified load  RegistryService.open_verified: manifest checks, signature policy, decrypt every
                 segment, SHA-256 of the plaintext, digest check

Reported as ratios (target: verified load <= 1.5x read+hash). Run: make bench
(or .venv/bin/python bench/bench_registry.py --size-mb 200 --repeat 3).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from strongroom.adapters.kms.local_keyring import LocalKeyring
from strongroom.adapters.runtimes.onnx import OnnxRuntime
from strongroom.adapters.storage.local_fs import LocalBlobStore
from strongroom.adapters.storage.sql import SqlMetadataStore
from strongroom.core.crypto.signature_policy import SignaturePolicy, TrustedSigner
from strongroom.core.registry.manifest import ModelCard
from strongroom.services.publishing import PublishRequest, RegistryLimits
from strongroom.services.registry import RegistryService
from strongroom.services.signing import generate_signing_key, sign_files

CHUNK = 8 * 1024 * 1024


def make_onnx(size_mb: int) -> bytes:
    """A MatMul whose weight initializer is ``size_mb`` MiB of random float32."""
    rows = 1000  # input features: a realistic tabular width
    cols = size_mb * 1024 * 1024 // (4 * rows)
    weight = np.random.default_rng(0).standard_normal((rows, cols), dtype=np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["input", "weight"], ["output"])],
        "big",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, rows])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [None, cols])],
        [numpy_helper.from_array(weight, "weight")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return bytes(model.SerializeToString())


def timed(fn: Callable[[], object], repeat: int) -> float:
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def plain_copy(src: Path, dst: Path) -> None:
    with src.open("rb") as reader, dst.open("wb") as writer:
        while chunk := reader.read(CHUNK):
            writer.write(chunk)
        writer.flush()
        os.fsync(writer.fileno())


def read_and_hash(src: Path) -> str:
    with src.open("rb") as reader:
        data = reader.read()
    return hashlib.sha256(data).hexdigest()


def read_and_hash_stream(src: Path) -> str:
    digest = hashlib.sha256()
    with src.open("rb") as reader:
        while chunk := reader.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def build_registry(root: Path, public_pem: bytes) -> RegistryService:
    metadata = SqlMetadataStore(f"sqlite:///{root / 'registry.db'}")
    metadata.migrate()
    keys = LocalKeyring.create(
        root / "keyring.json",
        os.urandom(24).hex().encode(),
        clock=lambda: datetime.now(UTC),
        random_bytes=os.urandom,
    )
    runtime = OnnxRuntime()
    return RegistryService(
        metadata=metadata,
        blobs=LocalBlobStore(root / "blobs"),
        keys=keys,
        runtimes=dict.fromkeys(runtime.formats, runtime),
        policy=SignaturePolicy((TrustedSigner("bench", public_pem, ("*",)),)),
        limits=RegistryLimits(
            max_upload_bytes=4 * 1024**3, max_archive_members=10, segment_size=4 * 1024**2
        ),
        clock=lambda: datetime.now(UTC),
        random_bytes=os.urandom,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("bench/results/registry.json"))
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(dir=Path.cwd()) as tmp:
        root = Path(tmp)
        data = make_onnx(args.size_mb)
        source = root / "model.onnx"
        source.write_bytes(data)
        private_pem, public_pem = generate_signing_key()
        bundle = sign_files(
            {"model.onnx": data},
            subject_name="big",
            private_key_pem=private_pem,
            single_file=True,
        )
        registry = build_registry(root, public_pem)
        os.sync()  # no writeback of the fresh files during the timings

        def publish() -> None:
            registry.publish(
                PublishRequest(
                    model="big",
                    files={"model.onnx": source.read_bytes()},
                    card=ModelCard(owner="bench"),
                    actor="bench",
                    single_file=True,
                    signature_bundle=bundle,
                )
            )

        results = {
            "size_bytes": len(data),
            "repeat": args.repeat,
            "copy_s": timed(lambda: plain_copy(source, root / "copy.onnx"), args.repeat),
            "read_hash_s": timed(lambda: read_and_hash(source), args.repeat),
            "read_hash_stream_s": timed(lambda: read_and_hash_stream(source), args.repeat),
            "publish_s": timed(publish, args.repeat),
            "verified_load_s": timed(lambda: registry.open_verified("big", 1), args.repeat),
        }
    results["publish_vs_copy"] = results["publish_s"] / results["copy_s"]
    results["verified_load_vs_read_hash"] = results["verified_load_s"] / results["read_hash_s"]
    results["verified_load_vs_read_hash_stream"] = (
        results["verified_load_s"] / results["read_hash_stream_s"]
    )
    mb = results["size_bytes"] / 1e6
    print(f"artifact: {mb:.0f} MB, median of {args.repeat}")
    for key in ("copy_s", "read_hash_s", "read_hash_stream_s", "publish_s", "verified_load_s"):
        print(f"  {key:<18} {results[key]:8.3f} s   {mb / results[key]:8.0f} MB/s")
    print(f"  publish / copy            {results['publish_vs_copy']:.2f}x")
    print(
        f"  verified load / read+hash {results['verified_load_vs_read_hash']:.2f}x"
        "   (target <= 1.5x)"
    )
    print(
        f"  verified load / streamed hash {results['verified_load_vs_read_hash_stream']:.2f}x"
        "   (lower bound, keeps nothing in memory)"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
