"""Identity: who a request acts as, and the pure rules for the credentials that prove it.

``principal`` holds the ``Principal`` an authenticator produces for every request (the one input
of ``strongroom.core.policy.rbac.authorize``); ``api_keys`` the API-key format, digest and
verification; ``passwords`` the password policy and account lockout. Nothing here does I/O, reads
the clock or draws randomness: stores, clocks and random sources are passed in by the caller.
See ``docs/access-control.md``.
"""
