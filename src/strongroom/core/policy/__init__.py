"""Policy: what an authenticated principal may do.

``rbac`` holds the actions, the static role-to-action table, resources and the one
``authorize(principal, action, resource, context)`` that raises ``ForbiddenError`` (deny by
default); ``conditions`` the request context and the conditions every decision also checks
(disabled principal, credential expiry, source networks, MFA freshness). Pure: the caller passes
the time and the client address. See ``docs/access-control.md`` for the decision procedure.
"""
