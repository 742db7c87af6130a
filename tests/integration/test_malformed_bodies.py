"""Malformed request bodies on every route that takes one: always a 4xx problem, never a 5xx,
and no NaN or infinity ever reaches a model.

The routes come from ``operations.OPERATIONS`` (every operation with a ``body``), so a new
route is covered as soon as it is documented. Each gets the same raw-byte edge cases, sent
with a credential that is allowed to call it (the answers must never be 401 or 403, which
would mean the body was not what got refused): non-finite and overflowing numbers, duplicate
member names (whose *last* value makes a valid body, so that a last-wins parser would accept
them), deep nesting, a million elements, a byte order mark, invalid and overlong UTF-8, lone
surrogates, NUL, empty bodies, truncated JSON, trailing garbage and wrong media types.

One in-process instance of the real app for the module (``admin_harness``); ``fraud`` v1 is
in production so that ``/infer`` bodies reach the decoder, and ``ServedModel.predict`` is
watched for non-finite inputs.
"""

from __future__ import annotations

import json
import math
import re
import struct
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np
import pytest
from admin_harness import Actors, LiveApp, bearer, live_app, make_instance, publish_signed

from conftest import N_FEATURES, SignerKeys, TrainedModel
from strongroom.core.identity.principal import Role
from strongroom.core.registry.model import Stage
from strongroom.entrypoints.http.bodies import FORM, JSON, MULTIPART
from strongroom.entrypoints.http.openapi import Auth, Operation
from strongroom.entrypoints.http.operations import OPERATIONS
from strongroom.services.inference import ServedModel

MAX_BODY = 4 * 1024 * 1024
MILLION = 1_000_000
DEPTH = 10_000
RUN_BUDGET_S = 45.0
PROBLEM = "application/problem+json"
CODE_RE = re.compile(r"[a-z]+(?:\.[a-z_]+)+")
REFUSAL_CODES = {
    "input.invalid",
    "input.too_large",
    "input.unsupported_media_type",
    "oauth.invalid_request",
    "oauth.unsupported_grant_type",
}
"""What a malformed body may be answered with (stable codes, docs/api.md)."""
NON_FINITE = ("NaN", "-NaN", "Infinity", "-Infinity", "1e400", "-1e400")
BOUNDARY = "sr-test-boundary"

BODY_OPERATIONS = tuple(op for op in OPERATIONS if op.body is not None)
INFER_OPERATIONS = tuple(op for op in BODY_OPERATIONS if op.path.endswith("/infer"))


# --- the instance ---------------------------------------------------------------------------------


@dataclass
class Credentials:
    session: str
    """A user with every role, logged in with TOTP just now (fresh MFA)."""
    service_key: str
    """A service with every role (the token endpoint exchanges only services' keys)."""
    target_key_id: str


class NonFiniteSpy:
    """Counts model calls whose inputs hold a NaN or an infinity (there must be none)."""

    def __init__(self) -> None:
        self.calls = 0
        self.non_finite = 0

    def wrap(self, predict: Callable[..., Any]) -> Callable[..., Any]:
        def watched(served: ServedModel, inputs: Any) -> Any:
            self.calls += 1
            for array in inputs.values():
                values = np.asarray(array)
                if values.dtype.kind == "f" and not np.all(np.isfinite(values)):
                    self.non_finite += 1
            return predict(served, inputs)

        return watched


@pytest.fixture(scope="module")
def live(
    tmp_path_factory: pytest.TempPathFactory, signer: SignerKeys, trained_model: TrainedModel
) -> Iterator[LiveApp]:
    home = make_instance(tmp_path_factory.mktemp("malformed"), signer)
    with live_app(home, max_body_bytes=MAX_BODY) as app:
        publish_signed(app.parts, signer, "fraud", trained_model.onnx)
        app.parts.lifecycle.promote("fraud", 1, Stage.PRODUCTION, reason="t", actor="test")
        yield app


@pytest.fixture(scope="module")
def credentials(live: LiveApp) -> Credentials:
    actors = Actors(live)
    every_role = tuple(Role)
    user = actors.fresh("malformed-all", *every_role)
    assert user.token is not None
    service_key = actors.service("malformed-all", *every_role)
    target_key = actors.service("malformed-target", Role.PREDICTOR)
    return Credentials(user.token, service_key, target_key.split("_")[1])


@pytest.fixture(scope="module")
def spy() -> Iterator[NonFiniteSpy]:
    watcher = NonFiniteSpy()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ServedModel, "predict", watcher.wrap(ServedModel.predict))
        yield watcher


def _path(op: Operation, credentials: Credentials) -> str:
    values = {
        "name": "fraud",
        "version": "1",
        "id": "svc:malformed-target",
        "key_id": credentials.target_key_id,
        "fingerprint": "ab" * 32,
    }
    return re.sub(r"\{([a-z_]+)\}", lambda m: values[m.group(1)], op.path)


def _headers(op: Operation, credentials: Credentials) -> dict[str, str]:
    if op.auth is Auth.NONE:
        return {}
    if op.auth is Auth.CREDENTIAL and op.action is None:  # the token endpoint: services only
        return bearer(credentials.service_key)
    return bearer(credentials.session)


# --- the cases ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    name: str
    body: bytes
    content_type: str | None
    non_finite: bool = False
    """The body carries a NaN or an infinity (or a number that overflows to one)."""


def _sample(op: Operation) -> dict[str, Any]:
    """A body that is valid for the operation apart from what a case changes."""
    if op in INFER_OPERATIONS:
        return {
            "inputs": [
                {
                    "name": "input",
                    "datatype": "FP32",
                    "shape": [1, N_FEATURES],
                    "data": [0.5] * N_FEATURES,
                }
            ]
        }
    samples: dict[str, dict[str, Any]] = {
        "promoteVersion": {"to": "staging", "reason": "r"},
        "rollbackModel": {"reason": "r"},
        "createPrincipal": {
            "id": "svc:malformed-new",
            "roles": ["predictor"],
            "grants": [{"role": "predictor", "pattern": "fraud"}],
        },
        "updatePrincipal": {"description": "d", "grants": [{"role": "auditor", "pattern": "x"}]},
        "issueApiKey": {"expires_at": "2099-01-01T00:00:00Z"},
        "rotateApiKey": {"grace_seconds": 0},
        "setPassword": {"password": "a new long password 1"},
        "login": {"user": "malformed-all", "password": "wrong password here"},
        "stepUp": {"totp": "123456"},
        "setPrincipalLimits": {"max_concurrent": 4, "rate": {"per_second": 1.5, "burst": 2}},
        "setModelLimits": {"max_concurrent": 4, "rate": {"per_second": 1.5, "burst": 2}},
    }
    return samples.get(op.operation_id, {"value": 1})


def _dumps_with_duplicate(value: Any, target: object) -> str:
    """JSON for ``value`` where the object ``target`` first names its first member with
    ``null``, then with its real value: last-wins parsers see a valid body."""
    if isinstance(value, dict):
        members = [f"{json.dumps(k)}:{_dumps_with_duplicate(v, target)}" for k, v in value.items()]
        if value is target and value:
            members.insert(0, f"{json.dumps(next(iter(value)))}:null")
        return "{" + ",".join(members) + "}"
    if isinstance(value, list):
        return "[" + ",".join(_dumps_with_duplicate(v, target) for v in value) + "]"
    return json.dumps(value)


def _nested_object(value: Any) -> dict[str, Any] | None:
    """The first object below the top level, depth first."""
    children = value.values() if isinstance(value, dict) else value
    for child in children if isinstance(value, dict | list) else ():
        if isinstance(child, dict) and child:
            return child
        found = _nested_object(child)
        if found is not None:
            return found
    return None


def _with_number(op: Operation, sample: dict[str, Any], token: str) -> bytes:
    """The sample with ``token`` (raw JSON text) in a number's place: an element of the
    tensor for ``/infer``, the first member's value elsewhere."""
    if op in INFER_OPERATIONS:
        data = ",".join([token, *["0.5"] * (N_FEATURES - 1)])
        compact = json.dumps(sample, separators=(",", ":"))
        return compact.replace(",".join(["0.5"] * N_FEATURES), data).encode()
    first = next(iter(sample))
    rest = {k: v for k, v in sample.items() if k != first}
    members = [
        f"{json.dumps(first)}:{token}",
        *(f"{json.dumps(k)}:{json.dumps(v)}" for k, v in rest.items()),
    ]
    return ("{" + ",".join(members) + "}").encode()


def _json_cases(op: Operation) -> list[Case]:
    sample = _sample(op)
    valid = json.dumps(sample).encode()
    cases = [
        Case(f"number {token}", _with_number(op, sample, token), JSON, non_finite=True)
        for token in NON_FINITE
    ]
    cases += [
        Case("number -0.0", _with_number(op, sample, "-0.0"), JSON),
        Case("duplicate member", _dumps_with_duplicate(sample, sample).encode(), JSON),
        Case(
            "duplicate member, first value kept",
            valid[:-1] + b',"' + next(iter(sample)).encode() + b'":null}',
            JSON,
        ),
        Case(
            "duplicate member, nested",
            _dumps_with_duplicate(sample, _nested_object(sample) or sample).encode(),
            JSON,
        ),
        Case("UTF-8 BOM", b"\xef\xbb\xbf" + valid, JSON),
        Case("charset latin-1", valid, JSON + "; charset=latin-1"),
        Case("charset utf-16", valid.decode().encode("utf-16"), JSON + "; charset=utf-16"),
        Case("UTF-16 body", valid.decode().encode("utf-16-le"), JSON),
        Case("truncated", valid[:-1], JSON),
        Case("trailing garbage", valid + b"x", JSON),
        Case("two documents", valid + valid, JSON),
        Case("text/plain", valid, "text/plain"),
        Case("application/xml", b"<inputs/>", "application/xml"),
        Case("multipart", _multipart(b"x"), f"{MULTIPART}; boundary={BOUNDARY}"),
        Case("not an object", b"[1, 2]", JSON),
    ]
    if op not in INFER_OPERATIONS:
        cases.append(Case("form-encoded", b"a=1", FORM))
    return cases


def _multipart(content: bytes) -> bytes:
    return (
        (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="artifact"; filename="m.onnx"'
            f"\r\n\r\n"
        ).encode()
        + content
        + f"\r\n--{BOUNDARY}--\r\n".encode()
    )


def _raw_bodies() -> list[tuple[str, bytes, bool]]:
    """(name, body, carries a non-finite number) sent to every route with its media type."""
    bodies = [(f"bare {token}", f'{{"value": {token}}}'.encode(), True) for token in NON_FINITE]
    bodies += [
        ("bare -0.0", b'{"value": -0.0}', False),
        ("duplicate keys", b'{"a": 1, "a": 2}', False),
        ("nested duplicate keys", b'{"a": {"b": 1, "b": 2}}', False),
        (f"arrays nested {DEPTH} deep", b"[" * DEPTH + b"]" * DEPTH, False),
        (f"objects nested {DEPTH} deep", b'{"a":' * DEPTH + b"1" + b"}" * DEPTH, False),
        ("a million elements", b"[" + b"0," * (MILLION - 1) + b"0]", False),
        (
            "a million elements, over the body limit",
            b"[" + b"1e-05," * (MILLION - 1) + b"0]",
            False,
        ),
        ("invalid UTF-8", b'{"value": "\xff\xfe\xfd"}', False),
        ("overlong UTF-8 (/)", b'{"value": "\xc0\xaf"}', False),
        ("overlong UTF-8 (NUL)", b'{"value": "\xc0\x80"}', False),
        ("overlong UTF-8, 3 bytes", b'{"value": "\xe0\x80\xaf"}', False),
        ("lone surrogate escape", b'{"value": "\\ud800"}', False),
        ("lone low surrogate escape", b'{"value": "\\udc00x"}', False),
        ("encoded surrogate", b'{"value": "\xed\xa0\x80"}', False),
        ("NUL byte", b'{"value": "a\x00b"}', False),
        ("NUL escape", b'{"value": "a\\u0000b"}', False),
        ("NUL byte outside strings", b"\x00", False),
        ("UTF-8 BOM alone", b"\xef\xbb\xbf", False),
        ("empty", b"", False),
        ("whitespace only", b" \t\r\n ", False),
        ("truncated", b'{"value": [1, 2', False),
        ("trailing garbage", b'{"value": 1}}', False),
        (
            "form pairs repeated",
            b"grant_type=client_credentials&grant_type=client_credentials",
            False,
        ),
        ("form a million pairs", b"a=1&" * (MILLION // 4), False),
        ("form percent NUL and invalid UTF-8", b"grant_type=%00&scope=%ff%fe", False),
    ]
    return bodies


def _cases(op: Operation) -> list[Case]:
    """Every case for ``op``: the raw bodies with the operation's media type, then the JSON
    cases (JSON operations) or the wrong media types (form and multipart operations)."""
    assert op.body is not None
    media = op.body.media_type
    declared = f"{MULTIPART}; boundary={BOUNDARY}" if media == MULTIPART else media
    cases = [Case(n, body, declared, non_finite=nf) for n, body, nf in _raw_bodies()]
    if media == JSON:
        return cases + _json_cases(op)
    return [
        *cases,
        Case("JSON for a non-JSON route", b'{"grant_type": "client_credentials"}', JSON),
        Case("text/plain", b"grant_type=client_credentials", "text/plain"),
        Case("no content type", b"grant_type=client_credentials", None),
        Case("charset latin-1", b"grant_type=client_credentials", f"{declared}; charset=latin-1"),
        Case("multipart without boundary", _multipart(b"x"), MULTIPART),
        Case("multipart, truncated", _multipart(b"x")[:-8], f"{MULTIPART}; boundary={BOUNDARY}"),
    ]


def _binary_infer(values: bytes) -> tuple[bytes, dict[str, str]]:
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "input",
                    "datatype": "FP32",
                    "shape": [1, N_FEATURES],
                    "parameters": {"binary_data_size": len(values)},
                }
            ]
        }
    ).encode()
    return header + values, {
        "inference-header-content-length": str(len(header)),
        "content-type": "application/octet-stream",
    }


def _fp32(*first: float) -> bytes:
    row = [*first, *[0.5] * (N_FEATURES - len(first))]
    return struct.pack(f"<{N_FEATURES}f", *row)


SIGNALLING_NAN = struct.pack("<I", 0x7F800001) + _fp32()[4:]


# --- the tests ------------------------------------------------------------------------------------


@dataclass
class Tally:
    sent: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)

    def summary(self) -> str:
        histogram = ", ".join(f"{s}: {n}" for s, n in sorted(self.statuses.items()))
        return f"{self.sent} cases sent, statuses {{{histogram}}}"


def _send(live: LiveApp, op: Operation, credentials: Credentials, case: Case) -> httpx.Response:
    headers = dict(_headers(op, credentials))
    if case.content_type is not None:
        headers["content-type"] = case.content_type
    return live.request(
        op.method, _path(op, credentials), content=case.body, headers=headers, timeout=30
    )


def _judge(op: Operation, case: Case, response: httpx.Response, tally: Tally) -> None:
    where = f"{op.method} {op.path} [{case.name}] -> {response.status_code}"
    status = response.status_code
    tally.sent += 1
    tally.statuses[status] += 1
    if status >= 500:
        tally.failures.append(f"{where}: server error {response.text[:200]}")
        return
    if status in {401, 403}:
        tally.failures.append(f"{where}: the credential was refused, not the body")
        return
    if op in INFER_OPERATIONS and status == 200:
        if case.non_finite:
            tally.failures.append(f"{where}: a non-finite number was accepted")
        return
    if response.headers.get("content-type") != PROBLEM:
        tally.failures.append(f"{where}: not a problem ({response.headers.get('content-type')})")
        return
    code = response.json().get("code")
    if not isinstance(code, str) or not CODE_RE.fullmatch(code) or code not in REFUSAL_CODES:
        tally.failures.append(f"{where}: unexpected code {code!r}")


def test_malformed_bodies_never_get_a_server_error(
    live: LiveApp, credentials: Credentials, spy: NonFiniteSpy
) -> None:
    assert {op.operation_id for op in BODY_OPERATIONS} >= {"infer_production", "login"}
    started = time.monotonic()
    tally = Tally()
    minus_zero: list[int] = []
    for op in BODY_OPERATIONS:
        for case in _cases(op):
            response = _send(live, op, credentials, case)
            _judge(op, case, response, tally)
            if op in INFER_OPERATIONS and case.name == "number -0.0":
                minus_zero.append(response.status_code)
    elapsed = time.monotonic() - started
    summary = f"{tally.summary()} over {len(BODY_OPERATIONS)} routes in {elapsed:.1f} s"
    print(summary)  # shown with -rP: the totals of the run
    assert not tally.failures, f"{summary}\n" + "\n".join(tally.failures[:40])
    assert tally.statuses[200] == len(minus_zero), summary  # only -0.0 (a valid number) passes
    assert minus_zero == [200] * len(INFER_OPERATIONS), f"-0.0 is a valid number: {summary}"
    assert spy.non_finite == 0, f"{spy.non_finite} model calls saw NaN or infinity; {summary}"
    assert elapsed < RUN_BUDGET_S, summary


@pytest.mark.parametrize(
    ("name", "values"),
    [
        ("NaN", _fp32(math.nan)),
        ("signalling NaN", SIGNALLING_NAN),
        ("+Infinity", _fp32(math.inf)),
        ("-Infinity", _fp32(0.5, -math.inf)),
    ],
)
def test_binary_tensors_with_non_finite_values_are_refused(
    live: LiveApp, credentials: Credentials, spy: NonFiniteSpy, name: str, values: bytes
) -> None:
    body, headers = _binary_infer(values)
    for op in INFER_OPERATIONS:
        response = live.request(
            "POST",
            _path(op, credentials),
            content=body,
            headers={**headers, **bearer(credentials.session)},
        )
        assert response.status_code == 400, f"{name} via {op.path}: {response.text}"
        assert response.headers["content-type"] == PROBLEM
        assert response.json()["code"] == "input.invalid"
    assert spy.non_finite == 0


def test_binary_tensors_with_finite_values_are_served(
    live: LiveApp, credentials: Credentials, spy: NonFiniteSpy
) -> None:
    """The control for the test above: the same request with finite values (and -0.0)."""
    body, headers = _binary_infer(_fp32(-0.0))
    for content_type in ("application/octet-stream", None):
        request_headers = {**headers, **bearer(credentials.session)}
        if content_type is None:
            del request_headers["content-type"]  # tritonclient (geventhttpclient) sends none
        response = live.request(
            "POST", "/v2/models/fraud/infer", content=body, headers=request_headers
        )
        assert response.status_code == 200, response.text
    assert spy.calls >= 2 and spy.non_finite == 0


@pytest.mark.parametrize(
    ("content_type", "status"),
    [
        (None, 200),
        ("application/json", 200),
        ("application/json; charset=utf-8", 200),
        ("Application/JSON; charset=UTF-8", 200),
        ("application/octet-stream", 200),
        ("application/x-www-form-urlencoded", 200),  # curl -d
        ("text/plain", 415),
        ("application/xml", 415),
        ("multipart/form-data; boundary=x", 415),
        ("application/json; charset=latin-1", 415),
    ],
)
def test_infer_media_types(
    live: LiveApp, credentials: Credentials, content_type: str | None, status: int
) -> None:
    headers = bearer(credentials.session)
    if content_type is not None:
        headers["content-type"] = content_type
    body = json.dumps(_sample(INFER_OPERATIONS[0])).encode()
    response = live.request("POST", "/v2/models/fraud/infer", content=body, headers=headers)
    assert response.status_code == status, response.text
    if status == 415:
        assert response.json()["code"] == "input.unsupported_media_type"
