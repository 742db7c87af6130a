"""Request and response bodies of ``/v1/limits`` (see ``routes.limits_admin``).

Same rules as ``schemas``: request models forbid unknown fields and refuse NaN and infinities.
An override names only what it changes; a field left out (or null) keeps the default.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, Field

from strongroom.entrypoints.http.schemas import (
    NetworkText,
    RequestModel,
    ResponseModel,
)


class RateIn(RequestModel):
    per_second: Annotated[float, Field(gt=0, le=1_000_000)]
    burst: Annotated[int, Field(ge=1, le=1_000_000)]


class QuotaIn(RequestModel):
    limit: Annotated[int, Field(ge=1, le=10**12)]
    period: Literal["day", "month"]


def _unique(values: list[str]) -> list[str]:
    if len(set(values)) != len(values):
        raise ValueError("networks must be unique")
    return values


class GuardPolicyIn(RequestModel):
    """The override of one model or principal (see ``docs/request-guard.md``)."""

    rate: RateIn | None = None
    model_rate: RateIn | None = None
    quota: QuotaIn | None = None
    max_concurrent: Annotated[int, Field(ge=1, le=100_000)] | None = None
    deny_networks: Annotated[list[NetworkText], Field(max_length=256), AfterValidator(_unique)] = (
        Field(default_factory=list)
    )


class RateOut(ResponseModel):
    per_second: float
    burst: int


class QuotaOut(ResponseModel):
    limit: int
    period: Literal["day", "month"]


class GuardPolicyOut(ResponseModel):
    rate: RateOut | None = None
    model_rate: RateOut | None = None
    quota: QuotaOut | None = None
    max_concurrent: int | None = None
    deny_networks: list[str] = Field(default_factory=list)


class GuardOverrideOut(ResponseModel):
    kind: Literal["principal", "model"]
    subject: str
    policy: GuardPolicyOut
    updated_at: datetime
    updated_by: str


class LimitDefaultsOut(ResponseModel):
    principal: RateOut | None
    model: RateOut | None
    principal_model: RateOut | None
    address: RateOut | None
    quota: QuotaOut | None
    max_concurrent_per_principal: int
    max_queue_per_model: int
    shared: bool
    """True when counters are shared by every worker (Redis); False: per process."""


class LimitsOut(ResponseModel):
    enabled: bool
    """False with ``unsafe_no_request_guard``."""
    defaults: LimitDefaultsOut | None
    overrides: list[GuardOverrideOut]
