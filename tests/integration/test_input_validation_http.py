"""``/infer`` enforces the version's signed input schema: a real server, a model pushed with an
explicit schema (ranges and a nullable feature), JSON and Triton binary requests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from conftest import cli, cli_json
from server_harness import RunningServer, ServingInstance, infer_body, running

pytestmark = pytest.mark.slow

SCHEMA = {
    "version": 1,
    "tensor_name": "input",
    "features": [
        {"name": "amount", "dtype": "float32", "min": -5, "max": 5},
        {"name": "age", "dtype": "float32", "min": -5, "max": 5, "nullable": True},
        {"name": "f2", "dtype": "float32"},
        {"name": "f3", "dtype": "float32", "min": -100},
        {"name": "f4", "dtype": "float32", "max": 100},
        {"name": "f5", "dtype": "float32"},
    ],
}
GOOD_ROW = [0.5, 1.0, 0.25, -1.0, 2.0, 0.0]


@pytest.fixture
def served(instance: Path, tmp_path: Path) -> ServingInstance:
    """``instance`` with fraud v1, pushed with ``SCHEMA``, in production, and a predictor key."""
    schema_file = tmp_path / "schema.json"
    schema_file.write_text(json.dumps(SCHEMA))
    model, key = str(tmp_path / "model.onnx"), str(tmp_path / "signer.pem")
    cli(instance, "model", "push", "fraud", model, "--sign-key", key, "--owner", "risk",
        "--schema", str(schema_file))  # fmt: skip
    cli(instance, "model", "promote", "fraud", "1", "--to", "production", "--reason", "t")
    cli(instance, "principal", "add", "svc:scoring", "--role", "predictor")
    token = cli_json(instance, "apikey", "issue", "svc:scoring")["token"]
    return ServingInstance(home=instance, api_key=token)


def _json_infer(server: RunningServer, key: str, rows: list[list[float]]) -> httpx.Response:
    with server.client() as client:
        return client.post(
            "/v2/models/fraud/infer",
            json=infer_body(rows),
            headers={"Authorization": f"Bearer {key}"},
        )


def _binary_infer(server: RunningServer, key: str, rows: np.ndarray[Any, Any]) -> httpx.Response:
    """The Triton binary tensor extension, as ``tritonclient`` sends it: a JSON header, then the
    raw little-endian FP32 bytes (which, unlike JSON, can carry NaN and infinities)."""
    raw = rows.astype("<f4").tobytes()
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "input",
                    "datatype": "FP32",
                    "shape": list(rows.shape),
                    "parameters": {"binary_data_size": len(raw)},
                }
            ]
        }
    ).encode()
    with server.client() as client:
        return client.post(
            "/v2/models/fraud/infer",
            content=header + raw,
            headers={
                "Authorization": f"Bearer {key}",
                "Inference-Header-Content-Length": str(len(header)),
                "Content-Type": "application/octet-stream",
            },
        )


def _refused(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 400, response.text
    body: dict[str, Any] = response.json()
    assert body["code"] == "input.invalid"
    return body


def test_the_schema_is_enforced_on_every_request(served: ServingInstance) -> None:
    key = served.api_key
    with running(served, tls=True) as server:
        assert _json_infer(server, key, [GOOD_ROW]).status_code == 200
        edges = [[-5.0, 5.0, -1e30, -100.0, 100.0, 1e30], [5.0, -5.0, 0.0, 0.0, 0.0, 0.0]]
        assert _json_infer(server, key, edges).status_code == 200  # bounds are inclusive

        above = _refused(_json_infer(server, key, [[7.123457, *GOOD_ROW[1:]]]))
        assert above["detail"] == "input 'input', feature 'amount', row 0: above the maximum 5"
        batch = [GOOD_ROW, GOOD_ROW, [*GOOD_ROW[:3], -100.5, *GOOD_ROW[4:]]]
        below = _refused(_json_infer(server, key, batch))
        assert below["detail"] == "input 'input', feature 'f3', row 2: below the minimum -100"
        for body in (above, below):
            text = json.dumps(body)
            assert "7.123457" not in text and "100.5" not in text  # never the payload

        assert _binary_infer(server, key, np.array([GOOD_ROW])).status_code == 200
        for column in (0, 2):  # NaN in a feature that is not nullable: refused
            rows = np.array([GOOD_ROW, GOOD_ROW], dtype=np.float32)
            rows[1, column] = np.nan
            response = _binary_infer(server, key, rows)
            _refused(response)  # a 400, not a 200 with NaN predictions: the model never ran
            assert "NaN" in response.json()["detail"]
        for value in (np.inf, -np.inf):  # infinities are refused even where NaN may pass
            rows = np.array([GOOD_ROW], dtype=np.float32)
            rows[0, 1] = value
            _refused(_binary_infer(server, key, rows))
        missing = np.array([GOOD_ROW], dtype=np.float32)
        missing[0, 1] = np.nan  # 'age' is nullable: NaN means "missing" there
        assert _binary_infer(server, key, missing).status_code == 200
    records = [json.loads(line) for line in cli(served.home, "audit", "export").stdout.splitlines()]
    predictions = [r for r in records if r["action"] == "model.predict"]
    assert [r["outcome"] == "allowed" for r in predictions] == [
        True, True, False, False, True, False, False, False, False, True,
    ]  # fmt: skip
