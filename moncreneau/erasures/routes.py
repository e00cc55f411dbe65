"""/api/v1/erasures."""

from __future__ import annotations

from typing import Any

from flask import request
from flask.views import MethodView
from flask_smorest import Blueprint

from moncreneau.api import examples
from moncreneau.api.idempotency import DOC as IDEMPOTENCY_DOC
from moncreneau.api.idempotency import idempotent
from moncreneau.api.web import organization_id, page_response, runtime, session
from moncreneau.auth.keys import prefix_of
from moncreneau.clock import utcnow
from moncreneau.erasures import service
from moncreneau.erasures.schemas import Erasure, ErasureCreate, ErasurePage, ErasureQuery

blp = Blueprint(
    "erasures", __name__, url_prefix="/api/v1/erasures", description="Erasures of personal data"
)


@blp.route("")
class Erasures(MethodView):
    @blp.arguments(ErasureQuery(), location="query")
    @blp.response(200, ErasurePage, example=examples.ERASURE_PAGE)
    def get(self, args: dict[str, Any]) -> Any:
        """List erasures, newest first"""
        page = service.list_page(session(), organization_id(), args["limit"], args["cursor"])
        return page_response(page)

    @idempotent
    @blp.doc(**IDEMPOTENCY_DOC)
    @blp.arguments(ErasureCreate(), example=examples.ERASURE_CREATE)
    @blp.response(202, Erasure, example=examples.ERASURE_PENDING)
    def post(self, body: dict[str, Any]) -> Any:
        """Erase a patient's personal data

        Exactly one selector: `email`, `phone` or `appointmentIds` (at most 1,000). Every
        matching appointment of your organization is erased asynchronously: its `name`,
        `email`, `phone`, `notes` and `cancellationReason` read `null` wherever it appears,
        and each emits `appointment.erased`. The answer is `202` whether or not anything
        matches, and the selector's value is never stored nor shown again. Read the erasure
        until its `status` is `completed`.
        """
        selector = service.Selector(
            email=body.get("email"),
            phone=body.get("phone"),
            appointment_ids=body.get("appointment_ids"),
        )
        erasure = service.request(
            session(),
            runtime().vault,
            organization_id(),
            selector,
            prefix_of(request.headers.get("X-API-Key", "")),
            utcnow(),
        )
        return erasure, 202


@blp.route("/<string:erasure_id>")
class ErasureById(MethodView):
    @blp.response(200, Erasure, example=examples.ERASURE_COMPLETED)
    def get(self, erasure_id: str) -> Any:
        """Get an erasure"""
        return service.get(session(), organization_id(), erasure_id)
