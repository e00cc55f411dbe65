"""/api/v1/webhooks: subscriptions, test sends, secret rotation and the delivery log."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from flask.views import MethodView
from flask_smorest import Blueprint

from moncreneau.api import examples
from moncreneau.api.idempotency import DOC as IDEMPOTENCY_DOC
from moncreneau.api.idempotency import idempotent
from moncreneau.api.web import (
    enqueue_after_commit,
    organization_id,
    page_args,
    page_response,
    runtime,
    session,
)
from moncreneau.clock import now
from moncreneau.domain.errors import Invalid
from moncreneau.webhooks import deliveries as delivery_log
from moncreneau.webhooks import service
from moncreneau.webhooks.schemas import (
    DeliveryDetail,
    DeliveryPage,
    DeliveryQuery,
    ReplayRequest,
    ReplayResult,
    TestSent,
    Webhook,
    WebhookChange,
    WebhookCreate,
    WebhookPage,
    WebhookWithHealth,
    WebhookWithSecret,
)

blp = Blueprint("webhooks", __name__, url_prefix="/api/v1/webhooks", description="Webhooks")


@blp.route("")
class Webhooks(MethodView):
    @blp.arguments(page_args("webhooks")(), location="query")
    @blp.response(200, WebhookPage, example=examples.WEBHOOK_PAGE)
    def get(self, args: dict[str, Any]) -> Any:
        """List webhooks"""
        page = service.list_page(session(), organization_id(), args["limit"], args["cursor"])
        return page_response(page)

    @idempotent
    @blp.doc(**IDEMPOTENCY_DOC)
    @blp.arguments(WebhookCreate(), example=examples.WEBHOOK_CREATE)
    @blp.response(201, WebhookWithSecret, example=examples.WEBHOOK_CREATED)
    @blp.alt_response(
        409,
        description="The organization has as many webhooks as it may have, or a request "
        "with this `Idempotency-Key` is still being processed.",
        example=examples.WEBHOOK_LIMIT,
    )
    def post(self, body: dict[str, Any]) -> Any:
        """Subscribe an endpoint

        The answer carries the signing `secret`, shown this once. URLs must be `https` to a
        public address unless the operator allows private ones. An organization has at most
        `MONCRENEAU_MAX_WEBHOOKS_PER_ORGANIZATION` (100) webhooks, deleted ones aside.
        """
        rt = runtime()
        new = service.NewSubscription(**body)
        return service.create(session(), organization_id(), new, rt.box, rt.settings)


@blp.route("/<id:webhook_id>")
class WebhookById(MethodView):
    @blp.response(200, WebhookWithHealth, example=examples.WEBHOOK_WITH_HEALTH)
    def get(self, webhook_id: int) -> Any:
        """Get a webhook and its health

        `health` sums up the last 24 hours of attempts, the latest success and failure,
        and the deliveries that wait.
        """
        return delivery_log.webhook_with_health(session(), organization_id(), webhook_id, now())

    @blp.arguments(WebhookChange(), required=False, example=examples.WEBHOOK_CHANGE)
    @blp.response(200, Webhook, example=examples.WEBHOOK)
    def patch(self, body: dict[str, Any], webhook_id: int) -> Any:
        """Change a webhook (url, events, enabled, description, version)"""
        return service.change(session(), organization_id(), webhook_id, body, runtime().settings)

    @blp.response(204)
    def delete(self, webhook_id: int) -> Any:
        """Delete a webhook; its pending deliveries are not sent"""
        service.delete(session(), organization_id(), webhook_id)
        return None


@blp.route("/<id:webhook_id>/test")
class WebhookTest(MethodView):
    @idempotent
    @blp.doc(**IDEMPOTENCY_DOC)
    @blp.response(202, TestSent, example=examples.TEST_SENT)
    def post(self, webhook_id: int) -> Any:
        """Send a webhook.test event to this endpoint only"""
        sent = service.send_test(session(), organization_id(), webhook_id, runtime().settings)
        enqueue_after_commit([sent["deliveryId"]])
        return sent


@blp.route("/<id:webhook_id>/rotate-secret")
class WebhookRotateSecret(MethodView):
    @idempotent
    @blp.doc(**IDEMPOTENCY_DOC)
    @blp.response(200, WebhookWithSecret, example=examples.WEBHOOK_ROTATED)
    def post(self, webhook_id: int) -> Any:
        """Rotate the signing secret

        Returns the new secret. Until `previousSecretExpiresAt` (24 hours by default),
        deliveries are signed with both, so a receiver holding either verifies them.
        """
        rt = runtime()
        grace = timedelta(hours=rt.settings.secret_grace_hours)
        return service.rotate_secret(session(), organization_id(), webhook_id, rt.box, grace)


@blp.route("/<id:webhook_id>/deliveries")
class Deliveries(MethodView):
    @blp.arguments(DeliveryQuery(), location="query")
    @blp.response(200, DeliveryPage, example=examples.DELIVERY_PAGE)
    def get(self, args: dict[str, Any], webhook_id: int) -> Any:
        """List a webhook's deliveries, newest first"""
        page = delivery_log.list_page(
            session(),
            organization_id(),
            webhook_id,
            args["limit"],
            args["cursor"],
            args.get("status"),
            args.get("eventType"),
        )
        return page_response(page)


@blp.route("/<id:webhook_id>/deliveries/<string:delivery_id>")
class DeliveryById(MethodView):
    @blp.response(200, DeliveryDetail, example=examples.CREATED_DELIVERY_DETAIL)
    def get(self, webhook_id: int, delivery_id: str) -> Any:
        """Get a delivery with every attempt"""
        return delivery_log.get(session(), organization_id(), webhook_id, delivery_id)


@blp.route("/<id:webhook_id>/deliveries/<string:delivery_id>/retry")
class DeliveryRetry(MethodView):
    @idempotent
    @blp.doc(**IDEMPOTENCY_DOC)
    @blp.response(202, DeliveryDetail, example=examples.RETRIED_DELIVERY_DETAIL)
    @blp.alt_response(
        409,
        description="The delivery is being sent right now.",
        example=examples.DELIVERY_BUSY,
    )
    def post(self, webhook_id: int, delivery_id: str) -> Any:
        """Send a delivery again now

        Same delivery id and byte-identical body; a dead or succeeded delivery gets one
        more attempt.
        """
        db = session()
        delivery_log.retry(db, organization_id(), webhook_id, delivery_id)
        enqueue_after_commit([delivery_id])
        return delivery_log.get(db, organization_id(), webhook_id, delivery_id)


@blp.route("/<id:webhook_id>/replay")
class WebhookReplay(MethodView):
    @idempotent
    @blp.doc(**IDEMPOTENCY_DOC)
    @blp.arguments(ReplayRequest(), example=examples.REPLAY)
    @blp.response(202, ReplayResult, example=examples.REPLAY_RESULT)
    def post(self, body: dict[str, Any], webhook_id: int) -> Any:
        """Replay failed and dead deliveries created in a time window

        `{"from": "2026-02-01T00:00:00Z", "to": "2026-02-02T00:00:00Z"}`, optionally
        `"statuses": ["dead"]`. Each gets one more attempt now, oldest first and at most
        1000 a call: repeat the call while `hasMore` is true.
        """
        if body["until"] <= body["since"]:
            raise Invalid.field("to", "Must be after `from`.")
        ids, more = delivery_log.replay(
            session(),
            organization_id(),
            webhook_id,
            body["since"],
            body["until"],
            tuple(body["statuses"]),
        )
        enqueue_after_commit(ids)
        return {"count": len(ids), "deliveryIds": ids, "hasMore": more}
