"""The request guard's parts: rate counters, overrides, network rules, from settings.

Rate counters come from a closed mapping of URL schemes: empty for this process's memory,
``redis://`` or ``rediss://`` for Redis (the ``redis`` extra).
"""

from __future__ import annotations

import time
from typing import Final

from strongroom.adapters.ratelimit.memory import MemoryRateCounter
from strongroom.adapters.storage.guard_sql import SqlGuardOverrideStore
from strongroom.bootstrap import SQL_SCHEMES, url_scheme
from strongroom.config import LimitSettings, QuotaSettings, RateSettings, Settings
from strongroom.core.policy.forwarded import ClientResolver
from strongroom.core.policy.limits import Quota, QuotaPeriod, Rate, RateCounter
from strongroom.core.policy.network import NetworkRules, parse_networks
from strongroom.errors import ConfigurationError, InvalidInputError, MissingExtraError
from strongroom.services.request_limits import LimitDefaults, OutagePolicy, RequestLimits

REDIS_SCHEMES: Final = frozenset({"redis", "rediss"})


def build_guard_override_store(settings: Settings) -> SqlGuardOverrideStore:
    """Per-model and per-principal guard overrides, in the metadata database so that every
    worker and replica applies the same ones (table from migration 0004, which ``initialise``
    and every ``migrate()`` run). The concrete store, so that its owner can ``close`` it."""
    if url_scheme(settings.metadata_url) not in SQL_SCHEMES:
        raise ConfigurationError(
            "unsupported metadata_url scheme",
            hint="use sqlite:///path/registry.db or postgresql://user@host/db",
        )
    return SqlGuardOverrideStore(settings.metadata_url)


def build_rate_counter(settings: Settings) -> RateCounter:
    url = settings.rate_limit_url
    if not url:
        return MemoryRateCounter()
    if url_scheme(url) not in REDIS_SCHEMES:
        raise ConfigurationError("rate_limit_url must be empty, redis://... or rediss://...")
    try:
        from strongroom.adapters.ratelimit.redis import RedisRateCounter  # noqa: PLC0415
    except ImportError as exc:
        raise MissingExtraError("a Redis rate counter", "redis") from exc
    return RedisRateCounter(
        url, prefix=settings.rate_limit_prefix, timeout_s=settings.rate_limit_timeout_s
    )


def _rate(value: RateSettings | None) -> Rate | None:
    return None if value is None else Rate(per_second=value.per_second, burst=value.burst)


def _quota(value: QuotaSettings | None) -> Quota | None:
    return None if value is None else Quota(limit=value.limit, period=QuotaPeriod(value.period))


def limit_defaults(settings: Settings) -> LimitDefaults:
    limits: LimitSettings = settings.rate_limits
    return LimitDefaults(
        principal=_rate(limits.principal),
        model=_rate(limits.model),
        principal_model=_rate(limits.principal_model),
        address=_rate(limits.address),
        quota=_quota(limits.quota),
        max_concurrent_per_principal=settings.max_concurrent_per_principal,
        max_queue_per_model=settings.max_queue_per_model,
    )


def build_network(settings: Settings) -> tuple[ClientResolver, NetworkRules | None]:
    """The client-address resolver (trusted proxies) and the global network rules."""
    try:
        proxies = parse_networks(settings.trusted_proxies)
        rules = NetworkRules(
            allow=parse_networks(settings.network_allow),
            deny=parse_networks(settings.network_deny),
        )
    except InvalidInputError as exc:
        raise ConfigurationError(f"invalid network settings: {exc}") from None
    return ClientResolver(trusted_proxies=proxies), rules if rules.applies else None


def now_us() -> int:
    return time.time_ns() // 1000


def build_request_limits(settings: Settings) -> RequestLimits | None:
    """The limits every request passes, or None with ``unsafe_no_request_guard``."""
    if settings.unsafe_no_request_guard:
        return None
    return RequestLimits(
        counter=build_rate_counter(settings),
        local=MemoryRateCounter(),
        defaults=limit_defaults(settings),
        overrides=build_guard_override_store(settings),
        now_us=now_us,
        inference_outage=OutagePolicy(settings.rate_limit_outage_inference),
    )
