"""Rate limits shared through Redis by real server processes.

* Two workers, one quota of N predictions: at most 1.01 N pass (the counter is atomic, so
  exactly N), and both workers did serve (their request-id prefixes differ).
* A stop-the-world Redis outage (SIGSTOP of a private ``redis-server``) under traffic: with the
  default policy no prediction sent during the outage succeeds; with ``local`` they are counted
  by the worker alone, so never more than the limit; admin requests are refused either way;
  and the server serves again by itself once Redis is back.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Self

import httpx
import pytest

from redis_harness import RedisProcess
from server_harness import RunningServer, ServingInstance, infer_body, running, serving_instance

pytestmark = [pytest.mark.slow]

N = 120
CLIENTS = 8
INFER = "/v2/models/fraud/infer"
GENEROUS = json.dumps({"per_second": 100000, "burst": 100000})
OUTAGE_S = 2.0


def _env(url: str, prefix: str, **extra: str) -> dict[str, str]:
    return {
        "STRONGROOM_RATE_LIMIT_URL": url,
        "STRONGROOM_RATE_LIMIT_PREFIX": prefix,
        "STRONGROOM_RATE_LIMIT_TIMEOUT_S": "0.2",
        "STRONGROOM_RATE_LIMITS__PRINCIPAL": GENEROUS,
        **extra,
    }


def _predict(client: httpx.Client, key: str) -> httpx.Response:
    return client.post(
        INFER, json=infer_body([[0.3] * 6]), headers={"authorization": f"Bearer {key}"}
    )


def test_two_workers_sharing_redis_admit_at_most_the_quota(
    instance: Path, tmp_path: Path, shared_redis: tuple[str, str]
) -> None:
    url, prefix = shared_redis
    served = serving_instance(instance, tmp_path)
    quota = json.dumps({"limit": N, "period": "day"})
    env = _env(url, prefix, STRONGROOM_RATE_LIMITS__QUOTA=quota)
    with running(served, tls=False, workers=2, extra_env=env) as server:

        def one_client(_: int) -> list[tuple[int, str]]:
            # A connection per request: the workers share the listening socket, and fresh
            # connections are what spreads the load over both.
            fresh = httpx.Limits(max_keepalive_connections=0)
            with server.client(timeout=10.0, limits=fresh) as client:
                answers = [_predict(client, served.api_key) for _ in range(3 * N // CLIENTS)]
            return [(a.status_code, a.headers.get("x-request-id", "")) for a in answers]

        with ThreadPoolExecutor(CLIENTS) as pool:
            answers = [a for batch in pool.map(one_client, range(CLIENTS)) for a in batch]
    passed = [rid for status, rid in answers if status == 200]
    assert {status for status, _ in answers} <= {200, 429}
    assert len(passed) <= 1.01 * N
    assert len(passed) == N  # atomic: not about N, exactly N
    workers = {rid[:16] for _, rid in answers}  # request ids start with a per-process prefix
    assert len(workers) == 2, "both workers must have answered for the test to mean anything"


class Traffic:
    """Client threads sending predictions until stopped (bounded in count)."""

    def __init__(self, server: RunningServer, key: str, max_requests: int = 20_000) -> None:
        self.server, self.key, self.max_requests = server, key, max_requests
        self.answers: list[tuple[float, float, int]] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._run) for _ in range(4)]

    def __enter__(self) -> Self:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(60)

    def _run(self) -> None:
        with self.server.client(timeout=10.0) as client:
            while not self.stop.is_set() and len(self.answers) < self.max_requests:
                sent = time.monotonic()
                try:
                    status = _predict(client, self.key).status_code
                except httpx.TransportError:
                    continue
                with self.lock:
                    self.answers.append((sent, time.monotonic(), status))

    def wait_for(self, predicate: Any, what: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                pytest.fail(f"timed out waiting for {what}")
            self.stop.wait(0.01)


@pytest.fixture
def outage_instance(instance: Path, tmp_path: Path) -> ServingInstance:
    return serving_instance(instance, tmp_path)


def _outage(
    served: ServingInstance, redis_server: RedisProcess, policy: str, limit: int
) -> Iterator[tuple[list[tuple[float, float, int]], float, float, int]]:
    env = _env(
        redis_server.url,
        "outage:",
        STRONGROOM_RATE_LIMIT_OUTAGE_INFERENCE=policy,
        STRONGROOM_RATE_LIMITS__PRINCIPAL_MODEL=json.dumps({"per_second": 0.001, "burst": limit}),
    )
    with running(served, tls=False, extra_env=env) as server, Traffic(server, served.api_key) as t:
        t.wait_for(lambda: len(t.answers) >= 20, "traffic before the outage")
        redis_server.signal(signal.SIGSTOP)
        stopped = time.monotonic()
        admin_status = 0
        try:
            with server.client(timeout=10.0) as client:
                admin = client.get("/v2", headers={"authorization": f"Bearer {served.api_key}"})
                admin_status = admin.status_code
            t.stop.wait(OUTAGE_S)  # traffic keeps flowing for a bounded window
        finally:
            resumed = time.monotonic()
            redis_server.signal(signal.SIGCONT)
        wanted = {200} if policy == "closed" else {200, 429}
        t.wait_for(
            lambda: any(s in wanted and sent > resumed for sent, _, s in list(t.answers)),
            "answers after Redis is back",
        )
    yield t.answers, stopped, resumed, admin_status


def test_a_redis_outage_refuses_predictions_by_default(
    outage_instance: ServingInstance, private_redis: RedisProcess
) -> None:
    for answers, stopped, resumed, admin in _outage(
        outage_instance, private_redis, "closed", 10**6
    ):
        during = [s for sent, received, s in answers if sent > stopped and received < resumed]
        assert len(during) >= 5, "too little traffic during the outage"
        assert [s for s in during if s < 300] == []  # 0 unlimited successes
        assert set(during) == {503}
        assert admin == 503
        after = [s for sent, _, s in answers if sent > resumed]
        assert 200 in after  # recovered by itself


def test_a_redis_outage_with_local_counting_never_exceeds_the_limit(
    outage_instance: ServingInstance, private_redis: RedisProcess
) -> None:
    limit = 15
    for answers, stopped, resumed, admin in _outage(outage_instance, private_redis, "local", limit):
        during = [s for sent, received, s in answers if sent > stopped and received < resumed]
        assert len(during) > limit, "too little traffic during the outage"
        assert 0 < during.count(200) <= limit  # counted locally: the limit, no more
        assert set(during) <= {200, 429, 503}
        assert admin == 503  # admin and auth requests are never counted locally
