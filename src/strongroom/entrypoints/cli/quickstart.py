"""``strongroom quickstart``: the whole flow on the embedded defaults, in one command.

Initialises an instance (if needed: keyring, databases, TLS certificate, an administrator with
password and TOTP), trains a small synthetic fraud model, converts it to ONNX, signs it in the
OpenSSF model-signing format, pushes it (encrypted), promotes it, loads it back through the
verified path, and shows what was stored and what was not (no plaintext on disk). Then it makes
a service principal with the ``predictor`` role and an API key, starts ``strongroom serve``
(HTTPS), calls it with the unmodified ``tritonclient`` HTTP client, checks the served prediction
against the in-process model, prints a working ``curl`` line, and keeps serving until Ctrl-C
(``--no-serve`` stops after the check).

The training data is synthetic and generated locally; nothing is downloaded.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from strongroom import bootstrap
from strongroom.config import CONFIG_FILE_NAME
from strongroom.core.identity.principal import Role
from strongroom.core.registry.manifest import ModelCard
from strongroom.core.registry.model import Stage
from strongroom.entrypoints.cli import accounts, live_check
from strongroom.errors import MissingExtraError
from strongroom.services.publishing import PublishRequest
from strongroom.services.registry import PublishResult, RegistryService
from strongroom.services.signing import generate_signing_key, sign_files

if TYPE_CHECKING:
    from strongroom.entrypoints.cli.state import CliState

MODEL_NAME = "fraud"
QUICKSTART_SERVICE = "svc:quickstart"
SIGNER_NAME = "quickstart-signer"
PREDICTION_TOLERANCE = 1e-4
"""float32 ONNX vs float64 scikit-learn probabilities agree to this absolute difference."""
FEATURES = (
    "amount", "amount_vs_avg_30d", "hour_of_day", "is_weekend", "merchant_risk",
    "merchant_age_days", "card_age_days", "card_present", "distance_from_home_km",
    "distance_from_last_km", "txn_count_1h", "txn_count_24h", "declines_24h",
    "new_device", "ip_risk", "account_age_days", "velocity_score", "foreign_currency",
    "mcc_risk", "chargebacks_90d",
)  # fmt: skip


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def _ensure_instance(state: CliState) -> None:
    """Initialise the home once and trust a locally generated quickstart signing key."""
    home = state.settings.home
    config = home / CONFIG_FILE_NAME
    if not bootstrap.keyring_path(state.settings).exists():
        result = bootstrap.initialise(state.settings)
        state.output.note(f"initialised a new instance in {result.home}")
        created = True
    else:
        created = False
    keys = home / "keys"
    keys.mkdir(mode=0o700, exist_ok=True)
    private, public = keys / f"{SIGNER_NAME}.pem", keys / f"{SIGNER_NAME}.pub.pem"
    if not private.exists():
        private_pem, public_pem = generate_signing_key()
        _write_private(private, private_pem)
        _write_private(public, public_pem)
    existing = tomllib.loads(config.read_text("utf-8")) if config.exists() else {}
    if not existing:
        passphrase = home / "secrets" / "keyring-passphrase"
        lines = [
            "# Written by `strongroom quickstart` for a development instance.",
            "# In production keep the passphrase outside the data directory.",
            f'keyring_passphrase_file = "{passphrase}"' if passphrase.exists() else "",
            "",
            "[[signers]]",
            f'name = "{SIGNER_NAME}"',
            f'public_key_file = "{public}"',
            f'models = ["{MODEL_NAME}"]',
            "",
        ]
        config.write_text("\n".join(lines), encoding="utf-8")
    state.reload()
    if created:
        _create_admin(state)


def _create_admin(state: CliState) -> None:
    """The first administrator; a development instance keeps its password in ``secrets/``."""
    admin = accounts.create_admin_account(state, "admin", None)
    password_file = state.settings.home / "secrets" / "admin-password"
    if admin.generated_password is not None:
        _write_private(password_file, (admin.generated_password + "\n").encode())
    state.output.note(
        f"administrator {admin.user_id}: password in {password_file}; "
        f"TOTP secret {admin.totp_secret} (add it to an authenticator app)"
    )


def _predictor_key(state: CliState) -> str:
    """A fresh API key for ``svc:quickstart`` (created with the predictor role if missing)."""
    settings = state.settings
    identity = bootstrap.build_identity_service(settings, bootstrap.server_keys(settings))
    if QUICKSTART_SERVICE not in {p.id for p in identity.list_principals()}:
        with state.audited("principal.create", QUICKSTART_SERVICE, role="predictor"):
            identity.create_principal(QUICKSTART_SERVICE, roles=(Role.PREDICTOR,))
    with state.audited("apikey.issue", QUICKSTART_SERVICE) as audit:
        issued, record = identity.issue_api_key(QUICKSTART_SERVICE)
        audit["key_id"] = record.key_id
    return issued.token


def _train(rows: int, seed: int) -> tuple[Any, Any, Any, dict[str, float]]:
    try:
        import numpy as np  # noqa: PLC0415 - optional training stack, only for the quickstart
        from sklearn.datasets import make_classification  # noqa: PLC0415
        from sklearn.linear_model import LogisticRegression  # noqa: PLC0415
        from sklearn.metrics import roc_auc_score  # noqa: PLC0415
        from sklearn.model_selection import train_test_split  # noqa: PLC0415
        from sklearn.pipeline import make_pipeline  # noqa: PLC0415
        from sklearn.preprocessing import StandardScaler  # noqa: PLC0415
    except ImportError as exc:
        raise MissingExtraError("the quickstart's model training", "quickstart") from exc
    features, labels = make_classification(
        n_samples=rows, n_features=len(FEATURES), n_informative=8, n_redundant=4,
        weights=[0.9, 0.1], class_sep=1.2, random_state=seed,
    )  # fmt: skip
    features = features.astype(np.float32)
    x_train, x_test, y_train, y_test = train_test_split(
        features, labels, test_size=0.25, random_state=seed, stratify=labels
    )
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    model.fit(x_train, y_train)
    auc = float(roc_auc_score(y_test, model.predict_proba(x_test)[:, 1]))
    accuracy = float(model.score(x_test, y_test))
    return model, x_train, x_test, {"roc_auc": round(auc, 4), "accuracy": round(accuracy, 4)}


def _to_onnx(model: Any) -> bytes:
    try:
        from skl2onnx import to_onnx  # noqa: PLC0415 - optional conversion stack
        from skl2onnx.common.data_types import FloatTensorType  # noqa: PLC0415
    except ImportError as exc:
        raise MissingExtraError("the quickstart's ONNX conversion", "quickstart") from exc
    onnx_model = to_onnx(
        model,
        initial_types=[("input", FloatTensorType([None, len(FEATURES)]))],
        options={"zipmap": False},
        target_opset={"": 17, "ai.onnx.ml": 3},
    )
    return bytes(onnx_model.SerializeToString())


def _reference_csv(rows: Any) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(FEATURES)
    writer.writerows([f"{v:.9g}" for v in row] for row in rows)  # float32 round-trips exactly
    return buffer.getvalue().encode("utf-8")


def _within(rows: Any, reference: Any) -> Any:
    """The rows inside the reference sample's ranges: the schema inferred from that sample
    refuses any other (a test row may lie beyond the training sample's extremes)."""
    inside = ((rows >= reference.min(axis=0)) & (rows <= reference.max(axis=0))).all(axis=1)
    return rows[inside]


def _publish(
    registry: RegistryService,
    onnx_bytes: bytes,
    metrics: dict[str, float],
    bundle: str,
    reference: bytes,
) -> PublishResult:
    return registry.publish(
        PublishRequest(
            model=MODEL_NAME,
            files={"fraud.onnx": onnx_bytes},
            single_file=True,
            card=ModelCard(
                owner="fraud-ml-team",
                description="Synthetic card-fraud classifier made by strongroom quickstart",
                training_data="synthetic: sklearn make_classification, 20 features, 10% fraud",
                metrics=metrics,
            ),
            actor="cli:quickstart",
            signature_bundle=bundle,
            reference_csv=reference,
        )
    )


def _plaintext_on_disk(root: Path, plaintext: bytes) -> bool:
    """Scan every stored file for a 64-byte window of the model: proof that bodies are sealed."""
    window = plaintext[len(plaintext) // 2 : len(plaintext) // 2 + 64]
    return any(window in path.read_bytes() for path in root.rglob("*") if path.is_file())


def quickstart(
    ctx: typer.Context,
    rows: Annotated[int, typer.Option(min=500, max=200_000, help="Synthetic rows.")] = 5000,
    seed: Annotated[int, typer.Option(help="Random seed for the synthetic data.")] = 7,
    serve: Annotated[
        bool, typer.Option("--serve/--no-serve", help="Keep serving after the check.")
    ] = True,
) -> None:
    """Train, sign, encrypt, push, promote and load a synthetic fraud model, then serve it."""
    state: CliState = ctx.obj
    out = state.output
    _ensure_instance(state)
    home = state.settings.home
    work = home / "quickstart"
    work.mkdir(mode=0o700, exist_ok=True)

    model, x_train, x_test, metrics = _train(rows, seed)
    onnx_bytes = _to_onnx(model)
    reference_rows = x_train[:1000]
    reference = _reference_csv(reference_rows)
    (work / "fraud.onnx").write_bytes(onnx_bytes)
    (work / "reference.csv").write_bytes(reference)
    out.note(f"trained a logistic-regression fraud model: {metrics}")

    private_key = (home / "keys" / f"{SIGNER_NAME}.pem").read_bytes()
    bundle = sign_files(
        {"fraud.onnx": onnx_bytes},
        subject_name="fraud.onnx",
        private_key_pem=private_key,
        single_file=True,
    )
    (work / "fraud.onnx.sig").write_text(bundle, encoding="utf-8")
    out.note("signed it (OpenSSF model-signing bundle, ECDSA P-256)")

    registry = state.container.registry
    with state.audited("model.push", MODEL_NAME) as audit:
        result = _publish(registry, onnx_bytes, metrics, bundle, reference)
        audit.update(
            model_version=result.record.version, manifest_digest=result.record.manifest_digest
        )
    version = result.record.version
    for stage in (Stage.STAGING, Stage.PRODUCTION):
        with state.audited("model.promote", MODEL_NAME, model_version=version, to=stage.value):
            state.container.lifecycle.promote(
                MODEL_NAME, version, stage, reason="quickstart", actor="cli:quickstart"
            )
    out.note(f"pushed and promoted {MODEL_NAME} v{version} to production")

    loaded = registry.load_model(MODEL_NAME)
    sample = _within(x_test, reference_rows)[:5]
    served = loaded.predict({"input": sample})["probabilities"][:, 1]
    expected = model.predict_proba(sample)[:, 1]
    agree = bool(abs(served - expected).max() < PREDICTION_TOLERANCE)
    api_key = _predictor_key(state)
    key_file = work / "api-key"
    key_file.unlink(missing_ok=True)
    _write_private(key_file, (api_key + "\n").encode())
    request_file = work / "request.json"
    request_file.write_bytes(_request_json(sample[:1]))
    state.close()  # the server process writes the audit log from now on
    server = live_check.ServerProcess(home, state.settings.port, _tls_cert(state))
    with server:
        over_https = live_check.triton_predict(server, api_key, MODEL_NAME, sample)
        https_agree = bool(
            abs(over_https["probabilities"][:, 1] - expected).max() < PREDICTION_TOLERANCE
        )
        _show(state, version, served, expected, agree, onnx_bytes, https_agree)
        out.note(f"\nthe server is running: {server.base_url}  (API key in {key_file})")
        out.command(live_check.curl_line(server, key_file, request_file, MODEL_NAME))
        if serve:
            out.note("serving until Ctrl-C")
            with contextlib.suppress(KeyboardInterrupt):
                server.wait()


def _tls_cert(state: CliState) -> Path:
    cert = state.settings.tls_cert_file
    if cert is None:
        raise MissingExtraError("a TLS certificate", "quickstart")
    return cert if cert.is_absolute() else state.settings.home / cert


def _request_json(rows: Any) -> bytes:
    document = {
        "inputs": [
            {
                "name": "input",
                "datatype": "FP32",
                "shape": list(rows.shape),
                "data": [float(f"{v:.9g}") for v in rows.ravel()],  # exact as FP32
            }
        ]
    }
    return (json.dumps(document) + "\n").encode("utf-8")


def _show(
    state: CliState,
    version: int,
    served: Any,
    expected: Any,
    agree: bool,
    onnx: bytes,
    https_agree: bool,
) -> None:
    registry = state.container.registry
    view = registry.show(MODEL_NAME, version)
    stored = registry.describe_storage(MODEL_NAME, version)
    leaked = _plaintext_on_disk(bootstrap.artifact_root(state.settings), onnx)
    data = {
        "model": MODEL_NAME,
        "version": version,
        "stage": view.record.stage.value,
        "manifest_digest": view.record.manifest_digest,
        "signer": SIGNER_NAME,
        "stored": [
            {
                "path": s.path,
                "blob_id": s.blob_id,
                "stored_bytes": s.stored_bytes,
                "plaintext_bytes": s.plaintext_bytes,
                "key": f"{s.key_id} v{s.key_version}",
            }
            for s in stored
        ],
        "plaintext_found_in_artifact_store": leaked,
        "predictions_match_in_process_model": agree,
        "served_over_https_match_in_process_model": https_agree,
        "served_fraud_probability": [round(float(p), 6) for p in served],
        "in_process_fraud_probability": [round(float(p), 6) for p in expected],
    }
    table = Table("file", "blob", "plaintext", "stored", "wrapped by", title="what was stored")
    for s in stored:
        table.add_row(
            s.path,
            s.blob_id,
            f"{s.plaintext_bytes:,} B",
            f"{s.stored_bytes:,} B",
            f"{s.key_id} v{s.key_version}",
        )
    state.output.emit(data, table)
    out = state.output
    out.note(f"plaintext model bytes found in the artifact store: {leaked}")
    out.note(f"manifest digest {view.record.manifest_digest} (bound into every segment's AAD)")
    out.note(f"schema: {len(view.manifest.input_schema.get('features', []))} features inferred")
    out.note(
        f"served == in-process predictions: {agree} "
        f"(first row {float(served[0]):.6f} vs {float(expected[0]):.6f})"
    )
    out.note(f"tritonclient over HTTPS with an API key == in-process predictions: {https_agree}")
    home = state.settings.home
    out.note("\nnext:")
    out.note(f"  strongroom --home {home} model list {MODEL_NAME}")
    out.note(f"  strongroom --home {home} model verify {MODEL_NAME}")
    out.note(f"  strongroom --home {home} keys rotate --retire-old")
    out.note(f"  strongroom --home {home} audit verify")
