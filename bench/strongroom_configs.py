"""Configurations (b), (c) and (d): Strongroom itself, set up only through its command line.

==========================================================================================
STRONGROOM-SPECIFIC STEPS. Everything the benchmark knows about Strongroom is in this file,
each step one function that runs ``.venv/bin/strongroom --home <tmp> ...``:

  strongroom_init          init
  write_config             strongroom.toml: keyring passphrase file, port, public_url, the
                           bench signer, one [[oidc_issuers]] entry (EdDSA, local JWK Set,
                           service_subjects, subject_prefix "idp:")
  push_and_promote         model push (signed, with a reference sample: validation on),
                           model promote -> staging -> production
  issue_api_key            principal add svc:bench --role predictor; apikey issue (JSON "token")
  add_oidc_principal       principal add svc:idp:bench --role predictor (the token's principal)
  sign_access_token        an RFC 9068 at+jwt access token (sub = client_id = bench), EdDSA
  strongroom_specs         serve --workers 1 --port P, for (b) plaintext + API key,
                           (c) plaintext + OIDC JWT, (d) TLS + API key
==========================================================================================

The signing key for the model is the one thing made in Python (the CLI has no key-generation
command): ``strongroom.services.signing.generate_signing_key``, as the quickstart does.
(b) and (c) set ``STRONGROOM_UNSAFE_PLAINTEXT=true`` for the server only; (d) uses the
certificate ``strongroom init`` makes (``<home>/tls/server.crt``), which wrk does not verify
and the readiness poll checks as a CA without the hostname.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from servers import HOST, Endpoint, ServerSpec, free_port, server_env

STRONGROOM = Path(sys.executable).parent / "strongroom"
MODEL_NAME = "fraud"
INFER_PATH = f"/v2/models/{MODEL_NAME}/infer"
SERVICE = "bench"
PRINCIPAL = f"svc:{SERVICE}"
ISSUER = "https://issuer.bench.invalid"
SUBJECT_PREFIX = "idp:"
"""Each issuer needs its own prefix (the server's own token issuer has none)."""
OIDC_PRINCIPAL = f"svc:{SUBJECT_PREFIX}{SERVICE}"
"""Who the external token acts as: ``svc:`` + prefix + ``client_id`` (service_subjects)."""
SIGNER = "bench-signer"
TOKEN_TTL_S = 3600
CLI_TIMEOUT_S = 300
TITLES = {
    "b": "(b) Strongroom, plaintext, API key",
    "c": "(c) Strongroom, plaintext, OIDC JWT",
    "d": "(d) Strongroom, TLS, API key",
    "f": "(f) (b) with the request guard off",
    "g": "(g) (b) with the limiter in Redis",
}
GUARD_LIMITS = {
    # Counted on every request, but high enough that no benchmark request is refused: the
    # measurement is the guard's cost, not its refusals.
    "STRONGROOM_RATE_LIMITS__PRINCIPAL": '{"per_second": 1000000, "burst": 1000000}',
    "STRONGROOM_RATE_LIMITS__PRINCIPAL_MODEL": '{"per_second": 1000000, "burst": 1000000}',
    "STRONGROOM_RATE_LIMITS__QUOTA": '{"limit": 1000000000000, "period": "day"}',
}
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")


class StrongroomUnavailableError(RuntimeError):
    """A Strongroom step failed or does not exist yet; (b)-(d) are skipped with this message."""


@dataclass(frozen=True)
class StrongroomInstance:
    home: Path
    port: int
    public_url: str
    api_key: str
    access_token: str


def cli(home: Path, *args: str, json_output: bool = False) -> str:
    """``strongroom --home H [--json] args``; its stdout, or StrongroomUnavailableError."""
    command = [str(STRONGROOM), "--home", str(home), *(["--json"] if json_output else []), *args]
    done = subprocess.run(
        command, capture_output=True, text=True, env=server_env(), check=False,
        timeout=CLI_TIMEOUT_S,
    )  # fmt: skip
    if done.returncode != 0:
        shown = " ".join(["strongroom", *args])
        detail = (done.stderr or done.stdout).strip()[-600:]
        raise StrongroomUnavailableError(f"`{shown}` failed (exit {done.returncode}): {detail}")
    return done.stdout


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        raise StrongroomUnavailableError(f"expected JSON, got: {text[:300]!r}") from None


def serve_unavailable_reason(home: Path) -> str | None:
    """None when ``strongroom serve`` exists, else why (b)-(d) cannot run yet."""
    try:
        cli(home, "serve", "--help")
    except StrongroomUnavailableError as error:
        return f"`strongroom serve` is not available yet ({error})"
    return None


def strongroom_init(home: Path) -> Path | None:
    """``init``; returns the development keyring passphrase file it generated, if any."""
    result = _json(cli(home, "init", json_output=True))
    generated = result.get("generated_passphrase_file") if isinstance(result, dict) else None
    return Path(generated) if generated else None


def write_signing_key(home: Path) -> tuple[Path, Path]:
    from strongroom.services.signing import generate_signing_key

    keys = home / "bench-keys"
    keys.mkdir(mode=0o700, exist_ok=True)
    private_pem, public_pem = generate_signing_key()
    private, public = keys / f"{SIGNER}.pem", keys / f"{SIGNER}.pub.pem"
    private.write_bytes(private_pem)
    private.chmod(0o600)
    public.write_bytes(public_pem)
    return private, public


def write_config(
    home: Path, passphrase: Path | None, port: int, public_url: str, signer_pub: Path, jwks: Path
) -> None:
    """strongroom.toml for the instance (values as JSON strings: valid TOML basic strings)."""
    lines = [
        f"keyring_passphrase_file = {json.dumps(str(passphrase))}" if passphrase else "",
        f"port = {port}",
        f"public_url = {json.dumps(public_url)}",
        "",
        "[[signers]]",
        f"name = {json.dumps(SIGNER)}",
        f"public_key_file = {json.dumps(str(signer_pub))}",
        f"models = [{json.dumps(MODEL_NAME)}]",
        "",
        "[[oidc_issuers]]",
        f"issuer = {json.dumps(ISSUER)}",
        f"jwks_file = {json.dumps(str(jwks))}",
        f"audiences = [{json.dumps(public_url)}]",
        'algorithms = ["EdDSA"]',
        f"subject_prefix = {json.dumps(SUBJECT_PREFIX)}",
        "service_subjects = true",
        "",
    ]
    (home / "strongroom.toml").write_text("\n".join(lines), encoding="utf-8")


def push_and_promote(home: Path, onnx: Path, reference: Path, sign_key: Path) -> int:
    pushed = _json(
        cli(
            home,
            "model",
            "push",
            MODEL_NAME,
            str(onnx),
            "--sign-key",
            str(sign_key),
            "--reference",
            str(reference),
            "--owner",
            "bench",
            "--description",
            "synthetic fraud model (quickstart training) for bench_server",
            json_output=True,
        )
    )
    version = int(pushed["version"])
    for stage in ("staging", "production"):
        cli(home, "model", "promote", MODEL_NAME, str(version), "--to", stage, "--reason", "bench")
    return version


def issue_api_key(home: Path) -> str:
    cli(home, "principal", "add", PRINCIPAL, "--role", "predictor")
    issued = _json(cli(home, "apikey", "issue", PRINCIPAL, json_output=True))
    token = issued.get("token") if isinstance(issued, dict) else None
    if not isinstance(token, str) or not token:
        raise StrongroomUnavailableError(f"`apikey issue --json` gave no token: {issued!r}")
    return token


def add_oidc_principal(home: Path) -> None:
    """The principal the external issuer's tokens map to, with the same role as the API key's."""
    cli(home, "principal", "add", OIDC_PRINCIPAL, "--role", "predictor")


def make_oidc_issuer(directory: Path) -> tuple[Path, Any, str]:
    """An Ed25519 key and its JWK Set file: (jwks path, private key, kid)."""
    import base64

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    key = Ed25519PrivateKey.generate()
    raw = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    kid = f"bench-{secrets.token_hex(4)}"
    jwk = {
        "kty": "OKP",
        "crv": "Ed25519",
        "x": base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii"),
        "kid": kid,
        "use": "sig",
        "alg": "EdDSA",
    }
    path = directory / "bench-issuer-jwks.json"
    path.write_text(json.dumps({"keys": [jwk]}, indent=2), encoding="utf-8")
    return path, key, kid


def sign_access_token(key: Any, kid: str, audience: str) -> str:
    """A client-credentials access token (sub == client_id) valid for one hour."""
    import jwt

    now = int(time.time())
    claims = {
        "iss": ISSUER,
        "aud": audience,
        "sub": SERVICE,
        "client_id": SERVICE,
        "iat": now,
        "nbf": now,
        "exp": now + TOKEN_TTL_S,
        "jti": secrets.token_hex(16),
    }
    return jwt.encode(claims, key, algorithm="EdDSA", headers={"typ": "at+jwt", "kid": kid})


def prepare_instance(workdir: Path, onnx: Path, reference: Path) -> StrongroomInstance:
    """Every set-up step, in order; raises StrongroomUnavailableError naming the failing one."""
    home = workdir / "strongroom-home"
    reason = serve_unavailable_reason(home)
    if reason is not None:
        raise StrongroomUnavailableError(reason)
    passphrase = strongroom_init(home)
    private, public = write_signing_key(home)
    jwks, issuer_key, kid = make_oidc_issuer(home)
    port = free_port()
    public_url = f"https://localhost:{port}"
    write_config(home, passphrase, port, public_url, public, jwks)
    push_and_promote(home, onnx, reference, private)
    api_key = issue_api_key(home)
    add_oidc_principal(home)
    token = sign_access_token(issuer_key, kid, public_url)
    return StrongroomInstance(home, port, public_url, api_key, token)


def strongroom_specs(instance: StrongroomInstance, workdir: Path) -> list[ServerSpec]:
    """(b), (c), (d): the same instance and port, one at a time."""
    command = [
        str(STRONGROOM), "--home", str(instance.home), "serve",
        "--workers", "1", "--port", str(instance.port),
    ]  # fmt: skip
    plain = server_env({"STRONGROOM_UNSAFE_PLAINTEXT": "true", **GUARD_LIMITS})
    guard_off = {**plain, "STRONGROOM_UNSAFE_NO_REQUEST_GUARD": "true"}
    redis = {
        **plain,
        "STRONGROOM_RATE_LIMIT_URL": REDIS_URL,
        "STRONGROOM_RATE_LIMIT_PREFIX": f"bench-{os.getpid()}:",
    }
    http, https = f"http://{HOST}:{instance.port}", f"https://{HOST}:{instance.port}"
    api_key = {"Authorization": f"Bearer {instance.api_key}"}
    jwt_auth = {"Authorization": f"Bearer {instance.access_token}"}
    cert = instance.home / "tls" / "server.crt"
    tls = server_env(GUARD_LIMITS)
    rows = [
        ("b", plain, Endpoint(http, INFER_PATH, api_key)),
        ("c", plain, Endpoint(http, INFER_PATH, jwt_auth)),
        ("d", tls, Endpoint(https, INFER_PATH, api_key, cert)),
        ("f", guard_off, Endpoint(http, INFER_PATH, api_key)),
        ("g", redis, Endpoint(http, INFER_PATH, api_key)),
    ]
    return [
        ServerSpec(key, TITLES[key], command, env, endpoint, workdir / f"{key}-strongroom.log")
        for key, env, endpoint in rows
    ]
