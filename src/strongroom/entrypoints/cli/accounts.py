"""The first administrator account, made by ``strongroom init`` (and the quickstart).

A fresh instance needs one human who can manage principals and credentials: ``user:admin`` (or
``--admin-user``) with the ``admin`` role, a password, and a TOTP enrolment, since every
credential and principal change needs a fresh MFA step-up. The password comes from
``--admin-password-file`` or is generated (24 characters of URL-safe randomness) and shown once;
the TOTP secret and its ``otpauth://`` URI are shown once too, for an authenticator app.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from strongroom import bootstrap
from strongroom.config import read_secret_file

if TYPE_CHECKING:
    from strongroom.entrypoints.cli.state import CliState

GENERATED_PASSWORD_BYTES = 18


@dataclass(frozen=True)
class AdminAccount:
    user_id: str
    totp_secret: str = field(repr=False)
    totp_uri: str = field(repr=False)
    generated_password: str | None = field(default=None, repr=False)


def create_admin_account(
    state: CliState, user_name: str, password_file: Path | None
) -> AdminAccount:
    """Create the administrator (audited as ``principal.create``) and enrol its TOTP."""
    settings = state.settings
    generated = None
    if password_file is not None:
        password = read_secret_file(password_file)
    else:
        password = generated = secrets.token_urlsafe(GENERATED_PASSWORD_BYTES)
    service = bootstrap.build_identity_service(settings, bootstrap.server_keys(settings))
    user_id = user_name if user_name.startswith("user:") else f"user:{user_name}"
    with state.audited("principal.create", user_id, role="admin"):
        secret, uri = bootstrap.create_admin(service, user_id, password)
    return AdminAccount(user_id, secret, uri, generated)
