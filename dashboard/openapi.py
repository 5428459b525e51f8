"""The OpenAPI 3.1 document, derived from the routes themselves and the pydantic request models.

Routes declare their body and answers with @documented; paths, parameters and summaries come
from Flask's URL map and the views' docstrings, so the document can't drift from the code.
"""
from __future__ import annotations

import re

from flask import Flask
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

API_TITLE = "tlbench API"
API_VERSION = "1"
PATH_PARAMETER = re.compile(r"<(?:(?P<converter>[^:<>]+):)?(?P<name>[^<>]+)>")
CONVERTER_TYPES = {"int": "integer", "float": "number"}
ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {"type": "string", "description": "What is wrong, naming the field"},
                   "field": {"type": ["string", "null"], "description": "The field at fault, if one"}},
}


def documented(body: type[BaseModel] | None = None, multipart_file: bool | str = False,
               responses: dict | None = None, public: bool = False, query: dict[str, str] | None = None):
    """Attach what the OpenAPI document should say about a view's body and answers.

    `multipart_file`: the view takes a multipart field `file`; a string names its media type (True: a zip).
    `public`: the route needs no token even when the server has one (the health check).
    `query`: optional query parameters, each a whole number: name -> description (from 0 to 999), or
    name -> (description, minimum, maximum).
    """
    def attach(view):
        view.openapi = {"body": body, "multipart_file": multipart_file, "responses": responses or {200: "OK"},
                        "public": public, "query": query or {}}
        return view
    return attach


def is_public(view) -> bool:
    """Whether a view was declared `public` (documented(public=True)): it needs no token, even on a server with one."""
    return bool(getattr(view, "openapi", {}).get("public"))


def build_openapi(app: Flask, prefix: str = "/api/v1") -> dict:
    """Describe every route under `prefix`."""
    paths: dict[str, dict] = {}
    models: set[type[BaseModel]] = set()
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        if not rule.rule.startswith(prefix):
            continue
        view = app.view_functions[rule.endpoint]
        declared = getattr(view, "openapi", {"body": None, "multipart_file": False, "responses": {200: "OK"},
                                             "public": False, "query": {}})
        if declared["body"]:
            models.add(declared["body"])
        path = PATH_PARAMETER.sub(r"{\g<name>}", rule.rule)
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            paths.setdefault(path, {})[method.lower()] = _operation(rule, view, declared)
    return {
        "openapi": "3.1.0",
        "info": {"title": API_TITLE, "version": API_VERSION},
        "paths": paths,
        # The token is asked for only when the server runs with TLBENCH_TOKEN: {} makes it optional.
        "security": [{"bearer": []}, {}],
        "components": {"schemas": {**_schemas(models), "Error": ERROR_SCHEMA}, "securitySchemes": {"bearer": {
            "type": "http", "scheme": "bearer",
            "description": "TLBENCH_TOKEN, needed when the server was started with it"}}},
    }


def _operation(rule, view, declared: dict) -> dict:
    """One operation object: summary, path parameters, request body, answers."""
    operation = {
        "operationId": rule.endpoint.split(".")[-1],
        "summary": (view.__doc__ or "").strip().splitlines()[0] if view.__doc__ else rule.endpoint,
        "parameters": [*(_path_parameter(match, rule.map.converters) for match in PATH_PARAMETER.finditer(rule.rule)),
                       *(_query_parameter(name, described) for name, described in declared["query"].items())],
        "responses": _responses(declared["responses"]),
    }
    if declared["public"]:
        operation["security"] = []
    content = _request_content(declared)
    if content:
        operation["requestBody"] = {"required": True, "content": content}
    return operation


def _query_parameter(name: str, described: str | tuple[str, int, int]) -> dict:
    """An optional whole-number query parameter: its description and range (0 to 999 unless given)."""
    text, minimum, maximum = (described, 0, 999) if isinstance(described, str) else described
    return {"name": name, "in": "query", "required": False, "description": text,
            "schema": {"type": "integer", "minimum": minimum, "maximum": maximum}}


def _path_parameter(match: re.Match, converters: dict) -> dict:
    """A path parameter with what its URL converter enforces: its own `openapi_schema`, or a plain type."""
    name = (match["converter"] or "default").split("(")[0]
    schema = getattr(converters.get(name), "openapi_schema", None) or {"type": CONVERTER_TYPES.get(name, "string")}
    return {"name": match["name"], "in": "path", "required": True, "schema": dict(schema)}


def _request_content(declared: dict) -> dict:
    """The media types a view accepts."""
    content = {}
    if declared["body"]:
        content["application/json"] = {"schema": {"$ref": f"#/components/schemas/{declared['body'].__name__}"}}
    if declared["multipart_file"]:
        media_type = "application/zip" if declared["multipart_file"] is True else declared["multipart_file"]
        content["multipart/form-data"] = {"schema": {
            "type": "object", "required": ["file"],
            "properties": {"file": {"type": "string", "contentMediaType": media_type},
                           "name": {"type": "string"}}}}
    return content


def _responses(declared: dict[int, str]) -> dict:
    """Declared answers, plus the JSON error every route may give."""
    responses = {str(status): {"description": text} for status, text in declared.items()}
    for status, response in responses.items():
        if int(status) >= 400:
            response["content"] = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    responses.setdefault("4XX", {"description": "Refused: the error names the field and the problem",
                                 "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}})
    return responses


def _schemas(models: set[type[BaseModel]]) -> dict:
    """JSON Schemas of the request models (and what they reference), for components."""
    if not models:
        return {}
    ordered = sorted(models, key=lambda model: model.__name__)
    _, top = models_json_schema([(model, "validation") for model in ordered],
                                ref_template="#/components/schemas/{model}")
    return top.get("$defs", {})
