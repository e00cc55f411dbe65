"""Every request body and response in the served spec carries an example that fits its schema."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from jsonschema import Draft4Validator

from moncreneau.app import create_app
from tests.conftest import make_settings

METHODS = ("get", "put", "post", "patch", "delete")


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FlaskClient]:
    """The spec and the docs page never touch the database: one SQLite app is enough."""
    path: Path = tmp_path_factory.mktemp("spec") / "spec.db"
    app = create_app(make_settings(f"sqlite:///{path}"))
    yield app.test_client()
    app.extensions["moncreneau"].sessions.kw["bind"].dispose()


@pytest.fixture(scope="module")
def spec(client: FlaskClient) -> dict[str, Any]:
    response = client.get("/api/v1/openapi.json")
    assert response.status_code == 200
    served: dict[str, Any] = response.json
    return served


def resolve(spec: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    """Follow `$ref`s within the spec until a node without one."""
    while "$ref" in node:
        section, kind, name = node["$ref"].removeprefix("#/").split("/")
        node = spec[section][kind][name]
    return node


def operations(spec: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for path, item in spec["paths"].items():
        if not path.startswith("/api/v1/"):
            continue
        for method in METHODS:
            if method in item:
                yield f"{method.upper()} {path}", item[method]


def bodies(spec: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(operation, `request` or the status code, media type object) for every body."""
    for name, operation in operations(spec):
        if "requestBody" in operation:
            for media in resolve(spec, operation["requestBody"])["content"].values():
                yield name, "request", media
        for status, response in operation["responses"].items():
            for media in resolve(spec, response).get("content", {}).values():
                yield name, status, media


def examples_of(spec: dict[str, Any], media: dict[str, Any]) -> list[Any]:
    """The examples of a media type: its own, else its schema's (through `$ref`s)."""
    if "example" in media:
        return [media["example"]]
    if "examples" in media:
        return [resolve(spec, example)["value"] for example in media["examples"].values()]
    schema = resolve(spec, media.get("schema", {}))
    return [schema["example"]] if "example" in schema else []


def json_schema(spec: dict[str, Any], node: Any) -> Any:
    """An OpenAPI 3.0 schema as plain JSON Schema: `$ref`s inlined, `nullable` as a type."""
    if isinstance(node, list):
        return [json_schema(spec, item) for item in node]
    if not isinstance(node, dict):
        return node
    node = resolve(spec, node)
    converted = {key: json_schema(spec, value) for key, value in node.items()}
    if converted.pop("nullable", False):
        if "type" in converted:
            converted["type"] = [converted["type"], "null"]
        if "enum" in converted:
            converted["enum"] = [*converted["enum"], None]
    return converted


def test_every_request_body_and_response_with_content_has_an_example(
    spec: dict[str, Any],
) -> None:
    missing = [
        f"{name} {where}" for name, where, media in bodies(spec) if not examples_of(spec, media)
    ]
    assert not missing, "no example for:\n" + "\n".join(missing)


def test_every_operation_documents_a_body_for_each_answer_but_204(spec: dict[str, Any]) -> None:
    empty = [
        f"{name} {status}"
        for name, operation in operations(spec)
        for status, response in operation["responses"].items()
        if status != "204" and not resolve(spec, response).get("content")
    ]
    assert not empty, "responses without a documented body:\n" + "\n".join(empty)


def test_every_example_validates_against_its_schema(spec: dict[str, Any]) -> None:
    checked, problems = 0, []
    for name, where, media in bodies(spec):
        validator = Draft4Validator(json_schema(spec, media["schema"]))
        for example in examples_of(spec, media):
            checked += 1
            problems += [
                f"{name} {where}: {error.message}" for error in validator.iter_errors(example)
            ]
    assert checked > 50
    assert not problems, "\n".join(problems)


def test_error_examples_carry_their_own_status(spec: dict[str, Any]) -> None:
    for name, where, media in bodies(spec):
        if not where.startswith(("4", "5")):
            continue
        for example in examples_of(spec, media):
            assert example["code"] == int(where), f"{name} {where}: example says {example['code']}"
            assert example["message"], f"{name} {where}: example without a message"


def test_success_examples_use_the_shared_sample_story(spec: dict[str, Any]) -> None:
    appointment = spec["paths"]["/api/v1/appointments/{appointment_id}"]["get"]
    example = appointment["responses"]["200"]["content"]["application/json"]["example"]
    assert example["id"] == 123
    assert example["departmentId"] == 5
    assert example["dateTime"] == "2026-02-01T10:00:00+01:00"
    webhook = spec["paths"]["/api/v1/webhooks"]["post"]["responses"]["201"]
    assert webhook["content"]["application/json"]["example"]["secret"].startswith("whsec_")


def test_the_docs_page_renders_the_spec(client: FlaskClient) -> None:
    page = client.get("/api/v1/docs")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert 'url: "/api/v1/openapi.json"' in html
    assert "/api/v1/docs/assets/swagger-ui-bundle.js" in html
    assert client.get("/api/v1/docs/assets/swagger-ui-bundle.js").status_code == 200
