"""``strongroom principal ...`` and ``strongroom apikey ...``: identities and their credentials.

Every command that changes a principal or a credential runs inside ``state.audited(...)`` and so
writes exactly one audit record of its outcome. Secrets (API keys, TOTP secrets) are printed
once and never written to the audit log; passwords are read from a file or a hidden prompt,
never from the command line.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from strongroom import bootstrap
from strongroom.core.audit.record import bounded_text
from strongroom.core.identity.principal import Grant, Role
from strongroom.errors import InvalidInputError

if TYPE_CHECKING:
    from strongroom.core.identity.api_keys import StoredApiKey
    from strongroom.core.identity.ports import PrincipalRecord
    from strongroom.entrypoints.cli.state import CliState
    from strongroom.services.identity import IdentityService

app = typer.Typer(help="Principals (users, services), roles and grants.", no_args_is_help=True)
apikeys = typer.Typer(help="API keys: issue, rotate, revoke, list.", no_args_is_help=True)

MAX_PASSWORD_FILE_BYTES = 4096
MAX_EXPIRY_DAYS = 3650
MAX_GRACE_MINUTES = 30 * 24 * 60
MAX_DETAIL_CHARS = 1024

RoleOption = Annotated[list[Role] | None, typer.Option("--role", help="A global role (repeat).")]
GrantOption = Annotated[
    list[str] | None,
    typer.Option("--grant", help="role:model-pattern, e.g. predictor:fraud-* (repeat)."),
]
NetworkOption = Annotated[
    list[str] | None, typer.Option("--network", help="A CIDR the principal may call from (repeat).")
]


def _service(state: CliState) -> IdentityService:
    return bootstrap.build_identity_service(state.settings, bootstrap.server_keys(state.settings))


def _grants(values: list[str] | None) -> list[Grant] | None:
    if values is None:
        return None
    grants = []
    for value in values:
        role, sep, pattern = value.partition(":")
        if not sep or role not in set(Role):
            raise InvalidInputError(
                f"invalid grant {value!r}", hint="use role:pattern, e.g. predictor:fraud-*"
            )
        grants.append(Grant(Role(role), pattern))
    return grants


def principal_dict(record: PrincipalRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "kind": record.kind.value,
        "roles": sorted(role.value for role in record.roles),
        "grants": [f"{g.role.value}:{g.pattern}" for g in record.grants],
        "networks": [str(n) for n in record.networks],
        "disabled": record.disabled,
        "created_at": record.created_at.isoformat(),
        "description": record.description,
    }


def key_dict(record: StoredApiKey) -> dict[str, Any]:
    return {
        "key_id": record.key_id,
        "principal": record.principal_id,
        "created_at": record.created_at.isoformat(),
        "expires_at": None if record.expires_at is None else record.expires_at.isoformat(),
        "revoked_at": None if record.revoked_at is None else record.revoked_at.isoformat(),
    }


def _principal_table(records: list[PrincipalRecord]) -> Table:
    table = Table("principal", "roles", "grants", "networks", "state", "description")
    for record in records:
        data = principal_dict(record)
        table.add_row(
            record.id,
            ", ".join(data["roles"]) or "-",
            ", ".join(data["grants"]) or "-",
            ", ".join(data["networks"]) or "any",
            "DISABLED" if record.disabled else "active",
            record.description,
        )
    return table


# --- principals ---------------------------------------------------------------------------------


@app.command()
def add(
    ctx: typer.Context,
    principal_id: Annotated[str, typer.Argument(help="user:<name> or svc:<name>.")],
    role: RoleOption = None,
    grant: GrantOption = None,
    network: NetworkOption = None,
    description: Annotated[str, typer.Option(help="Free text for operators.")] = "",
) -> None:
    """Create a user or service principal."""
    state: CliState = ctx.obj
    service = _service(state)
    with state.audited("principal.create", principal_id):
        record = service.create_principal(
            principal_id,
            roles=role or (),
            grants=_grants(grant) or (),
            networks=network or (),
            description=description,
        )
    state.output.emit(principal_dict(record), f"created {record.id}")


@app.command("list")
def list_(ctx: typer.Context) -> None:
    """List principals."""
    state: CliState = ctx.obj
    records = _service(state).list_principals()
    state.output.emit(
        [principal_dict(r) for r in records], _principal_table(records) if records else "none"
    )


@app.command()
def show(ctx: typer.Context, principal_id: str) -> None:
    """Show a principal with its API keys and certificate bindings (never secrets)."""
    state: CliState = ctx.obj
    service = _service(state)
    record = service.get_principal(principal_id)
    data = {
        **principal_dict(record),
        "api_keys": [key_dict(k) for k in service.list_api_keys(principal_id)],
        "certificates": [c.fingerprint for c in service.list_certificates(principal_id)],
    }
    lines = [f"{k}: {v}" for k, v in data.items() if k not in {"api_keys", "certificates"}]
    lines += [f"api key {k['key_id']}: {_key_state(k)}" for k in data["api_keys"]]
    lines += [f"certificate {fingerprint}" for fingerprint in data["certificates"]]
    state.output.emit(data, "\n".join(lines))


def _replacement(values: list[Any] | None, clear: bool, what: str) -> list[Any] | None:
    if clear and values:
        raise InvalidInputError(f"give --{what} or --clear-{what}s, not both")
    return [] if clear else values


@app.command()
def update(
    ctx: typer.Context,
    principal_id: str,
    role: RoleOption = None,
    clear_roles: Annotated[bool, typer.Option("--clear-roles", help="Remove every role.")] = False,
    grant: GrantOption = None,
    clear_grants: Annotated[
        bool, typer.Option("--clear-grants", help="Remove every grant.")
    ] = False,
    network: NetworkOption = None,
    clear_networks: Annotated[
        bool, typer.Option("--clear-networks", help="Allow any source network.")
    ] = False,
    disable: Annotated[
        bool | None, typer.Option("--disable/--enable", help="Deny everything / allow again.")
    ] = None,
    description: Annotated[str | None, typer.Option(help="Free text for operators.")] = None,
) -> None:
    """Change roles, grants or networks (each given list replaces the old one), or disable."""
    state: CliState = ctx.obj
    roles = _replacement(role, clear_roles, "role")
    grants = _grants(_replacement(grant, clear_grants, "grant"))
    networks = _replacement(network, clear_networks, "network")
    service = _service(state)
    changed = {
        "roles": _joined(None if roles is None else [r.value for r in roles]),
        "grants": _joined(None if grants is None else [f"{g.role}:{g.pattern}" for g in grants]),
        "networks": _joined(networks),
        "disabled": disable,
    }
    with state.audited("principal.update", principal_id, **changed):
        record = service.update_principal(
            principal_id,
            roles=roles,
            grants=grants,
            networks=networks,
            disabled=disable,
            description=description,
        )
    state.output.emit(principal_dict(record), f"updated {record.id}")


def _joined(values: list[str] | None) -> str | None:
    """A list as one audit detail value (details are flat and at most 1,024 characters)."""
    return None if values is None else bounded_text(",".join(values), MAX_DETAIL_CHARS)


def _read_password(password_file: Path | None) -> str:
    if password_file is None:
        return str(typer.prompt("New password", hide_input=True, confirmation_prompt=True))
    try:
        with password_file.open("rb") as handle:
            data = handle.read(MAX_PASSWORD_FILE_BYTES + 1)
    except OSError as exc:
        raise InvalidInputError(f"cannot read {password_file}: {exc.strerror}") from None
    if len(data) > MAX_PASSWORD_FILE_BYTES:
        raise InvalidInputError(f"{password_file} is larger than {MAX_PASSWORD_FILE_BYTES} bytes")
    try:
        return data.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError:
        raise InvalidInputError(f"{password_file} is not UTF-8 text") from None


@app.command()
def passwd(
    ctx: typer.Context,
    user_id: str,
    password_file: Annotated[
        Path | None, typer.Option(help="Read the new password from this file (else a prompt).")
    ] = None,
) -> None:
    """Set a user's password (at least 12 characters, not one of its last 4); ends its sessions."""
    state: CliState = ctx.obj
    password = _read_password(password_file)
    service = _service(state)
    with state.audited("principal.set_password", user_id):
        service.set_password(user_id, password)
    state.output.emit({"principal": user_id, "changed": "password"}, f"password set for {user_id}")


@app.command("totp-enroll")
def totp_enroll(ctx: typer.Context, user_id: str) -> None:
    """Give a user a new TOTP secret (printed once); the first valid code confirms it."""
    state: CliState = ctx.obj
    service = _service(state)
    with state.audited("principal.enroll_totp", user_id):
        secret, uri = service.enroll_totp(user_id)
    state.output.emit(
        {"principal": user_id, "secret": secret, "provisioning_uri": uri},
        f"TOTP secret for {user_id} (shown once): {secret}\nprovisioning URI: {uri}",
    )


@app.command("bind-cert")
def bind_cert(
    ctx: typer.Context,
    principal_id: str,
    fingerprint: Annotated[str, typer.Argument(help="SHA-256 of the certificate's DER (hex).")],
) -> None:
    """Let a client certificate (mTLS) authenticate as the principal."""
    state: CliState = ctx.obj
    service = _service(state)
    with state.audited(
        "certificate.bind", principal_id, fingerprint=bounded_text(fingerprint, 128)
    ):
        binding = service.bind_certificate(principal_id, fingerprint)
    state.output.emit(
        {"principal": principal_id, "fingerprint": binding.fingerprint},
        f"certificate {binding.fingerprint} now authenticates {principal_id}",
    )


@app.command("unbind-cert")
def unbind_cert(ctx: typer.Context, fingerprint: str) -> None:
    """Stop a client certificate from authenticating (effective on the next request)."""
    state: CliState = ctx.obj
    service = _service(state)
    with state.audited("certificate.unbind", f"certificate:{fingerprint[:64]}"):
        service.unbind_certificate(fingerprint)
    state.output.emit({"fingerprint": fingerprint, "bound": False}, "certificate unbound")


# --- API keys -------------------------------------------------------------------------------------


def _key_state(key: dict[str, Any]) -> str:
    if key["revoked_at"]:
        return f"revoked {key['revoked_at']}"
    if key["expires_at"]:
        return f"expires {key['expires_at']}"
    return "no expiry"


def _emit_token(state: CliState, token: str, record: StoredApiKey, verb: str) -> None:
    state.output.emit(
        {**key_dict(record), "token": token},
        f"{verb} API key {record.key_id} for {record.principal_id}; shown once:\n{token}",
    )


@apikeys.command()
def issue(
    ctx: typer.Context,
    principal_id: str,
    expires_in_days: Annotated[
        int | None, typer.Option(min=1, max=MAX_EXPIRY_DAYS, help="Expire after this many days.")
    ] = None,
) -> None:
    """Issue an API key; the token is printed once and only its keyed digest is kept."""
    state: CliState = ctx.obj
    service = _service(state)
    expires_at = (
        None if expires_in_days is None else datetime.now(UTC) + timedelta(days=expires_in_days)
    )
    with state.audited("apikey.issue", principal_id) as audit:
        issued, record = service.issue_api_key(principal_id, expires_at=expires_at)
        audit["key_id"] = record.key_id
    _emit_token(state, issued.token, record, "issued")


@apikeys.command()
def rotate(
    ctx: typer.Context,
    key_id: str,
    grace_minutes: Annotated[
        int, typer.Option(min=0, max=MAX_GRACE_MINUTES, help="How long the old key keeps working.")
    ] = 0,
) -> None:
    """Replace a key: the new token is printed once; the old key ends after the grace period."""
    state: CliState = ctx.obj
    service = _service(state)
    with state.audited("apikey.rotate", f"apikey:{key_id}", grace_minutes=grace_minutes) as audit:
        rotation = service.rotate_api_key(key_id, grace=timedelta(minutes=grace_minutes))
        audit["new_key_id"] = rotation.new_record.key_id
    _emit_token(state, rotation.issued.token, rotation.new_record, "rotated to")


@apikeys.command()
def revoke(ctx: typer.Context, key_id: str) -> None:
    """Revoke a key: refused from the next request on, in every server process."""
    state: CliState = ctx.obj
    service = _service(state)
    with state.audited("apikey.revoke", f"apikey:{key_id}"):
        record = service.revoke_api_key(key_id)
    state.output.emit(key_dict(record), f"revoked API key {key_id}")


@apikeys.command("list")
def list_keys(ctx: typer.Context, principal_id: str) -> None:
    """List a principal's keys (ids and dates, never secrets)."""
    state: CliState = ctx.obj
    keys = [key_dict(k) for k in _service(state).list_api_keys(principal_id)]
    table = Table("key id", "created", "state")
    for key in keys:
        table.add_row(key["key_id"], key["created_at"], _key_state(key))
    state.output.emit(keys, table if keys else "no API keys")
