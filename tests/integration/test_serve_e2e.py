"""``strongroom serve`` end to end: tritonclient over TLS, opaque refusals, audit, hot swap."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from conftest import TrainedModel, cli, cli_json
from server_harness import RunningServer, ServingInstance, infer_body, running, serving_instance

pytestmark = pytest.mark.slow


@pytest.fixture
def served(instance: Path, tmp_path: Path) -> ServingInstance:
    return serving_instance(instance, tmp_path)


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_tritonclient_prediction_equals_the_in_process_model(
    served: ServingInstance, trained_model: TrainedModel
) -> None:
    import tritonclient.http as triton

    rows = trained_model.features[:7].astype(np.float32)
    expected = trained_model.sklearn.predict_proba(rows)
    with running(served, tls=True) as server:
        host = server.base_url.removeprefix("https://")
        client = triton.InferenceServerClient(
            url=host, ssl=True, ssl_options={"ca_certs": server.ca_file}
        )
        headers = _auth(served.api_key)
        try:
            assert client.is_server_live(headers=headers)
            assert client.is_model_ready("fraud", headers=headers)
            metadata = client.get_model_metadata("fraud", headers=headers)
            assert metadata["inputs"][0]["name"] == "input"
            for binary in (True, False):
                tensor = triton.InferInput("input", list(rows.shape), "FP32")
                tensor.set_data_from_numpy(rows, binary_data=binary)
                # tritonclient adds its binary-data header to the dict it is given: a fresh one
                result = client.infer("fraud", [tensor], headers=dict(headers))
                probabilities = result.as_numpy("probabilities")
                assert probabilities.shape == expected.shape
                np.testing.assert_allclose(probabilities, expected, atol=1e-5)
                labels = result.as_numpy("label")
                assert labels.tolist() == trained_model.sklearn.predict(rows).tolist()
            with pytest.raises(triton.InferenceServerException) as refused:
                client.infer("fraud", [tensor], headers=_auth("sr_" + "a" * 12 + "_" + "A" * 43))
            assert refused.value.status() == "401"
        finally:
            client.close()


def _refusal(server: RunningServer, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
    with server.client() as client:
        response = client.post(
            "/v2/models/fraud/infer", json=infer_body([[0.0] * 6]), headers=headers
        )
    body = response.json()
    body.pop("request_id")
    return response.status_code, body


def test_refusals_are_opaque_and_every_request_is_audited(served: ServingInstance) -> None:
    cli(served.home, "principal", "add", "svc:reader", "--role", "auditor")
    reader = cli_json(served.home, "apikey", "issue", "svc:reader")["token"]
    with running(served, tls=True) as server:
        missing = _refusal(server, {})
        wrong = _refusal(server, _auth("sr_" + "b" * 12 + "_" + "B" * 43))
        garbage = _refusal(server, {"Authorization": "Basic Zm9vOmJhcg=="})
        assert missing == wrong == garbage
        assert missing[0] == 401
        status, body = _refusal(server, _auth(reader))
        assert status == 403
        assert body["detail"] == "forbidden"
        with server.client() as client:
            ok = client.post(
                "/v2/models/fraud/infer",
                json=infer_body([[0.123456] * 6]),
                headers=_auth(served.api_key),
            )
        assert ok.status_code == 200
        assert ok.headers["strict-transport-security"].startswith("max-age=")
        request_id = ok.headers["x-request-id"]
    records = [json.loads(line) for line in cli(served.home, "audit", "export").stdout.splitlines()]
    predictions = [r for r in records if r["action"] == "model.predict"]
    assert [r["outcome"] for r in predictions] == [
        "denied",
        "denied",
        "denied",
        "denied",
        "allowed",
    ]
    allowed = predictions[-1]
    assert allowed["request_id"] == request_id
    assert allowed["principal"] == "svc:scoring"
    assert allowed["model_version"] == 1
    assert allowed["manifest_digest"]
    assert len(allowed["input_hmac"]) == 64
    assert "123456" not in json.dumps(allowed)  # the input itself is never logged
    assert predictions[3]["principal"] == "svc:reader"
    assert {r["action"] for r in records} >= {"server.start", "server.stop"}


def test_promote_swaps_versions_without_failed_requests(
    served: ServingInstance, tmp_path: Path
) -> None:
    statuses: list[int] = []
    versions: set[str] = set()
    stop = threading.Event()

    def traffic(server: RunningServer) -> None:
        with server.client() as client:
            while not stop.is_set():
                response = client.post(
                    "/v2/models/fraud/infer",
                    json=infer_body([[0.2] * 6]),
                    headers=_auth(served.api_key),
                )
                statuses.append(response.status_code)
                if response.status_code == 200:
                    versions.add(response.json()["model_version"])

    with running(served, tls=True) as server:
        worker = threading.Thread(target=traffic, args=(server,))
        worker.start()
        try:
            cli(
                served.home,
                "model",
                "push",
                "fraud",
                str(tmp_path / "model.onnx"),
                "--sign-key",
                str(tmp_path / "signer.pem"),
                "--owner",
                "risk",
            )
            cli(
                served.home,
                "model",
                "promote",
                "fraud",
                "2",
                "--to",
                "production",
                "--reason",
                "v2",
            )
            with server.client() as client:
                for _ in range(600):  # bounded: the refresh interval is 0.2 s
                    meta = client.get("/v2/models/fraud", headers=_auth(served.api_key)).json()
                    if meta["versions"] == ["2"]:
                        break
                    stop.wait(0.05)
                else:
                    pytest.fail("version 2 was never served")
            n = len(statuses)
            while len(statuses) < n + 5:  # some requests on the new version
                stop.wait(0.01)
        finally:
            stop.set()
            worker.join(30)
    assert statuses
    assert set(statuses) == {200}
    assert versions == {"1", "2"}
