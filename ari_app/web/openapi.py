"""`GET /api/openapi.json`: the OpenAPI 3.1 document, generated from the route table itself, so
what is documented is what is routed (tests/test_http_openapi.py compares it with the router).
"""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web
from pydantic import BaseModel

from ari_app.web.routing import RouteSpec
from ari_app.web.settings import HttpSettings

_PATH_PARAM = re.compile(r"\{(\w+)(?::[^}]*)?\}")

_SECURITY_SCHEMES = {
    "bearerToken": {"type": "http", "scheme": "bearer"},
    "headerToken": {"type": "apiKey", "in": "header", "name": "X-Api-Token"},
    "basic": {"type": "http", "scheme": "basic"},
    "usernamePassword": {
        "type": "apiKey",
        "in": "query",
        "name": "username",
        "description": "`username` and `password` as query or form fields",
    },
    # OpenAPI has no API-key location "path"; these two say in words where the credential is,
    # so that no tool reads a `{token}` route as open (an empty security list means "none").
    "pathToken": {
        "type": "http",
        "scheme": "PathToken",
        "description": "The client's token is the `{token}` path segment itself",
    },
    "signedLink": {
        "type": "http",
        "scheme": "PathSignature",
        "description": "The `{token}` segment is pbxcrm's signature for this one recording "
        "(`<expires>.<signature>`, as written in recording_url); it opens nothing else",
    },
    "queryToken": {
        "type": "apiKey",
        "in": "query",
        "name": "token",
        "description": "`token` as a query or form field (cal4care DBN)",
    },
}
_METHOD_SCHEMES = {
    "header_token": ["bearerToken", "headerToken"],
    "basic": ["basic"],
    "params": ["usernamePassword"],
    "path_token": ["pathToken"],
    "query_token": ["queryToken"],
    "signed_link": ["signedLink"],
}


# The screen pop's own gate (ari_app/agent/port.py): switched off, no agents configured,
# or a browser outside `[http.agent] allow_from`. Those routes sign people in themselves, so
# they have no route family and no 401/403 from the family rules.
_AGENT_PREFIX = "/agent"
_AGENT_REFUSED = "Screen pop switched off, no agents configured, or not allowed from here"
_REF_TEMPLATE = "#/components/schemas/{model}"


def _schema(model: type[BaseModel], schemas: dict[str, Any], **options: Any) -> dict[str, Any]:
    """The model's JSON schema with its `$defs` moved to `components/schemas`: a `$ref` in an
    OpenAPI document resolves from the document's root, where `#/$defs/...` does not exist."""
    schema = model.model_json_schema(ref_template=_REF_TEMPLATE, **options)
    schemas.update(schema.pop("$defs", {}))
    return schema


def _query_parameters(spec: RouteSpec, schemas: dict[str, Any]) -> list[dict[str, Any]]:
    if spec.query is None:
        return []
    schema = _schema(spec.query, schemas, by_alias=True)
    required = set(schema.get("required", []))
    return [
        {"name": name, "in": "query", "required": name in required, "schema": _absent(prop)}
        for name, prop in schema.get("properties", {}).items()
    ]


def _absent(prop: dict[str, Any]) -> dict[str, Any]:
    """`X | None` of a query model is a parameter left out, never a null value (a query string
    has no null): the schema is X's."""
    options = prop.get("anyOf")
    if isinstance(options, list) and {"type": "null"} in options and len(options) == 2:
        [kept] = [option for option in options if option != {"type": "null"}]
        rest = {k: v for k, v in prop.items() if k not in ("anyOf", "default")}
        return {**kept, **rest}
    return prop


def _operation(spec: RouteSpec, settings: HttpSettings, schemas: dict[str, Any]) -> dict[str, Any]:
    parameters = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in _PATH_PARAM.findall(spec.path)
    ]
    parameters += _query_parameters(spec, schemas)
    responses: dict[str, Any] = {
        str(code): {"description": text} for code, text in sorted(spec.responses.items())
    }
    responses.setdefault("200", {"description": "OK"})
    first = min(responses)
    responses[first]["content"] = {ct: {} for ct in spec.content_types}
    operation: dict[str, Any] = {
        "summary": spec.summary,
        "operationId": f"{spec.method.lower()}_{re.sub(r'[^a-z0-9]+', '_', spec.path.lower())}",
        "tags": list(spec.tags),
        "parameters": parameters,
        "responses": responses,
    }
    if spec.body is not None:
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": _schema(spec.body, schemas)}},
        }
    if spec.family is None:
        operation["security"] = []
        if spec.path.startswith(_AGENT_PREFIX):
            responses.setdefault("403", {"description": _AGENT_REFUSED})
    else:
        responses.setdefault("401", {"description": "No or wrong credentials"})
        responses.setdefault("403", {"description": "Not allowed from this address or client"})
        responses.setdefault(
            "429",
            {"description": "Too many wrong credentials from this address; see Retry-After"},
        )
        has_slot = "{token}" in spec.path
        methods = [
            method
            for method in settings.routes[spec.family].methods
            if has_slot or method not in ("path_token", "signed_link")
        ]
        operation["security"] = [
            {scheme: []} for method in methods for scheme in _METHOD_SCHEMES[method]
        ]
    return operation


def build_document(routes: list[RouteSpec], settings: HttpSettings) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    schemas: dict[str, Any] = {}
    for spec in routes:
        paths.setdefault(spec.path, {})[spec.method.lower()] = _operation(spec, settings, schemas)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "pbxcrm HTTP API",
            "version": "1",
            "description": "Click-to-call, call history and recordings for CRMs.",
        },
        "paths": paths,
        "components": {"securitySchemes": _SECURITY_SCHEMES, "schemas": schemas},
    }


DOCUMENT_KEY = web.AppKey("pbxcrm_openapi", dict)


async def openapi_json(request: web.Request) -> web.Response:
    return web.json_response(request.app[DOCUMENT_KEY])


def document_for(app: web.Application) -> dict[str, Any]:
    return app[DOCUMENT_KEY]


ROUTES = [
    RouteSpec(
        "GET",
        "/api/openapi.json",
        openapi_json,
        "openapi",
        "This document",
        tags=("meta",),
    ),
]
