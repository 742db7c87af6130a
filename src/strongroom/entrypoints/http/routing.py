"""The router: Starlette's, with a truthful ``Allow`` header on 405.

Starlette answers a request whose path matches but whose method does not with the methods of
the *first* route of that path only; several routes share a path here (``GET`` and ``POST
/v1/principals``, each a ``Route`` of its own), so that header named too few methods. RFC 9110
section 15.5.6 asks for every method the resource supports: this router catches the 405 on its
way out and lists the methods of every route whose path matches. Only the refusal pays for it:
requests that match a route are routed exactly as Starlette does.
"""

from __future__ import annotations

from starlette import routing
from starlette.exceptions import HTTPException
from starlette.types import Receive, Scope, Send

METHOD_NOT_ALLOWED = 405


class Router(routing.Router):
    async def app(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().app(scope, receive, send)
        except HTTPException as exc:
            if exc.status_code != METHOD_NOT_ALLOWED:
                raise
            raise HTTPException(
                METHOD_NOT_ALLOWED, headers={"Allow": self.allowed_methods(scope)}
            ) from None

    def allowed_methods(self, scope: Scope) -> str:
        """Every method some route of the request's path accepts, comma-separated."""
        methods: set[str] = set()
        for route in self.routes:
            match, _ = route.matches(scope)
            if match is not routing.Match.NONE and isinstance(route, routing.Route):
                methods |= route.methods or set()
        return ", ".join(sorted(methods))
