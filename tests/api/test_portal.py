"""The integrator portal over HTTP: one-time links, sessions, read-only, CSRF, tenants, escaping."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import text, update
from sqlalchemy.engine import Engine

from moncreneau.app import create_app
from moncreneau.config import ConfigError, Settings
from moncreneau.db import write_session
from moncreneau.delivery import store
from moncreneau.models import PortalLink
from moncreneau.portal import links
from tests.conftest import Api, make_settings, new_organization

HOOK = {"url": "http://127.0.0.1:9/hook", "events": ["*"]}
MARKUP = '<script>alert("x")</script>\'"&'


class Portal:
    """A browser's view of the portal: the test client keeps the session cookie."""

    def __init__(self, client: FlaskClient) -> None:
        self.client = client
        self.csrf = ""

    def get(self, path: str, **kwargs: Any) -> Any:
        response = self.client.get(f"/portal{path}", **kwargs)
        found = re.search(r'name="csrf" value="([0-9a-f]*)"', response.get_data(as_text=True))
        if found and found.group(1):
            self.csrf = found.group(1)
        return response

    def post(self, path: str, data: dict[str, Any] | None = None, csrf: bool = True) -> Any:
        form = {**(data or {}), **({"csrf": self.csrf} if csrf else {})}
        return self.client.post(f"/portal{path}", data=form)


def _link(api: Api, **body: Any) -> str:
    made = api.post("/portal-links", {"expiresInMinutes": 60, **body})
    assert made.status_code == 201, made.json
    url: str = made.json["url"]
    return url.split("://", 1)[1].split("/", 1)[1]


def _open(app: Flask, api: Api, **body: Any) -> Portal:
    portal = Portal(app.test_client())
    opened = portal.client.post("/" + _link(api, **body))
    assert opened.status_code == 303
    portal.get("/")
    return portal


def _forms(html: str) -> list[str]:
    return re.findall(r'<form method="post"[^>]*>', html)


def test_a_link_is_made_for_a_bounded_time(api: Api) -> None:
    made = api.post("/portal-links", {"expiresInMinutes": 90, "readOnly": True})
    assert made.status_code == 201
    assert "/portal/open/mcp_" in made.json["url"]
    expires = datetime.fromisoformat(made.json["expiresAt"].replace("Z", "+00:00"))
    assert timedelta(minutes=89) < expires - datetime.now(UTC) <= timedelta(minutes=90)
    assert made.json["readOnly"] is True


@pytest.mark.parametrize(
    "body",
    [
        {"expiresInMinutes": 0},
        {"expiresInMinutes": 10081},
        {"expiresInMinutes": "60"},
        {"expiresInMinutes": 60, "readOnly": "yes"},
        {"expiresInMinutes": 60, "admin": True},
    ],
)
def test_a_bad_link_request_is_a_422_and_makes_nothing(
    api: Api, engine: Engine, body: dict[str, Any]
) -> None:
    refused = api.post("/portal-links", body)
    assert refused.status_code == 422
    assert refused.json["code"] == 422 and refused.json["errors"]
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM portal_links")).scalar_one() == 0


def test_links_need_a_key(app: Flask) -> None:
    assert app.test_client().post("/api/v1/portal-links", json={}).status_code == 401


def test_only_digests_of_link_and_session_tokens_are_stored(
    app: Flask, api: Api, engine: Engine
) -> None:
    path = _link(api)
    token = path.rsplit("/", 1)[1]
    client = app.test_client()
    cookie = client.post("/" + path).headers["Set-Cookie"]
    session_token = cookie.split(";")[0].split("=", 1)[1]
    with engine.connect() as conn:
        stored = " ".join(
            str(v) for row in conn.execute(text("SELECT * FROM portal_links")) for v in row
        )
    assert token not in stored and session_token not in stored


def test_a_link_opens_once_into_an_http_only_same_site_session(app: Flask, api: Api) -> None:
    path = "/" + _link(api)
    client = app.test_client()
    shown = client.get(path)  # what a link previewer fetches: it spends nothing
    assert shown.status_code == 200 and "Open the portal" in shown.get_data(as_text=True)
    opened = client.post(path)
    assert opened.status_code == 303 and opened.headers["Location"].endswith("/portal/")
    cookie = opened.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/portal" in cookie
    assert "Secure" not in cookie
    assert client.get("/portal/").status_code == 200
    other = app.test_client()
    assert other.post(path).status_code == 410
    assert other.get(path).status_code == 410
    assert other.get("/portal/").status_code == 401


def test_the_session_cookie_is_secure_under_https(app: Flask, api: Api) -> None:
    path = "/" + _link(api)
    opened = app.test_client().post(path, base_url="https://portal.example.org")
    assert "Secure" in opened.headers["Set-Cookie"]


def test_links_start_with_the_public_url_and_its_https_makes_the_cookie_secure(
    database_url: str,
) -> None:
    settings = make_settings(database_url, public_url="https://moncreneau.example.org")
    app = create_app(settings)
    try:
        api = Api(app.test_client(), new_organization(app)["apiKey"])
        url = api.post("/portal-links", {"expiresInMinutes": 5}).json["url"]
        assert url.startswith("https://moncreneau.example.org/portal/open/mcp_")
        opened = app.test_client().post(url.removeprefix("https://moncreneau.example.org"))
        assert "Secure" in opened.headers["Set-Cookie"]
    finally:
        app.extensions["moncreneau"].sessions.kw["bind"].dispose()


def test_a_session_ends_when_its_link_expires(app: Flask, api: Api) -> None:
    portal = _open(app, api)
    assert portal.get("/").status_code == 200
    with write_session(app.extensions["moncreneau"].sessions) as db:
        db.execute(update(PortalLink).values(expires_at=datetime.now(UTC) - timedelta(seconds=1)))
        db.commit()
    assert portal.get("/").status_code == 401


def test_an_expired_link_does_not_open(app: Flask, api: Api) -> None:
    path = "/" + _link(api, expiresInMinutes=1)
    with write_session(app.extensions["moncreneau"].sessions) as db:
        db.execute(update(PortalLink).values(expires_at=datetime.now(UTC) - timedelta(seconds=1)))
        db.commit()
    assert app.test_client().post(path).status_code == 410


def test_pages_carry_a_strict_policy_and_no_inline_script_or_style(app: Flask, api: Api) -> None:
    portal = _open(app, api)
    hook = api.post("/webhooks", HOOK).json
    sent = api.post(f"/webhooks/{hook['id']}/test").json
    for path in (
        "/",
        "/webhooks/new",
        f"/webhooks/{hook['id']}",
        f"/webhooks/{hook['id']}/edit",
        f"/webhooks/{hook['id']}/deliveries",
        f"/webhooks/{hook['id']}/deliveries/{sent['deliveryId']}",
        "/event-types",
    ):
        page = portal.get(path)
        assert page.status_code == 200, path
        policy = page.headers["Content-Security-Policy"]
        assert "default-src 'none'" in policy and "script-src 'self'" in policy
        assert "unsafe-inline" not in policy
        html = page.get_data(as_text=True)
        assert re.findall(r"<script(?![^>]*\bsrc=)", html) == [], path
        assert " style=" not in html and "<style" not in html, path
        assets = re.findall(r'<(?:script|link|img)[^>]*(?:src|href)="([^"]*)"', html)
        assert assets and all(a.startswith("/portal/static/") for a in assets), assets
        assert page.headers["Cache-Control"] == "no-store"


def test_every_state_changing_form_carries_the_csrf_token(app: Flask, api: Api) -> None:
    portal = _open(app, api)
    hook = api.post("/webhooks", HOOK).json
    sent = api.post(f"/webhooks/{hook['id']}/test").json
    for path in (
        "/webhooks/new",
        f"/webhooks/{hook['id']}",
        f"/webhooks/{hook['id']}/edit",
        f"/webhooks/{hook['id']}/deliveries",
    ):
        html = portal.get(path).get_data(as_text=True)
        for form in re.findall(r'<form method="post".*?</form>', html, re.S):
            assert f'name="csrf" value="{portal.csrf}"' in form, (path, form)
    assert sent


def test_a_post_without_the_csrf_token_changes_nothing(app: Flask, api: Api) -> None:
    portal = _open(app, api)
    hook = api.post("/webhooks", HOOK).json
    refused = portal.post(f"/webhooks/{hook['id']}/delete", csrf=False)
    assert refused.status_code == 403
    assert api.get(f"/webhooks/{hook['id']}").status_code == 200


def test_the_portal_manages_webhooks_through_their_services(app: Flask, api: Api) -> None:
    portal = _open(app, api)
    empty = portal.get("/").get_data(as_text=True)
    assert "No endpoint yet" in empty and "Add your first endpoint" in empty

    created = portal.post(
        "/webhooks",
        {"url": HOOK["url"], "events": ["appointment.created"], "version": "1.0"},
    )
    assert created.status_code == 201
    secret = re.search(r"whsec_[A-Za-z0-9+/=]+", created.get_data(as_text=True))
    assert secret is not None
    (hook,) = api.get("/webhooks").json["data"]
    assert (hook["events"], hook["version"]) == (["appointment.created"], "1.0")
    assert secret.group(0) not in portal.get(f"/webhooks/{hook['id']}").get_data(as_text=True)

    bad = portal.post(f"/webhooks/{hook['id']}", {"url": "ftp://nowhere", "events": ["*"]})
    assert bad.status_code == 422 and "Please check the fields" in bad.get_data(as_text=True)
    portal.post(f"/webhooks/{hook['id']}", {"url": HOOK["url"] + "2", "events": ["*"]})
    assert api.get(f"/webhooks/{hook['id']}").json["url"] == HOOK["url"] + "2"

    portal.post(f"/webhooks/{hook['id']}/enabled", {"enabled": "false"})
    assert api.get(f"/webhooks/{hook['id']}").json["enabled"] is False
    portal.post(f"/webhooks/{hook['id']}/enabled", {"enabled": "true"})
    assert api.get(f"/webhooks/{hook['id']}").json["enabled"] is True

    rotated = portal.post(f"/webhooks/{hook['id']}/rotate-secret")
    assert secret.group(0) not in rotated.get_data(as_text=True)
    assert "whsec_" in rotated.get_data(as_text=True)
    assert api.get(f"/webhooks/{hook['id']}").json["previousSecretExpiresAt"]

    assert portal.post(f"/webhooks/{hook['id']}/test").status_code == 303
    (sent,) = api.get(f"/webhooks/{hook['id']}/deliveries").json["data"]
    assert sent["eventType"] == "webhook.test"
    listed = portal.get(f"/webhooks/{hook['id']}/deliveries?eventType=webhook.test")
    assert sent["id"] in listed.get_data(as_text=True)
    other_type = portal.get(f"/webhooks/{hook['id']}/deliveries?eventType=appointment.created")
    assert sent["id"] not in other_type.get_data(as_text=True)
    assert portal.get(f"/webhooks/{hook['id']}/deliveries?status=bogus").status_code == 400

    retried = portal.post(f"/webhooks/{hook['id']}/deliveries/{sent['id']}/retry")
    assert retried.status_code == 303
    assert portal.post(f"/webhooks/{hook['id']}/replay", {"hours": "24"}).status_code == 303
    assert portal.post(f"/webhooks/{hook['id']}/replay", {"hours": "5"}).status_code == 422

    portal.post(f"/webhooks/{hook['id']}/delete")
    assert api.get(f"/webhooks/{hook['id']}").status_code == 404


def test_a_read_only_session_shows_everything_and_changes_nothing(
    app: Flask, api: Api, engine: Engine
) -> None:
    hook = api.post("/webhooks", HOOK).json
    sent = api.post(f"/webhooks/{hook['id']}/test").json
    portal = _open(app, api, readOnly=True)
    # A valid token, as a forged page would not have: the refusal must come from the rights.
    cookie = portal.client.get_cookie("moncreneau_portal", path="/portal")
    assert cookie is not None
    portal.csrf = links.csrf_token(cookie.value)
    for path in (
        "/",
        f"/webhooks/{hook['id']}",
        f"/webhooks/{hook['id']}/deliveries",
        f"/webhooks/{hook['id']}/deliveries/{sent['deliveryId']}",
        "/event-types",
    ):
        page = portal.client.get(f"/portal{path}")
        assert page.status_code == 200
        assert _forms(page.get_data(as_text=True)) == [], path
    assert portal.get("/webhooks/new").status_code == 403
    assert portal.get(f"/webhooks/{hook['id']}/edit").status_code == 403
    for path, data in (
        ("/webhooks", {"url": HOOK["url"], "events": ["*"]}),
        (f"/webhooks/{hook['id']}", {"url": HOOK["url"] + "2", "events": ["*"]}),
        (f"/webhooks/{hook['id']}/enabled", {"enabled": "false"}),
        (f"/webhooks/{hook['id']}/rotate-secret", {}),
        (f"/webhooks/{hook['id']}/test", {}),
        (f"/webhooks/{hook['id']}/deliveries/{sent['deliveryId']}/retry", {}),
        (f"/webhooks/{hook['id']}/replay", {"hours": "24"}),
        (f"/webhooks/{hook['id']}/delete", {}),
    ):
        assert portal.post(path, data).status_code == 403, path
    assert api.get(f"/webhooks/{hook['id']}").json == {
        **api.get(f"/webhooks/{hook['id']}").json,
        "url": HOOK["url"],
        "enabled": True,
        "previousSecretExpiresAt": None,
    }
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM deliveries")).scalar_one() == 1
        assert conn.execute(text("SELECT count(*) FROM webhook_subscriptions")).scalar_one() == 1


def test_another_organizations_webhooks_are_not_found(app: Flask, api: Api, other_api: Api) -> None:
    hook = api.post("/webhooks", HOOK).json
    sent = api.post(f"/webhooks/{hook['id']}/test").json
    mine = api.get(f"/webhooks/{hook['id']}").json
    stranger = _open(app, other_api)
    assert hook["url"] not in stranger.get("/").get_data(as_text=True)
    for path in (
        f"/webhooks/{hook['id']}",
        f"/webhooks/{hook['id']}/edit",
        f"/webhooks/{hook['id']}/deliveries",
        f"/webhooks/{hook['id']}/deliveries/{sent['deliveryId']}",
    ):
        assert stranger.get(path).status_code == 404, path
    for path in (
        f"/webhooks/{hook['id']}",
        f"/webhooks/{hook['id']}/enabled",
        f"/webhooks/{hook['id']}/rotate-secret",
        f"/webhooks/{hook['id']}/test",
        f"/webhooks/{hook['id']}/deliveries/{sent['deliveryId']}/retry",
        f"/webhooks/{hook['id']}/replay",
        f"/webhooks/{hook['id']}/delete",
    ):
        got = stranger.post(path, {"url": "http://127.0.0.1:9/x", "events": ["*"], "hours": "1"})
        assert got.status_code == 404, path
    assert api.get(f"/webhooks/{hook['id']}").json == mine


def test_what_tenants_and_their_endpoints_wrote_is_escaped(app: Flask, api: Api) -> None:
    url = "http://127.0.0.1:9/hook?q=\"'><script>alert(1)</script>"
    hook = api.post("/webhooks", {**HOOK, "url": url, "description": MARKUP}).json
    assert hook["url"] == url, hook
    sent = api.post(f"/webhooks/{hook['id']}/test").json
    with write_session(app.extensions["moncreneau"].sessions) as db:
        now = datetime.now(UTC)
        (claimed,) = store.claim(db, [sent["deliveryId"]], now, timedelta(seconds=30))
        store.settle(
            db,
            [
                store.Settlement(
                    claimed=claimed,
                    started_at=now,
                    duration_ms=7,
                    status_code=500,
                    error="HTTP 500",
                    excerpt='<img src=x onerror="alert(2)"><script>alert(3)</script>',
                    status=store.FAILED,
                    next_attempt_at=now + timedelta(hours=1),
                )
            ],
            now,
        )
        db.commit()
    portal = _open(app, api)
    for path in (
        "/",
        f"/webhooks/{hook['id']}",
        f"/webhooks/{hook['id']}/edit",
        f"/webhooks/{hook['id']}/deliveries",
        f"/webhooks/{hook['id']}/deliveries/{sent['deliveryId']}",
    ):
        html = portal.get(path).get_data(as_text=True)
        assert "<script>alert" not in html and "<img src=x" not in html, path
    detail = portal.get(f"/webhooks/{hook['id']}/deliveries/{sent['deliveryId']}")
    assert "&lt;script&gt;alert(3)&lt;/script&gt;" in detail.get_data(as_text=True)


def test_the_root_leads_to_the_docs_which_tell_how_to_get_a_portal_link(app: Flask) -> None:
    client = app.test_client()
    root = client.get("/")
    assert root.status_code == 302 and root.headers["Location"].endswith("/api/v1/docs")
    assert client.get("/api/v1/docs").status_code == 200
    description = client.get("/api/v1/openapi.json").json["info"]["description"]
    assert "POST /api/v1/portal-links" in description and "Integrator portal" in description


def test_a_public_url_that_is_no_http_url_is_refused_at_start() -> None:
    with pytest.raises(ConfigError, match="MONCRENEAU_PUBLIC_URL"):
        Settings.from_env({"MONCRENEAU_PUBLIC_URL": "moncreneau.example.org"})
    assert Settings.from_env({"MONCRENEAU_PUBLIC_URL": "https://h.example/"}).public_url == (
        "https://h.example"
    )
