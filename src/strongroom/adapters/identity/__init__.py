"""Bearer-token identity: verify JWTs of configured issuers, and issue Strongroom's own.

Modules: ``jwks`` (strict JWS parsing, JWK Set key policy, ``verify_jws``,
``https_jwks_fetcher``), ``jwt_verifier`` (``JwtVerifier``: issuer choice, keys, signature,
claims, cache) and ``token_issuer`` (``TokenIssuer``: client-credentials access tokens). The
policy they follow is ``strongroom.core.identity.tokens``.

How the server wires them (one ``JwtVerifier`` per process, built at startup):

1. Settings per external issuer become ``IssuerConfig(issuer=..., audiences=(<this API's
   resource URI>,), algorithms=("RS256",) | ("ES256",) | ("EdDSA",) ..., jwks_url=...,
   token_types=..., leeway=..., subject_kind=..., subject_prefix="corp:", role_claim=(...),
   role_map={...})``. ``audiences`` names this resource server, never a client id. Every issuer
   but one needs its own ``subject_prefix``. Use ``SubjectKind.SERVICE`` for an issuer that only
   issues client-credentials tokens whose ``client_id`` claim is missing or not equal to ``sub``.
2. Strongroom's own issuer: ``TokenIssuer(issuer=<public base URL>, audience=<same resource
   URI>, private_key=<32-byte Ed25519 seed from the key provider>, clock=..., random_bytes=
   os.urandom, ttl=<1-60 min, default 5>)``; add ``token_issuer.issuer_config()`` to the list
   (after a key rotation: ``issuer_config(also_trust=old.jwks()["keys"])`` for one ttl). Its
   prefix is ``""``, so external issuers get prefixes.
3. ``JwtVerifier(issuers, fetch_jwks=https_jwks_fetcher(allowed_urls=[each jwks_url],
   allow_http=<any issuer with unsafe_http_jwks>), clock=..., jwks_ttl=..., cache_size=...)``,
   then ``prefetch()``: log the issuers it returns (their keys load on first use instead).
4. Per request, for ``Authorization: Bearer <token>`` that is not an API key (API keys start with
   their prefix and ``_``; a JWT has two dots): ``verifier.cached(token)`` on the event loop;
   when it returns None, ``verifier.verify(token)`` in a worker thread (it may fetch keys). Any
   ``AuthenticationError`` is a 401 with ``WWW-Authenticate: Bearer error="invalid_token"`` and
   nothing else; log ``tokens.rejection_reason(err)`` and put it in the audit record.
5. ``VerifiedToken.principal`` carries the id, kind, credential (kind ``jwt``, id = ``jti``,
   ``expires_at`` = ``exp``), claim roles and ``mfa_at``. Complete it from the principal store
   on every request (``dataclasses.replace``): ``disabled``, ``networks`` and ``grants`` always
   come from the store; roles come from the token when the issuer has a ``role_claim``, else
   from the store (a principal unknown to the store then has no roles and can do nothing).
   Then ``authorize(principal, action, resource, context)`` as for any other credential.
6. The token endpoint (``POST /v1/oauth/token``, ``grant_type=client_credentials``) first
   authenticates the service with its API key or mTLS certificate, reads its roles from the
   store, and answers ``{"access_token": token_issuer.issue(client_id, roles, scopes),
   "token_type": "Bearer", "expires_in": int(token_issuer.ttl.total_seconds())}`` with
   ``Cache-Control: no-store``. ``jwks()`` may be served at ``/.well-known/jwks.json``.
7. ``verifier.stats()`` gives counters for metrics; ``clear_cache()`` after a key compromise.
"""
