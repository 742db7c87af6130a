"""Rate limits, quotas, overrides and load shedding, against the real app in process.

Each test builds its own instance with the limits it needs (one worker, the in-memory counter):
"exactly N" is exact here because the counter is. Several workers sharing Redis, and a Redis
outage under traffic, run real servers in ``test_request_limits_redis.py``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from admin_harness import Actors, LiveApp, bearer, live_app, make_instance, publish_signed

from conftest import N_FEATURES, SignerKeys, TrainedModel
from strongroom.core.audit.ports import AuditQuery
from strongroom.core.identity.principal import Role
from strongroom.core.registry.model import Stage
from strongroom.services.audit_reading import AuditReader

N = 7
SLOW = {"per_second": 0.001, "burst": N}
"""A burst of N, then one request per 1000 s: nothing refills within a test."""
GENEROUS = {"per_second": 1000.0, "burst": 1000}
MODEL = "fraud-limits"
INFER = f"/v2/models/{MODEL}/infer"


def predict_body(rows: int = 1) -> dict[str, Any]:
    data = [0.1] * (rows * N_FEATURES)
    return {
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [rows, N_FEATURES], "data": data}]
    }


@contextmanager
def serving(
    tmp_path: Path, signer: SignerKeys, trained_model: TrainedModel, **overrides: Any
) -> Iterator[LiveApp]:
    """An instance with ``MODEL`` in production, served in process with ``overrides``."""
    home = make_instance(tmp_path, signer)
    with live_app(home, **overrides) as live:
        version = publish_signed(live.parts, signer, MODEL, trained_model.onnx)
        live.parts.lifecycle.promote(MODEL, version, Stage.PRODUCTION, reason="t", actor="test")
        live.parts.host.refresh()
        yield live


def audit_records(live: LiveApp, action: str, principal: str) -> list[dict[str, Any]]:
    query = AuditQuery(action=action, principal=principal, limit=1000)
    return live.parts.audit_service().query(query, AuditReader(principal="test", request_id="t"))


def statuses(responses: list[Any]) -> dict[int, int]:
    counts: dict[int, int] = {}
    for response in responses:
        counts[response.status_code] = counts.get(response.status_code, 0) + 1
    return counts


def test_exactly_n_predictions_pass_a_principal_limit(
    tmp_path: Path, signer: SignerKeys, trained_model: TrainedModel
) -> None:
    limits = {"principal": SLOW, "address": GENEROUS}
    with serving(tmp_path, signer, trained_model, rate_limits=limits) as live:
        key = Actors(live).service("caller", Role.PREDICTOR)
        answers = [live.post(INFER, json=predict_body(), headers=bearer(key)) for _ in range(3 * N)]
        assert statuses(answers) == {200: N, 429: 2 * N}
        assert all(a.status_code == 200 for a in answers[:N])
        first_ok, refused = answers[0], answers[N]
        assert first_ok.headers["ratelimit-limit"] == str(N)
        assert first_ok.headers["ratelimit-remaining"] == str(N - 1)
        assert refused.json()["code"] == "ratelimit.exceeded"
        assert int(refused.headers["retry-after"]) >= 999  # one request per 1000 s
        assert refused.headers["ratelimit-remaining"] == "0"
        assert refused.headers["ratelimit-limit"] == str(N)
        records = audit_records(live, "model.predict", "svc:caller")
        outcomes = [r["outcome"] for r in records]
        assert outcomes.count("allowed") == N
        assert outcomes.count("denied") == 2 * N
        refused_records = [r for r in records if r["outcome"] == "denied"]
        assert {r["reason"] for r in refused_records} == {"ratelimit.exceeded"}
        assert {r["details"]["limit"] for r in refused_records} == {"principal"}
        assert {r["details"]["status"] for r in refused_records} == {429}


def test_a_daily_quota_admits_exactly_n_and_is_per_principal(
    tmp_path: Path, signer: SignerKeys, trained_model: TrainedModel
) -> None:
    limits = {"principal": GENEROUS, "quota": {"limit": N, "period": "day"}}
    with serving(tmp_path, signer, trained_model, rate_limits=limits) as live:
        actors = Actors(live)
        first, second = (actors.service(n, Role.PREDICTOR) for n in ("q-one", "q-two"))
        one = [live.post(INFER, json=predict_body(), headers=bearer(first)) for _ in range(N + 3)]
        two = [live.post(INFER, json=predict_body(), headers=bearer(second)) for _ in range(N)]
        assert statuses(one) == {200: N, 429: 3}
        assert statuses(two) == {200: N}
        assert one[-1].json()["detail"].startswith("rate limit exceeded (quota)")
        # Other routes are not predictions: the quota does not touch them.
        assert live.get(f"/v2/models/{MODEL}", headers=bearer(first)).status_code == 200


def test_model_and_pair_limits_and_overrides_through_the_admin_api(
    tmp_path: Path, signer: SignerKeys, trained_model: TrainedModel
) -> None:
    limits = {"principal": GENEROUS, "model": GENEROUS}
    with serving(tmp_path, signer, trained_model, rate_limits=limits) as live:
        actors = Actors(live)
        caller = actors.service("over", Role.PREDICTOR)
        other = actors.service("other", Role.PREDICTOR)
        admin = actors.fresh("ada", Role.ADMIN).token
        deployer = actors.fresh("dan", Role.DEPLOYER).token
        assert admin is not None and deployer is not None
        url = "/v1/limits/principals/svc:over"
        set_principal = live.request(
            "PUT",
            url,
            json={"model_rate": {"per_second": 0.001, "burst": 2}},
            headers=bearer(admin),
        )
        assert set_principal.status_code == 200, set_principal.text
        answers = [live.post(INFER, json=predict_body(), headers=bearer(caller)) for _ in range(4)]
        assert statuses(answers) == {200: 2, 429: 2}
        assert answers[-1].json()["detail"] == "rate limit exceeded (principal_model); retry later"
        # The model's own rate (all principals together) from its override.
        model_url = f"/v1/limits/models/{MODEL}"
        body = {"rate": {"per_second": 0.001, "burst": 3}}
        refused = live.request("PUT", model_url, json=body, headers=bearer(admin))
        assert refused.status_code == 403  # model.limit is the deployer's
        assert (
            live.request("PUT", model_url, json=body, headers=bearer(deployer)).status_code == 200
        )
        others = [live.post(INFER, json=predict_body(), headers=bearer(other)) for _ in range(5)]
        assert statuses(others) == {200: 3, 429: 2}
        listed = live.get("/v1/limits", headers=bearer(admin)).json()
        assert {(o["kind"], o["subject"]) for o in listed["overrides"]} == {
            ("principal", "svc:over"),
            ("model", MODEL),
        }
        assert listed["defaults"]["model"] == GENEROUS
        # Back to the defaults: the model override goes, its count with it.
        assert live.request("DELETE", model_url, headers=bearer(deployer)).status_code == 204
        assert live.request("DELETE", model_url, headers=bearer(deployer)).status_code == 404
        assert live.post(INFER, json=predict_body(), headers=bearer(other)).status_code == 200


def test_override_input_is_checked_and_needs_existing_subjects(
    tmp_path: Path, signer: SignerKeys, trained_model: TrainedModel
) -> None:
    with serving(tmp_path, signer, trained_model) as live:
        admin = Actors(live).fresh("ada", Role.ADMIN).token
        assert admin is not None
        url = "/v1/limits/principals/svc:nobody"
        unknown = live.request("PUT", url, json={"max_concurrent": 2}, headers=bearer(admin))
        assert unknown.status_code == 404
        me = "/v1/limits/principals/user:ada"
        for bad in (
            {"rate": {"per_second": 0, "burst": 1}},
            {"rate": {"per_second": 1}},
            {"quota": {"limit": 5, "period": "week"}},
            {"deny_networks": ["10.0.0.1/8"]},
            {"max_concurrent": 0},
            {"surprise": 1},
        ):
            answer = live.request("PUT", me, json=bad, headers=bearer(admin))
            assert answer.status_code == 400, (bad, answer.text)
            assert answer.json()["code"] == "input.invalid"


def test_a_principal_denied_network_is_refused(
    tmp_path: Path, signer: SignerKeys, trained_model: TrainedModel
) -> None:
    with serving(tmp_path, signer, trained_model) as live:
        actors = Actors(live)
        key = actors.service("fenced", Role.PREDICTOR)
        admin = actors.fresh("ada", Role.ADMIN).token
        assert admin is not None
        assert live.post(INFER, json=predict_body(), headers=bearer(key)).status_code == 200
        body = {"deny_networks": ["127.0.0.0/8"]}  # the in-process client is 127.0.0.1
        url = "/v1/limits/principals/svc:fenced"
        assert live.request("PUT", url, json=body, headers=bearer(admin)).status_code == 200
        refused = live.post(INFER, json=predict_body(), headers=bearer(key))
        assert refused.status_code == 403
        assert refused.json()["code"] == "auth.forbidden"  # opaque: which rule is not said


def test_failed_authentications_exhaust_the_address_then_block_it(
    tmp_path: Path, signer: SignerKeys, trained_model: TrainedModel
) -> None:
    limits = {"address": SLOW}
    with serving(tmp_path, signer, trained_model, rate_limits=limits) as live:
        key = Actors(live).service("victim", Role.PREDICTOR)
        forged = bearer("sr_aaaaaaaaaaaa_" + "A" * 43)
        answers = [live.post(INFER, json=predict_body(), headers=forged) for _ in range(N + 2)]
        assert [a.status_code for a in answers] == [401] * N + [429] * 2
        # The address is now blocked: even a valid key is not checked until Retry-After.
        blocked = live.post(INFER, json=predict_body(), headers=bearer(key))
        assert blocked.status_code == 429
        assert int(blocked.headers["retry-after"]) >= 999
        login = live.post("/v1/auth/login", json={"user": "nobody", "password": "x" * 12})
        assert login.status_code == 429


async def _slow_body(started: asyncio.Event, release: asyncio.Event) -> AsyncIterator[bytes]:
    yield b'{"inputs": ['
    started.set()
    await release.wait()
    yield b"]}"


def test_concurrency_per_principal_and_model_queue_shed_with_503(
    tmp_path: Path, signer: SignerKeys, trained_model: TrainedModel
) -> None:
    with serving(
        tmp_path, signer, trained_model, max_concurrent_per_principal=1, max_queue_per_model=2
    ) as live:
        actors = Actors(live)
        keys = [actors.service(f"busy-{i}", Role.PREDICTOR) for i in range(3)]

        async def scenario() -> list[int]:
            started = [asyncio.Event() for _ in keys]
            release = asyncio.Event()
            held = [
                asyncio.create_task(
                    live.client.post(
                        INFER, content=_slow_body(started[i], release), headers=bearer(keys[i])
                    )
                )
                for i in range(2)
            ]
            await asyncio.wait_for(asyncio.gather(*(e.wait() for e in started[:2])), 30)
            same_principal = await live.client.post(
                INFER, json=predict_body(), headers=bearer(keys[0])
            )
            queue_full = await live.client.post(INFER, json=predict_body(), headers=bearer(keys[2]))
            health = await live.client.get("/v2/health/live")
            release.set()
            finished = await asyncio.wait_for(asyncio.gather(*held), 30)
            after = await live.client.post(INFER, json=predict_body(), headers=bearer(keys[2]))
            return [
                same_principal.status_code,
                int(same_principal.headers.get("retry-after", "0")),
                queue_full.status_code,
                health.status_code,
                *(f.status_code for f in finished),
                after.status_code,
            ]

        same, retry, full, health, held_one, held_two, after = live.run(scenario())
        assert (same, full) == (503, 503)
        assert retry >= 1
        assert health == 200  # health answers while the model's queue is full
        assert (held_one, held_two) == (
            400,
            400,
        )  # their (truncated) bodies were read, then refused
        assert after == 200  # slots come back when exchanges end
        assert live.parts.access.admission is not None
        assert live.parts.access.admission.in_flight(model=MODEL) == 0


def test_limits_are_off_with_the_unsafe_switch_and_that_is_recorded(
    tmp_path: Path, signer: SignerKeys, trained_model: TrainedModel
) -> None:
    limits = {"principal": SLOW}
    with serving(
        tmp_path, signer, trained_model, rate_limits=limits, unsafe_no_request_guard=True
    ) as live:
        key = Actors(live).service("free", Role.PREDICTOR)
        answers = [live.post(INFER, json=predict_body(), headers=bearer(key)) for _ in range(N + 3)]
        assert statuses(answers) == {200: N + 3}
        starts = audit_records(live, "server.start", "server")
        assert starts[-1]["details"]["unsafe_no_request_guard"] is True
