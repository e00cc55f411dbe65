"""The integrator portal's pages: server-rendered, one organization per browser session."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

import marshmallow as ma
from flask import (
    Blueprint,
    Response,
    abort,
    g,
    make_response,
    redirect,
    render_template,
    request,
    url_for,
)
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Response as BaseResponse

from moncreneau import clock
from moncreneau.api.errors import STATUS_OF
from moncreneau.api.web import SAFE_METHODS, enqueue_after_commit, runtime, session
from moncreneau.domain.errors import DomainError, Invalid
from moncreneau.domain.events import EVENT_TYPES, SUBSCRIBABLE
from moncreneau.events import catalog
from moncreneau.outbox import payloads
from moncreneau.portal import links
from moncreneau.webhooks import deliveries as delivery_log
from moncreneau.webhooks import service as webhooks
from moncreneau.webhooks.schemas import STATUSES, WebhookChange, WebhookCreate

blp = Blueprint(
    "portal",
    __name__,
    url_prefix="/portal",
    template_folder="templates",
    static_folder="static",
)

COOKIE = "moncreneau_portal"
# No inline script or style anywhere: what an endpoint answers cannot run in the page.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
PAGE_SIZE = 25
# Windows a replay may cover, in hours, as the page offers them.
REPLAY_WINDOWS = {1: "the last hour", 24: "the last 24 hours", 168: "the last 7 days"}
# What the last action did, shown once on the page it led to.
NOTICES = {
    "created": "Endpoint added.",
    "saved": "Changes saved.",
    "enabled": "Endpoint enabled: waiting deliveries go out again.",
    "disabled": "Endpoint disabled: nothing is sent to it until you enable it.",
    "deleted": "Endpoint deleted.",
    "tested": "Test event sent. It appears below within seconds.",
    "retried": "Delivery sent again.",
    "replayed": "Failed deliveries of the window are being sent again.",
}


def _visitor() -> links.Visitor:
    visitor: links.Visitor = g.portal
    return visitor


def _org() -> int:
    return _visitor().organization_id


@blp.before_request
def _enter() -> Response | None:
    """Every page but the link's own needs a live session; a change needs a CSRF token and
    a session that may change things."""
    if request.endpoint in ("portal.open_link", "portal.static"):
        return None
    visitor = links.visitor(session(), request.cookies.get(COOKIE, ""), clock.now())
    if visitor is None:
        return _page("expired.html", 401)
    g.portal = visitor
    if request.method not in SAFE_METHODS:
        if not links.csrf_matches(request.cookies.get(COOKIE, ""), request.form.get("csrf", "")):
            return _page("error.html", 403, message="This form has expired; reload the page.")
        if visitor.read_only and request.endpoint != "portal.sign_out":
            return _page("error.html", 403, message="This portal link is read-only.")
    return None


@blp.after_request
def _harden(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["X-Frame-Options"] = "DENY"
    # The link's token is in the URL: no Referer may carry it elsewhere.
    response.headers["Referrer-Policy"] = "no-referrer"
    if request.endpoint != "portal.static":
        response.headers["Cache-Control"] = "no-store"
    return response


@blp.errorhandler(DomainError)
def _domain_error(error: DomainError) -> Response:
    status = next(s for cls, s in STATUS_OF.items() if isinstance(error, cls))
    return _page("error.html", status, message=error.message)


@blp.errorhandler(HTTPException)
def _http_error(error: HTTPException) -> Response:
    return _page("error.html", error.code or 500, message=error.description)


def _page(template: str, status: int = 200, **context: Any) -> Response:
    response = make_response(render_template(f"portal/{template}", **context), status)
    return response


@blp.app_template_filter("pretty")
def _pretty(value: Any) -> str:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return value
    return json.dumps(value, indent=2, ensure_ascii=False)


@blp.context_processor
def _context() -> dict[str, Any]:
    visitor: links.Visitor | None = g.get("portal")
    return {
        "visitor": visitor,
        "can_change": visitor is not None and not visitor.read_only,
        "csrf": visitor.csrf_token if visitor else "",
        "notice": NOTICES.get(request.args.get("done", "")),
    }


# --- the link --------------------------------------------------------------------------


@blp.route("/open/<token>", methods=["GET", "POST"])
def open_link(token: str) -> BaseResponse:
    """GET only shows a button (which the page's script presses): a link previewer or a
    mail scanner that fetches the URL must not spend it."""
    now = clock.now()
    if request.method == "GET":
        if not links.usable(session(), token, now):
            return _page("expired.html", 410)
        return _page("open.html", token=token)
    opened = links.open_link(session(), token, now)
    if opened is None:
        return _page("expired.html", 410)
    session_token, expires_at = opened
    response = redirect(url_for("portal.webhook_list"), 303)
    response.set_cookie(
        COOKIE,
        session_token,
        expires=expires_at,
        path="/portal",
        secure=request.is_secure or runtime().settings.public_url.startswith("https://"),
        httponly=True,
        samesite="Strict",
    )
    return response


@blp.post("/sign-out")
def sign_out() -> BaseResponse:
    links.close(session(), request.cookies.get(COOKIE, ""), clock.now())
    response = make_response(render_template("portal/signed_out.html"))
    response.delete_cookie(COOKIE, path="/portal")
    return response


# --- webhooks --------------------------------------------------------------------------


def _status(health: dict[str, Any], hook: dict[str, Any]) -> tuple[str, str]:
    """A word and a tone for the list: how the endpoint fares now."""
    if not hook["enabled"]:
        return "Disabled", "muted"
    if health["lastFailureAt"] and (
        not health["lastSuccessAt"] or health["lastFailureAt"] > health["lastSuccessAt"]
    ):
        return "Failing", "bad"
    if health["lastSuccessAt"]:
        return "Healthy", "good"
    return "No deliveries yet", "muted"


@blp.get("/")
def webhook_list() -> str:
    db = session()
    page = webhooks.list_page(db, _org(), 200, None)
    now = clock.now()
    rows = []
    for hook in page.items:
        health = delivery_log.health(db, webhooks.find(db, _org(), hook["id"]), now)
        rows.append({**hook, "health": health, "status": _status(health, hook)})
    return render_template("portal/webhooks.html", hooks=rows)


def _form_values() -> dict[str, Any]:
    events = request.form.getlist("events")
    values: dict[str, Any] = {
        "url": request.form.get("url", "").strip(),
        "description": request.form.get("description", "").strip() or None,
        "events": ["*"] if "*" in events else events,
        "version": request.form.get("version", payloads.LATEST),
        "payload": request.form.get("payload", payloads.FULL),
    }
    return values


def _form(hook: dict[str, Any] | None, values: dict[str, Any], errors: dict[str, Any]) -> Any:
    return _page(
        "webhook_form.html",
        422 if errors else 200,
        hook=hook,
        values=values,
        errors=errors,
        event_types=SUBSCRIBABLE,
        versions=payloads.VERSIONS,
        styles=payloads.STYLES,
    )


@blp.get("/webhooks/new")
def webhook_new() -> Any:
    if _visitor().read_only:
        abort(403, "This portal link is read-only.")
    defaults = {"url": "", "description": None, "events": ["*"]}
    return _form(None, {**defaults, "version": payloads.LATEST, "payload": payloads.FULL}, {})


@blp.post("/webhooks")
def webhook_create() -> Any:
    values = _form_values()
    try:
        loaded = WebhookCreate().load(values)
        rt = runtime()
        created = webhooks.create(
            session(), _org(), webhooks.NewSubscription(**loaded), rt.box, rt.settings
        )
    except ma.ValidationError as error:
        return _form(None, values, error.normalized_messages())
    except Invalid as error:
        return _form(None, values, error.errors or {"url": [error.message]})
    return _page("secret.html", 201, hook=created, created=True)


@blp.get("/webhooks/<id:webhook_id>")
def webhook_detail(webhook_id: int) -> str:
    hook = delivery_log.webhook_with_health(session(), _org(), webhook_id, clock.now())
    recent = delivery_log.list_page(session(), _org(), webhook_id, 5, None)
    return render_template(
        "portal/webhook.html",
        hook=hook,
        health=hook["health"],
        status=_status(hook["health"], hook),
        deliveries=recent.items,
    )


@blp.get("/webhooks/<id:webhook_id>/edit")
def webhook_edit(webhook_id: int) -> Any:
    if _visitor().read_only:
        abort(403, "This portal link is read-only.")
    hook = webhooks.get(session(), _org(), webhook_id)
    return _form(hook, hook, {})


@blp.post("/webhooks/<id:webhook_id>")
def webhook_update(webhook_id: int) -> Any:
    hook = webhooks.get(session(), _org(), webhook_id)
    values = _form_values()
    try:
        loaded = WebhookChange().load(values)
        webhooks.change(session(), _org(), webhook_id, loaded, runtime().settings)
    except ma.ValidationError as error:
        return _form(hook, values, error.normalized_messages())
    except Invalid as error:
        return _form(hook, values, error.errors or {"url": [error.message]})
    return _back(webhook_id, "saved")


@blp.post("/webhooks/<id:webhook_id>/enabled")
def webhook_enable(webhook_id: int) -> BaseResponse:
    enabled = request.form.get("enabled") == "true"
    webhooks.change(session(), _org(), webhook_id, {"enabled": enabled}, runtime().settings)
    return _back(webhook_id, "enabled" if enabled else "disabled")


@blp.post("/webhooks/<id:webhook_id>/delete")
def webhook_delete(webhook_id: int) -> BaseResponse:
    webhooks.delete(session(), _org(), webhook_id)
    return redirect(url_for("portal.webhook_list", done="deleted"), 303)


@blp.post("/webhooks/<id:webhook_id>/rotate-secret")
def webhook_rotate(webhook_id: int) -> BaseResponse:
    rt = runtime()
    grace = timedelta(hours=rt.settings.secret_grace_hours)
    rotated = webhooks.rotate_secret(session(), _org(), webhook_id, rt.box, grace)
    return _page("secret.html", 200, hook=rotated, created=False)


@blp.post("/webhooks/<id:webhook_id>/test")
def webhook_test(webhook_id: int) -> BaseResponse:
    sent = webhooks.send_test(session(), _org(), webhook_id, runtime().settings)
    enqueue_after_commit([sent["deliveryId"]])
    return redirect(url_for("portal.delivery_list", webhook_id=webhook_id, done="tested"), 303)


def _back(webhook_id: int, done: str) -> BaseResponse:
    return redirect(url_for("portal.webhook_detail", webhook_id=webhook_id, done=done), 303)


# --- deliveries ------------------------------------------------------------------------


@blp.get("/webhooks/<id:webhook_id>/deliveries")
def delivery_list(webhook_id: int) -> str:
    status = request.args.get("status") or None
    event_type = request.args.get("eventType") or None
    cursor = request.args.get("cursor") or None
    if status not in (None, *STATUSES) or event_type not in (None, *EVENT_TYPES):
        abort(400, "Unknown filter value.")
    db = session()
    hook = webhooks.get(db, _org(), webhook_id)
    try:
        page = delivery_log.list_page(db, _org(), webhook_id, PAGE_SIZE, cursor, status, event_type)
    except Invalid:
        abort(400, "This page link is no longer valid.")
    filters = {k: v for k, v in (("status", status), ("eventType", event_type)) if v}
    older = None
    if page.next_cursor:
        older = "?" + urlencode({**filters, "cursor": page.next_cursor})
    return render_template(
        "portal/deliveries.html",
        hook=hook,
        deliveries=page.items,
        statuses=STATUSES,
        event_types=EVENT_TYPES,
        filters=filters,
        older=older,
        live=any(d["status"] in ("pending", "failed") for d in page.items)
        or request.args.get("done") == "tested",
        windows=REPLAY_WINDOWS,
    )


@blp.get("/webhooks/<id:webhook_id>/deliveries/<delivery_id>")
def delivery_detail(webhook_id: int, delivery_id: str) -> str:
    db = session()
    hook = webhooks.get(db, _org(), webhook_id)
    delivery = delivery_log.get(db, _org(), webhook_id, delivery_id)
    return render_template(
        "portal/delivery.html",
        hook=hook,
        delivery=delivery,
        live=delivery["status"] in ("pending", "failed"),
    )


@blp.post("/webhooks/<id:webhook_id>/deliveries/<delivery_id>/retry")
def delivery_retry(webhook_id: int, delivery_id: str) -> BaseResponse:
    delivery_log.retry(session(), _org(), webhook_id, delivery_id)
    enqueue_after_commit([delivery_id])
    return redirect(
        url_for(
            "portal.delivery_detail", webhook_id=webhook_id, delivery_id=delivery_id, done="retried"
        ),
        303,
    )


@blp.post("/webhooks/<id:webhook_id>/replay")
def delivery_replay(webhook_id: int) -> BaseResponse:
    hours = request.form.get("hours", type=int)
    if hours not in REPLAY_WINDOWS:
        raise Invalid.field("hours", f"Choose among {sorted(REPLAY_WINDOWS)} hours.")
    now = clock.now()
    since = now - timedelta(hours=hours)
    ids, _more = delivery_log.replay(session(), _org(), webhook_id, since, now)
    enqueue_after_commit(ids)
    return redirect(url_for("portal.delivery_list", webhook_id=webhook_id, done="replayed"), 303)


# --- event types -----------------------------------------------------------------------


@blp.get("/event-types")
def event_types() -> str:
    return render_template("portal/event_types.html", types=catalog.catalog())
