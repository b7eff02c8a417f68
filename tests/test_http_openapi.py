"""The OpenAPI document describes exactly what the router serves."""

from __future__ import annotations

import re

from ari_app.app.http_server import build_http_app
from ari_app.web.deps import HttpDeps
from tests.test_http_support import bearer, make_settings, running


async def test_the_openapi_document_lists_exactly_the_routed_methods_and_paths(tmp_path):
    deps = HttpDeps(settings=make_settings(tmp_path))
    app = build_http_app(deps)
    routed = {
        (route.method.lower(), route.resource.canonical)
        for route in app.router.routes()
        if route.method != "HEAD"
    }
    async with running(deps) as server:
        async with server.session.get(server.url("/api/openapi.json"), headers=bearer()) as resp:
            assert resp.status == 200
            document = await resp.json()
    documented = {(method, path) for path, item in document["paths"].items() for method in item}
    assert documented == routed
    for path, item in document["paths"].items():
        names = set(re.findall(r"\{(\w+)\}", path))
        for method, operation in item.items():
            in_path = {p["name"] for p in operation["parameters"] if p["in"] == "path"}
            assert in_path == names, (method, path)
            if path == "/healthz":
                assert operation["security"] == []
            elif path.startswith("/agent"):
                # The screen pop signs people in per extension (its own session cookie,
                # ari_app/agent/port.py), not CRM clients per route family.
                assert operation["security"] == []
            else:
                # An empty list would say "no credentials needed": never for a `{token}` route.
                assert operation["security"], (method, path)
                assert "401" in operation["responses"]


async def test_the_documented_request_models_name_their_fields(tmp_path):
    document = build_http_app(HttpDeps(settings=make_settings(tmp_path)))
    from ari_app.web.openapi import document_for

    spec = document_for(document)
    body = spec["paths"]["/api/v1/originate"]["post"]["requestBody"]
    schema = body["content"]["application/json"]["schema"]
    assert set(schema["required"]) == {"extension", "number"}
    calls = spec["paths"]["/api/v1/calls"]["get"]["parameters"]
    assert {p["name"] for p in calls} >= {"number", "from", "to", "limit", "cursor", "format"}
    makecall = spec["paths"]["/webapi/{token}/makecall"]["get"]["parameters"]
    assert {p["name"] for p in makecall} == {"token", "first", "second"}


async def test_token_in_path_routes_name_the_path_token_as_their_security(tmp_path):
    spec = build_http_app(HttpDeps(settings=make_settings(tmp_path)))
    from ari_app.web.openapi import document_for

    paths = document_for(spec)["paths"]
    assert paths["/webapi/{token}/makecall"]["get"]["security"] == [{"pathToken": []}]
    recording = paths["/{token}/recording/{file}"]["get"]["security"]
    assert {"signedLink": []} in recording
    assert {"pathToken": []} not in recording  # a client token there is opt-in
    schemes = document_for(spec)["components"]["securitySchemes"]
    assert {"pathToken", "signedLink"} <= set(schemes)
    # Routes without a `{token}` do not claim a path credential.
    assert {"signedLink": []} not in paths["/api/v1/recordings/{file}"]["get"]["security"]


def _refs(node: object) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [ref for value in node.values() for ref in _refs(value)]
    if isinstance(node, list):
        return [ref for value in node for ref in _refs(value)]
    return []


async def test_every_reference_in_the_document_resolves_from_its_root(tmp_path):
    from ari_app.web.openapi import document_for

    document = document_for(build_http_app(HttpDeps(settings=make_settings(tmp_path))))
    refs = _refs(document)
    assert "#/components/schemas/CallType" in refs  # the 3CX journal's call type
    for ref in refs:
        assert ref.startswith("#/"), ref
        node: object = document
        for part in ref[2:].split("/"):
            assert isinstance(node, dict) and part in node, f"{ref} does not resolve"
            node = node[part]


async def test_a_method_a_route_does_not_have_gets_405_with_the_allowed_ones(tmp_path):
    deps = HttpDeps(settings=make_settings(tmp_path))
    async with running(deps) as server:
        for method, path, allowed in [
            ("TRACE", "/healthz", {"GET"}),
            ("DELETE", "/api/v1/originate", {"POST"}),
            ("PUT", "/3cx/query", {"GET", "POST"}),
        ]:
            async with server.session.request(method, server.url(path), headers=bearer()) as resp:
                assert resp.status == 405, (method, path)
                assert set(resp.headers["Allow"].split(",")) == allowed, (method, path)
                assert (await resp.json()) == {"error": "method not allowed"}


async def test_every_status_the_agent_routes_answer_when_switched_off_is_documented(tmp_path):
    from ari_app.web.openapi import document_for

    document = document_for(build_http_app(HttpDeps(settings=make_settings(tmp_path))))
    for path, item in document["paths"].items():
        if path.startswith("/agent"):
            for method, operation in item.items():
                assert "403" in operation["responses"], (method, path)
