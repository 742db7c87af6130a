"""Fuzz the running server against its own OpenAPI document with schemathesis (``make fuzz-api``).

Makes a fresh instance in a temporary directory (``strongroom init``; ``fraud`` v1 pushed,
signed and promoted; users with every role and a fresh TOTP step-up; services with API keys),
starts the real ``strongroom serve`` over TLS on a free 127.0.0.1 port, and runs schemathesis
against the document it serves (``GET /v1/openapi.json``, trusting the instance's CA) twice,
with a fixed seed:

1. ``server-errors``: the ``not_a_server_error`` check alone. No request, valid or not, may
   get a 5xx.
2. ``all-checks``: every check. Statuses, media types, headers and bodies as documented;
   invalid data refused; valid data accepted (except the business refusals listed in
   ``BUSINESS_REFUSALS``, which JSON Schema cannot express); authentication never ignored;
   unsupported methods answered 405 with a truthful ``Allow``; and the stateful checks over
   the links schemathesis infers between operations.

Each pass must run at least ``MIN_CASES`` test cases, find no failure and end within its time
budget, or the script exits 1. Counts and statuses come from schemathesis's NDJSON report.

Not a pytest module (pytest collects ``test_*.py``): it runs for minutes and owns a server.
``--max-examples 20 --min-cases 0`` gives a quick run while changing it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "integration")]

from admin_harness import totp_code  # noqa: E402 - the harnesses live in tests/, added above

from conftest import N_FEATURES, cli, cli_json, make_signer  # noqa: E402
from server_harness import (  # noqa: E402
    RunningServer,
    ServingInstance,
    serving_instance,
    start_server,
)

SEED = 20251101
MIN_CASES = 10_000
MAX_EXAMPLES = 500
"""Fuzzing-phase cases per operation. With the examples, coverage and stateful phases a pass
runs about 12,000 cases. No ``--max-time``: schemathesis would keep fuzzing until it is spent,
which makes the count, and what is tested, depend on the machine's speed."""
SLOW_OPERATIONS = {"setPassword": 20, "login": 60}
"""Fuzzing-phase cases of the operations that hash a password (Argon2id, 0.1 s; setting one
also checks the last 4): enough for their few inputs, where 500 would take minutes."""
PASS_BUDGET_S = 220
"""Hard bound of one pass (about 170 s on a 2-core machine): schemathesis is killed and the
script fails after it, so that ``make fuzz-api`` stays under about 8 minutes."""
PASSWORD = "fuzzing password, long enough"
ALL_ROLES = ("admin", "model-owner", "deployer", "predictor", "auditor")
TARGET_USER = "user:fuzz-target"
TARGET_SERVICE = "svc:fuzz-target"
TARGET_MODEL = "fraud-target"
SCHEMATHESIS = Path(sys.executable).with_name("st")

SERVER_ENV = {
    # A step-up lasts the whole run (the default, 5 minutes, would expire mid-pass).
    "STRONGROOM_MFA_MAX_AGE_S": "3600",
    # ---- rate limits: see _rate_limit_env; add other guard settings for the fuzzer here. ----
}


def _rate_limit_env() -> dict[str, str]:
    """Generous limits, if this version has rate limits (``STRONGROOM_RATE_LIMITS__...``):
    a limit the fuzzer hits is a documented 429, but would turn most of a pass into refusals
    that test nothing else."""
    from strongroom.config import Settings

    if "rate_limits" not in Settings.model_fields:
        return {}
    env: dict[str, str] = {}
    for scope in ("PRINCIPAL", "MODEL", "PRINCIPAL_MODEL", "ADDRESS"):
        env[f"STRONGROOM_RATE_LIMITS__{scope}__PER_SECOND"] = "100000"
        env[f"STRONGROOM_RATE_LIMITS__{scope}__BURST"] = "100000"
    return env


# --- the instance ---------------------------------------------------------------------------------


def _onnx_model() -> bytes:
    """A small logistic regression over ``N_FEATURES`` inputs, as ONNX."""
    import numpy as np
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(SEED)
    features = rng.normal(size=(200, N_FEATURES)).astype(np.float32)
    model = LogisticRegression().fit(features, (features[:, 0] > 0).astype(np.int64))
    onnx = to_onnx(
        model,
        initial_types=[("input", FloatTensorType([None, N_FEATURES]))],
        options={"zipmap": False},
        target_opset={"": 17, "ai.onnx.ml": 3},
    )
    return bytes(onnx.SerializeToString())


def _make_instance(directory: Path) -> ServingInstance:
    """``fraud`` v1 in production, and ``TARGET_MODEL`` v1 for limits and stage changes."""
    signer = make_signer("team-a")
    home = directory / "home"
    passphrase = cli_json(home, "init")["generated_passphrase_file"]
    (directory / "signer.pem").write_bytes(signer.private_pem)
    (directory / "signer.pub.pem").write_bytes(signer.public_pem)
    (directory / "model.onnx").write_bytes(_onnx_model())
    (home / "strongroom.toml").write_text(
        f'keyring_passphrase_file = "{passphrase}"\n\n[[signers]]\nname = "team-a"\n'
        f'public_key_file = "{directory / "signer.pub.pem"}"\nmodels = ["fraud*"]\n'
    )
    served = serving_instance(home, directory)
    push = ("model", "push", TARGET_MODEL, str(directory / "model.onnx"))
    cli(home, *push, "--sign-key", str(directory / "signer.pem"), "--owner", "risk")
    return served


@dataclass(frozen=True)
class Actor:
    user_id: str
    totp_secret: str


def _roles(roles: tuple[str, ...]) -> list[str]:
    return [arg for role in roles for arg in ("--role", role)]


def _user(home: Path, name: str, *roles: str) -> Actor:
    """A user with a password and a TOTP secret, made with the CLI as an operator would."""
    user_id = f"user:{name}"
    cli(home, "principal", "add", user_id, *_roles(roles))
    password_file = home.parent / f"{name}.password"
    password_file.write_text(PASSWORD)
    cli(home, "principal", "passwd", user_id, "--password-file", str(password_file))
    return Actor(user_id, cli_json(home, "principal", "totp-enroll", user_id)["secret"])


def _service_key(home: Path, name: str, *roles: str) -> str:
    cli(home, "principal", "add", f"svc:{name}", *_roles(roles))
    return _api_key(home, f"svc:{name}")


def _api_key(home: Path, principal: str) -> str:
    return str(cli_json(home, "apikey", "issue", principal)["token"])


def _login(server: RunningServer, actor: Actor) -> str:
    """A session with a fresh step-up (the user's first TOTP code confirms its enrolment)."""
    body = {
        "user": actor.user_id.removeprefix("user:"),
        "password": PASSWORD,
        "totp": totp_code(actor.totp_secret),
    }
    with server.client(timeout=30) as client:
        response = client.post("/v1/auth/login", json=body)
    if response.status_code != 200:
        raise SystemExit(f"login of {actor.user_id} failed: {response.status_code} {response.text}")
    return str(response.json()["token"])


@dataclass(frozen=True)
class Credentials:
    session: str
    """A user with every role, logged in with TOTP just before the pass (fresh step-up)."""
    spare_session: str
    """Another user's session, for the operations that end or lock it."""
    service_key: str
    """A service with every role (the token endpoint serves services only)."""
    rotated_key_id: str
    """The API key ``rotateApiKey`` rotates."""
    revoked_key_id: str
    """The API key ``revokeApiKey`` revokes."""


def _credentials(server: RunningServer, home: Path, index: int) -> Credentials:
    """Fresh users and keys for pass ``index``: the pass before may have locked its users
    (failed logins with names it read in responses are the fuzzer's job) and revoked its
    keys."""
    fuzzer = _user(home, f"fuzzer-{index}", *ALL_ROLES)
    spare = _user(home, f"fuzzer-spare-{index}", "predictor")
    return Credentials(
        session=_login(server, fuzzer),
        spare_session=_login(server, spare),
        service_key=_service_key(home, f"fuzzer-{index}", *ALL_ROLES),
        rotated_key_id=_api_key(home, TARGET_SERVICE).split("_")[1],
        revoked_key_id=_api_key(home, TARGET_SERVICE).split("_")[1],
    )


# --- schemathesis's configuration -----------------------------------------------------------------

BUSINESS_REFUSALS: dict[str, tuple[str, tuple[int, ...]]] = {
    "infer_production": ("the model's own input names, datatypes and shapes", (400,)),
    "infer_pinned": ("the model's own input names, datatypes and shapes", (400,)),
    "publishVersion": (
        "the artifact must be a signed model of a supported format; part limits are in bytes",
        (400, 413, 422),
    ),
    "createPrincipal": ("networks are CIDRs with host bits zero; roles and grants by kind", (400,)),
    "updatePrincipal": ("networks are CIDRs with host bits zero; roles and grants by kind", (400,)),
    "issueApiKey": ("an expiry in the future", (400,)),
    "rotateApiKey": ("an expiry in the future; a rotated or revoked key cannot be", (400,)),
    "setPassword": ("the password policy: common passwords, the user name, the last 4", (400,)),
    "issueToken": ("client_id must name the caller; scopes its roles allow", (400,)),
    "setPrincipalLimits": ("deny_networks are CIDRs with host bits zero", (400,)),
    "setModelLimits": ("deny_networks are CIDRs with host bits zero", (400,)),
}
"""positive_data_acceptance: operations whose schema-valid requests may still be refused with
these statuses, and the rule that refuses them (not expressible in JSON Schema)."""
POSITIVE_STATUSES = ("2xx", "3xx", "401", "403", "404", "409", "429")
"""schemathesis's default for positive_data_acceptance, without 5xx (never correct here)."""
NEGATIVE_STATUSES = ("400", "401", "403", "404", "405", "406", "409", "415", "422", "428", "429")
"""schemathesis's default for negative_data_rejection, without 5xx."""


def _statuses(base: tuple[str, ...], extra: tuple[int, ...]) -> str:
    return ", ".join(f'"{status}"' for status in (*base, *map(str, extra)))


def _operations(ids: str | list[str], settings: str, why: str) -> str:
    return f"# {why}\n[[operations]]\ninclude-operation-id = {json.dumps(ids)}\n{settings}\n"


def _config(credentials: Credentials, max_examples: int) -> str:
    """``schemathesis.toml``: credentials per operation, fixed targets, expected statuses.

    Schemathesis feeds identifiers it read in responses (``GET /v1/principals`` lists the
    fuzzer itself) into other operations: with admin rights it would soon disable its own user,
    change its password (which ends its sessions) or set it a rate limit of one request, and
    the rest of the pass would be 401, 403 or 429 answers that test nothing. The operations that
    change principals, keys and limits act on targets made for the purpose instead.
    """
    blocks = [
        f'seed = {SEED}\nheaders = {{ Authorization = "Bearer {credentials.session}" }}\n',
        f'[generation]\nmax-examples = {max_examples}\ndatabase = "none"\n',
        (
            "# Nothing carried over from earlier runs: the seed alone decides what a pass sends."
            "\n[cache]\nenabled = false\n"
        ),
        _operations(
            ["stepUp", "logout"],
            f'headers = {{ Authorization = "Bearer {credentials.spare_session}" }}',
            "Logout ends the session it is called with, failed step-ups lock the user's TOTP.",
        ),
        _operations(
            "issueToken",
            f'headers = {{ Authorization = "Bearer {credentials.service_key}" }}',
            "The token endpoint serves services only (users log in).",
        ),
        _operations(
            [
                "updatePrincipal",
                "setPassword",
                "bindCertificate",
                "unbindCertificate",
                "setPrincipalLimits",
                "deletePrincipalLimits",
            ],
            f'parameters = {{ id = "{TARGET_USER}" }}',
            "Changes to principals: a user made for the purpose.",
        ),
        _operations(
            "rotateApiKey",
            f'parameters = {{ key_id = "{credentials.rotated_key_id}" }}',
            "Keys: one to rotate, one to revoke (random ids could only be 404s).",
        ),
        _operations(
            "revokeApiKey",
            f'parameters = {{ key_id = "{credentials.revoked_key_id}" }}',
            "... and the one to revoke.",
        ),
        _operations(
            ["setModelLimits", "deleteModelLimits", "promoteVersion", "rollbackModel"],
            f'parameters = {{ name = "{TARGET_MODEL}", version = "1" }}',
            "Limits and stage changes on a model of their own (limits on the served model would"
            "\n# turn the inference operations into 429s; random names could only be 404s).",
        ),
        (
            "# Inference: the served model, so that bodies reach the request decoder.\n"
            '[[operations]]\ninclude-tag = "inference"\n'
            'parameters = { name = "fraud", version = "1" }\n'
        ),
        *(
            _operations(op, f"generation.max-examples = {count}", "Argon2id: slow, few inputs.")
            for op, count in SLOW_OPERATIONS.items()
        ),
        _operations(
            "publishVersion",
            "checks.negative_data_rejection.expected-statuses = "
            f"[{_statuses(NEGATIVE_STATUSES, (413,))}]",
            "A part over its byte limit is refused with 413 as it arrives.",
        ),
        _operations(
            ["bindCertificate", "unbindCertificate"],
            "checks.negative_data_rejection.enabled = false",
            "Not applicable: schemathesis sends some invalid fingerprints (holding '%3A') into "
            "the path\n# without escaping the '%'; the server decodes '%3A' to ':' as RFC 3986 "
            "requires,\n# which makes them valid fingerprints, rightly accepted.",
        ),
        *(
            _operations(
                op,
                "checks.positive_data_acceptance.expected-statuses = "
                f"[{_statuses(POSITIVE_STATUSES, statuses)}]",
                f"Schema-valid but refused: {why}.",
            )
            for op, (why, statuses) in BUSINESS_REFUSALS.items()
        ),
    ]
    return "\n".join(blocks)


# --- the passes -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class PassResult:
    name: str
    cases: int
    failed_scenarios: int
    statuses: Counter[int]
    checks: frozenset[str]
    returncode: int
    seconds: float

    def summary(self) -> str:
        histogram = ", ".join(f"{s}: {n}" for s, n in sorted(self.statuses.items()))
        return (
            f"pass {self.name}: {self.cases} cases in {self.seconds:.0f} s, "
            f"{self.failed_scenarios} failed scenarios, exit {self.returncode}; "
            f"checks: {', '.join(sorted(self.checks))}; statuses {{{histogram}}}"
        )


def _tally(events: Path) -> tuple[int, int, Counter[int], frozenset[str]]:
    """(cases, failed scenarios, response statuses, checks run) from the NDJSON events: every
    case is recorded in its scenario's ``ScenarioFinished`` event (the count matches
    schemathesis's "N generated")."""
    cases = failed = 0
    statuses: Counter[int] = Counter()
    checks: set[str] = set()
    with events.open(encoding="utf-8") as lines:
        for line in lines:
            event = json.loads(line).get("ScenarioFinished")
            if event is None:
                continue
            failed += event.get("status") in {"failure", "error"}
            recorder = event.get("recorder") or {}
            cases += len(recorder.get("cases") or {})
            for interaction in (recorder.get("interactions") or {}).values():
                if interaction.get("response"):
                    statuses[int(interaction["response"]["status_code"])] += 1
            for results in (recorder.get("checks") or {}).values():
                checks.update(result["name"] for result in results)
    return cases, failed, statuses, frozenset(checks)


def _run_pass(
    name: str, checks: str | None, server: RunningServer, config: Path, *, budget_s: int
) -> PassResult:
    """One schemathesis run. ``checks`` None: every check, as ``config`` tunes them (a check
    named on the command line would override the per-operation settings there)."""
    work = config.parent
    command = [
        str(SCHEMATHESIS),
        "--config-file",
        str(config),
        "run",
        f"{server.base_url}/v1/openapi.json",
        *(() if checks is None else ("--checks", checks)),
        "--seed",
        str(SEED),
        "--tls-verify",
        str(server.ca_file),
        "--report",
        "ndjson",
        "--report-dir",
        str(work / name),
        "--no-color",
    ]
    print(f"\n=== pass {name}: checks {checks or 'all'} ===", flush=True)
    started = time.monotonic()
    try:
        proc = subprocess.run(command, cwd=work, timeout=budget_s, check=False)
    except subprocess.TimeoutExpired:  # run() has killed schemathesis
        raise SystemExit(f"pass {name} exceeded its time budget of {budget_s} s") from None
    seconds = time.monotonic() - started
    cases, failed, statuses, ran = _tally(next((work / name).glob("*.ndjson")))
    return PassResult(name, cases, failed, statuses, ran, proc.returncode, seconds)


@contextlib.contextmanager
def _server(work: Path) -> Iterator[tuple[RunningServer, Path]]:
    served = _make_instance(work)
    home = served.home
    _user(home, TARGET_USER.removeprefix("user:"), "predictor")
    cli(home, "principal", "add", TARGET_SERVICE, "--role", "predictor")
    env = {**SERVER_ENV, **_rate_limit_env()}
    server = start_server(served, tls=True, workers=1, extra_env=env)
    try:
        yield server, home
    finally:
        server.stop()


def _fuzz(work: Path, args: argparse.Namespace) -> list[PassResult]:
    results = []
    with _server(work) as (server, home):
        print(f"server {server.base_url}, log {server.log_path}", flush=True)
        passes = (("server-errors", "not_a_server_error"), ("all-checks", None))
        for index, (name, checks) in enumerate(passes):
            config = work / f"schemathesis-{name}.toml"
            config.write_text(_config(_credentials(server, home, index), args.max_examples))
            results.append(_run_pass(name, checks, server, config, budget_s=args.budget))
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--max-examples", type=int, default=MAX_EXAMPLES)
    parser.add_argument("--min-cases", type=int, default=MIN_CASES)
    parser.add_argument("--budget", type=int, default=PASS_BUDGET_S, help="seconds per pass")
    parser.add_argument("--work-dir", type=Path, help="use (and keep) this new directory")
    args = parser.parse_args(argv)
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        if args.work_dir is None:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="sr-fuzz-")))
        else:
            work = args.work_dir
            work.mkdir(parents=True)
        results = _fuzz(work, args)
    problems = []
    for result in results:
        print(result.summary())
        if result.cases < args.min_cases:
            problems.append(f"{result.name}: {result.cases} cases, fewer than {args.min_cases}")
        if result.failed_scenarios or result.returncode != 0:
            problems.append(f"{result.name}: schemathesis found failures (see its report above)")
    print(f"make fuzz-api: {time.monotonic() - started:.0f} s")
    for problem in problems:
        print(f"FAILED {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
