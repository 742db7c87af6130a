"""Rate counters: implementations of ``core.policy.limits.RateCounter`` (in-process and Redis)."""
