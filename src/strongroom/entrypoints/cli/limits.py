"""``strongroom limits ...``: the request guard's overrides per principal and per model.

``show`` prints the defaults (from settings) and every stored override; ``set`` stores an
override (each option given replaces that field, the others keep the default); ``clear``
removes one. Changes are audited (``principal.limits`` / ``model.limits``) and reach running
servers within ``model_refresh_s``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer

from strongroom import bootstrap
from strongroom.bootstrap import guard as bootstrap_guard
from strongroom.core.policy.limits import Quota, QuotaPeriod, Rate
from strongroom.core.policy.overrides import GuardOverride, GuardPolicy, SubjectKind
from strongroom.entrypoints.cli.state import cli_actor
from strongroom.errors import InvalidInputError

if TYPE_CHECKING:
    from strongroom.entrypoints.cli.state import CliState

app = typer.Typer(help="Rate limits, quotas and load-shedding bounds.", no_args_is_help=True)

RateText = Annotated[
    str | None, typer.Option(help="PER_SECOND/BURST, e.g. 50/100: all of the subject's requests.")
]


def _subject(principal: str | None, model: str | None) -> tuple[SubjectKind, str]:
    if (principal is None) == (model is None):
        raise InvalidInputError("give exactly one of --principal or --model")
    if principal is not None:
        return SubjectKind.PRINCIPAL, principal
    return SubjectKind.MODEL, str(model)


def parse_rate(text: str | None, what: str) -> Rate | None:
    """``50/100`` -> 50 per second, bursts of 100."""
    if text is None:
        return None
    rate, sep, burst = text.partition("/")
    problem = InvalidInputError(f"--{what} must be PER_SECOND/BURST", hint="for example 50/100")
    if not sep or not burst.isdigit():
        raise problem
    try:
        per_second = float(rate)
    except ValueError:
        raise problem from None
    return Rate(per_second=per_second, burst=int(burst))


def parse_quota(text: str | None) -> Quota | None:
    """``10000/day`` or ``250000/month``."""
    if text is None:
        return None
    limit, sep, period = text.partition("/")
    if not sep or not limit.isdigit() or period not in {p.value for p in QuotaPeriod}:
        raise InvalidInputError("--quota must be LIMIT/day or LIMIT/month")
    return Quota(limit=int(limit), period=QuotaPeriod(period))


def override_dict(override: GuardOverride) -> dict[str, Any]:
    return {
        "kind": override.kind.value,
        "subject": override.subject,
        "policy": override.policy.to_dict(),
        "updated_at": override.updated_at.isoformat(),
        "updated_by": override.updated_by,
    }


@app.command()
def show(ctx: typer.Context) -> None:
    """The defaults from settings and every stored override."""
    state: CliState = ctx.obj
    store = bootstrap_guard.build_guard_override_store(state.settings)
    overrides = [override_dict(o) for o in store.list_overrides()]
    defaults = state.settings.rate_limits.model_dump(mode="json")
    data = {"defaults": defaults, "overrides": overrides}
    lines = [f"default {name}: {value}" for name, value in defaults.items()]
    lines += [f"{o['kind']} {o['subject']}: {o['policy']}" for o in overrides] or ["no overrides"]
    state.output.emit(data, "\n".join(lines))


@app.command("set")
def set_(
    ctx: typer.Context,
    principal: Annotated[str | None, typer.Option(help="user:<name> or svc:<name>.")] = None,
    model: Annotated[str | None, typer.Option(help="A model name.")] = None,
    rate: RateText = None,
    model_rate: Annotated[
        str | None, typer.Option(help="PER_SECOND/BURST per principal on one model.")
    ] = None,
    quota: Annotated[str | None, typer.Option(help="LIMIT/day or LIMIT/month.")] = None,
    max_concurrent: Annotated[
        int | None, typer.Option(help="Requests in flight per worker (principal or model).")
    ] = None,
    deny_network: Annotated[
        list[str] | None, typer.Option(help="A CIDR the principal may never call from (repeat).")
    ] = None,
) -> None:
    """Store an override for one principal or one model (replaces its previous override)."""
    state: CliState = ctx.obj
    kind, subject = _subject(principal, model)
    if kind is SubjectKind.MODEL and deny_network:
        raise InvalidInputError("--deny-network applies to principals, not models")
    policy = GuardPolicy(
        rate=parse_rate(rate, "rate"),
        model_rate=parse_rate(model_rate, "model-rate"),
        quota=parse_quota(quota),
        max_concurrent=max_concurrent,
        deny_networks=tuple(deny_network or ()),
    )
    override = GuardOverride(kind, subject, policy, datetime.now(UTC), cli_actor())
    _check_exists(state, kind, subject)
    store = bootstrap_guard.build_guard_override_store(state.settings)
    changed = ",".join(sorted(policy.to_dict())) or "nothing"
    with state.audited(f"{kind.value}.limits", f"{kind.value}:{subject}", set=changed):
        store.put_override(override)
    state.output.emit(override_dict(override), f"limits of {kind.value} {subject} set")


@app.command()
def clear(
    ctx: typer.Context,
    principal: Annotated[str | None, typer.Option(help="user:<name> or svc:<name>.")] = None,
    model: Annotated[str | None, typer.Option(help="A model name.")] = None,
) -> None:
    """Remove the override of one principal or model: the defaults apply again."""
    state: CliState = ctx.obj
    kind, subject = _subject(principal, model)
    store = bootstrap_guard.build_guard_override_store(state.settings)
    with state.audited(f"{kind.value}.limits", f"{kind.value}:{subject}", cleared=True):
        store.delete_override(kind, subject)
    state.output.emit({"kind": kind.value, "subject": subject}, "override removed")


def _check_exists(state: CliState, kind: SubjectKind, subject: str) -> None:
    if kind is SubjectKind.PRINCIPAL:
        keys = bootstrap.server_keys(state.settings)
        bootstrap.build_identity_service(state.settings, keys).get_principal(subject)
    elif not state.container.registry.list_versions(subject):
        raise InvalidInputError(f"model {subject!r} has no versions")
