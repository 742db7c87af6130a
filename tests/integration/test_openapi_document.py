"""The OpenAPI document: complete (every route, nothing else), structurally valid, served."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from admin_harness import Actors, LiveApp, bearer, live_app, make_instance
from starlette.routing import Route, Router

from conftest import SignerKeys
from strongroom.core.identity.principal import Role
from strongroom.entrypoints.http.operations import OPERATIONS

HTTP_METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}
ALWAYS = {"400", "405", "408", "413", "500", "503"}


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, signer: SignerKeys) -> Iterator[LiveApp]:
    with live_app(make_instance(tmp_path_factory.mktemp("openapi"), signer)) as app:
        yield app


@pytest.fixture(scope="module")
def document(live: LiveApp) -> dict[str, Any]:
    key = Actors(live).service("reader", Role.PREDICTOR)
    response = live.get("/v1/openapi.json", headers=bearer(key))
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body: dict[str, Any] = response.json()
    return body


def _router_operations(live: LiveApp) -> set[tuple[str, str]]:
    router = live.app._app
    assert isinstance(router, Router)
    found = set()
    for route in router.routes:
        assert isinstance(route, Route), f"unexpected route type {route!r}"
        for method in route.methods or ():
            if method != "HEAD":  # Starlette adds HEAD to every GET route
                found.add((method, route.path))
    return found


def _documented(document: dict[str, Any]) -> set[tuple[str, str]]:
    return {
        (method.upper(), path)
        for path, item in document["paths"].items()
        for method in item
        if method in HTTP_METHODS
    }


def test_every_route_is_documented_and_nothing_else(
    live: LiveApp, document: dict[str, Any]
) -> None:
    routes = _router_operations(live)
    table = {(op.method, op.path) for op in OPERATIONS}
    assert routes - table == set(), "routes missing from operations.OPERATIONS"
    assert table - routes == set(), "documented operations that do not exist"
    assert _documented(document) == routes
    assert len(OPERATIONS) == len(table)


def test_the_document_needs_a_credential(live: LiveApp) -> None:
    assert live.get("/v1/openapi.json").status_code == 401


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item)


def _resolve(document: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = document
    for part in ref[2:].split("/"):
        assert isinstance(node, dict) and part in node, f"unresolved {ref}"
        node = node[part]
    return node


def test_the_document_is_structurally_valid(document: dict[str, Any]) -> None:
    assert document["openapi"] == "3.1.0"
    assert {"title", "version"} <= set(document["info"])
    assert document["servers"][0]["url"].startswith("https://")
    for ref in set(_refs(document)):
        _resolve(document, ref)
    components = document["components"]
    assert "Problem" in components["schemas"]
    ids = [op["operationId"] for _, _, op in _operations(document)]
    assert len(ids) == len(set(ids))
    tags = {t["name"] for t in document["tags"]}
    schemes = set(components["securitySchemes"])
    for path, method, op in _operations(document):
        where = f"{method.upper()} {path}"
        assert op["summary"], where
        assert set(op["tags"]) <= tags, where
        for requirement in op["security"]:
            assert set(requirement) <= schemes, where
        _check_parameters(path, op, where)
        _check_responses(document, op, where)


def _operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in document["paths"].items():
        for method, op in item.items():
            yield path, method, op


def _check_parameters(path: str, op: dict[str, Any], where: str) -> None:
    in_path = set(re.findall(r"\{([^}]+)\}", path))
    declared = {p["name"] for p in op.get("parameters", ()) if p["in"] == "path"}
    assert in_path == declared, where
    for parameter in op.get("parameters", ()):
        assert parameter["in"] in {"path", "query"}, where
        assert "schema" in parameter, where
        if parameter["in"] == "path":
            assert parameter["required"] is True, where
            re.compile(parameter["schema"]["pattern"])


def _check_responses(document: dict[str, Any], op: dict[str, Any], where: str) -> None:
    statuses = set(op["responses"])
    assert all(re.fullmatch(r"[1-5][0-9][0-9]", s) for s in statuses), where
    assert any(s.startswith("2") for s in statuses), where
    assert statuses >= ALWAYS, where
    if op["security"]:
        assert {"401", "403"} <= statuses, where
    body = op.get("requestBody")
    if body is not None:
        assert body["content"], where
        assert "415" in statuses, where  # every body's media type is checked
    for status, response in op["responses"].items():
        resolved = _resolve(document, response["$ref"]) if "$ref" in response else response
        assert resolved["description"], where
        if status.startswith(("4", "5")):
            content = resolved["content"]
            assert "application/problem+json" in content, f"{where} {status}"
            schema = content["application/problem+json"]["schema"]
            assert schema == {"$ref": "#/components/schemas/Problem"}, f"{where} {status}"
        elif status != "204":
            assert resolved["content"], f"{where} {status}"


def test_request_models_forbid_unknown_members(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    for _, _, op in _operations(document):
        content = op.get("requestBody", {}).get("content", {})
        json_body = content.get("application/json")
        if json_body is None:
            continue
        target = _resolve(document, json_body["schema"]["$ref"])
        assert target.get("additionalProperties") is False, op["operationId"]
    assert schemas["Problem"]["required"]
