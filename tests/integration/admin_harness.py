"""The real app (``build_app`` over ``build_parts`` of an initialised instance), in process.

``LiveApp`` runs the ASGI app on its own event loop in a background thread, drives its lifespan
(audit writer start, model loading) and answers requests through ``httpx.ASGITransport`` from
a fixed client address, so tests are plain synchronous code. Every wait is bounded.

``Actors`` makes principals the way an operator would (through the identity service) and logs
users in through the API, with TOTP codes computed from the enrolment secret.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pyotp

from strongroom.config import load_settings
from strongroom.core.identity.principal import Grant, Role
from strongroom.core.registry.manifest import ModelCard
from strongroom.entrypoints.http.admin import admin_routes
from strongroom.entrypoints.http.app import ServerParts, build_app, build_parts
from strongroom.services.publishing import PublishRequest
from strongroom.services.signing import sign_files

T = TypeVar("T")
WAIT_S = 60.0
CLIENT = ("127.0.0.1", 40001)
PASSWORD = "correct horse battery staple"


class LiveApp:
    def __init__(self, parts: ServerParts) -> None:
        self.parts = parts
        self.app = build_app(parts)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self._lifespan_in: asyncio.Queue[dict[str, Any]] | None = None
        self._lifespan_out: asyncio.Queue[dict[str, Any]] | None = None
        self._lifespan_task: asyncio.Task[None] | None = None
        self.client = self.run(self._open())

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(WAIT_S)

    async def _open(self) -> httpx.AsyncClient:
        self._lifespan_in, self._lifespan_out = asyncio.Queue(), asyncio.Queue()
        scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
        self._lifespan_task = asyncio.create_task(
            self.app(scope, self._lifespan_in.get, self._lifespan_out.put)
        )
        await self._lifespan_in.put({"type": "lifespan.startup"})
        message = await self._lifespan_out.get()
        if message["type"] != "lifespan.startup.complete":
            raise AssertionError(f"start-up failed: {message}")
        transport = httpx.ASGITransport(app=self.app, client=CLIENT)
        return httpx.AsyncClient(transport=transport, base_url="https://strongroom.test")

    async def _close(self) -> None:
        await self.client.aclose()
        if self._lifespan_in is None or self._lifespan_out is None:
            return
        await self._lifespan_in.put({"type": "lifespan.shutdown"})
        await self._lifespan_out.get()
        if self._lifespan_task is not None:
            await self._lifespan_task

    def close(self) -> None:
        try:
            self.run(self._close())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(WAIT_S)
            self.loop.close()

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        return self.run(self.client.request(method, url, **kwargs))

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", url, **kwargs)


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def totp_code(secret: str, steps_ahead: int = 0) -> str:
    return str(pyotp.TOTP(secret).at(time.time() + 30 * steps_ahead))


def problem_without_id(response: httpx.Response) -> dict[str, Any]:
    body = dict(response.json())
    body.pop("request_id")
    return body


@dataclass
class User:
    id: str
    secret: str
    token: str | None = None


class Actors:
    """Principals made as an operator would, and users logged in through the API."""

    def __init__(self, live: LiveApp) -> None:
        self.live = live
        self.identity = live.parts.identity

    def user(self, name: str, *roles: Role, **kwargs: Any) -> User:
        user_id = f"user:{name}"
        self.identity.create_principal(user_id, roles=roles, **kwargs)
        self.identity.set_password(user_id, PASSWORD)
        secret, _uri = self.identity.enroll_totp(user_id)
        return User(user_id, secret)

    def login(self, user: User, *, totp: str | None = None) -> str:
        body: dict[str, Any] = {"user": user.id.removeprefix("user:"), "password": PASSWORD}
        if totp is not None:
            body["totp"] = totp
        response = self.live.post("/v1/auth/login", json=body)
        assert response.status_code == 200, response.text
        user.token = response.json()["token"]
        return str(user.token)

    def fresh(self, name: str, *roles: Role, **kwargs: Any) -> User:
        """A user logged in with password and TOTP just now (MFA fresh)."""
        user = self.user(name, *roles, **kwargs)
        self.login(user, totp=totp_code(user.secret))
        return user

    def service(
        self, name: str, *roles: Role, grants: tuple[Grant, ...] = (), **kwargs: Any
    ) -> str:
        """A service principal and one API key for it; returns the key."""
        principal_id = f"svc:{name}"
        self.identity.create_principal(principal_id, roles=roles, grants=grants, **kwargs)
        issued, _record = self.identity.issue_api_key(principal_id)
        return issued.token


def publish_signed(parts: ServerParts, signer: Any, model: str, onnx: bytes) -> int:
    """Publish ``onnx`` as a new version of ``model`` through the registry (as the CLI does)."""
    files = {"model.onnx": onnx}
    bundle = sign_files(
        files, subject_name=model, private_key_pem=signer.private_pem, single_file=True
    )
    result = parts.registry.publish(
        PublishRequest(
            model=model,
            files=files,
            card=ModelCard(owner="tests"),
            actor="test",
            single_file=True,
            signature_bundle=bundle,
        )
    )
    return int(result.record.version)


@contextmanager
def live_app(home: Path, **overrides: Any) -> Iterator[LiveApp]:
    """The app of an instance made by ``strongroom init`` (see conftest's ``instance``)."""
    settings = load_settings(home=home, **overrides)
    parts = build_parts(settings)
    parts.routes.extend(admin_routes(parts))
    live = LiveApp(parts)
    try:
        yield live
    finally:
        live.close()


def make_instance(directory: Path, signer: Any) -> Path:
    """An initialised home trusting ``signer`` for ``fraud*`` (like conftest's ``instance``)."""
    from conftest import cli_json

    home = directory / "home"
    passphrase = cli_json(home, "init")["generated_passphrase_file"]
    (directory / "signer.pub.pem").write_bytes(signer.public_pem)
    (home / "strongroom.toml").write_text(
        f'keyring_passphrase_file = "{passphrase}"\n\n[[signers]]\nname = "team-a"\n'
        f'public_key_file = "{directory / "signer.pub.pem"}"\nmodels = ["fraud*"]\n'
    )
    return home
