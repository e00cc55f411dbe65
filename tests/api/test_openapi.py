"""The served OpenAPI spec is complete, public, and identical to openapi/openapi.json."""

from __future__ import annotations

import json
import re
from pathlib import Path

from flask import Flask

SPEC_FILE = Path(__file__).resolve().parents[2] / "openapi" / "openapi.json"


def test_served_spec_equals_the_committed_file(app: Flask) -> None:
    served = app.test_client().get("/api/v1/openapi.json")
    assert served.status_code == 200
    committed = json.loads(SPEC_FILE.read_text())
    assert served.json == committed, (
        "openapi/openapi.json is stale: run `make openapi` and commit the result"
    )


def test_every_api_route_is_documented_with_its_methods(app: Flask) -> None:
    spec = app.test_client().get("/api/v1/openapi.json").json
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/api/v1/") or rule.rule.startswith(
            ("/api/v1/openapi.json", "/api/v1/docs")
        ):
            continue
        path = re.sub(r"<(?:\w+(?:\([^)]*\))?:)?(\w+)>", r"{\1}", rule.rule)
        assert path in spec["paths"], f"{rule.rule} is not in the spec"
        for method in (rule.methods or set()) - {"HEAD", "OPTIONS"}:
            assert method.lower() in spec["paths"][path], f"{method} {rule.rule} undocumented"


def test_the_api_key_scheme_applies_to_every_operation(app: Flask) -> None:
    spec = app.test_client().get("/api/v1/openapi.json").json
    assert spec["components"]["securitySchemes"]["ApiKeyAuth"] == {
        "type": "apiKey",
        "in": "header",
        "name": "X-API-Key",
    }
    assert spec["security"] == [{"ApiKeyAuth": []}]
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            if method == "parameters":
                continue
            assert "401" in operation["responses"], f"{method} {path} lacks 401"
            error_codes = [c for c in operation["responses"] if c.startswith("4")]
            for code in error_codes:
                response = operation["responses"][code]
                assert "$ref" in response or "Error" in json.dumps(response["content"])


def test_the_docs_page_and_its_assets_are_served_without_a_key(app: Flask) -> None:
    client = app.test_client()
    page = client.get("/api/v1/docs")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "/api/v1/docs/assets/swagger-ui-bundle.js" in html
    assert "/api/v1/openapi.json" in html
    asset = client.get("/api/v1/docs/assets/swagger-ui-bundle.js")
    assert asset.status_code == 200
    assert len(asset.get_data()) > 100_000


def test_every_post_documents_the_idempotency_key_header(app: Flask) -> None:
    spec = app.test_client().get("/api/v1/openapi.json").json
    for path, operations in spec["paths"].items():
        if "post" not in operations:
            continue
        headers = [
            p["name"] for p in operations["post"].get("parameters", []) if p["in"] == "header"
        ]
        assert "Idempotency-Key" in headers, f"POST {path}"
