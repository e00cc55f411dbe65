"""/api/v1/appointments."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from flask.views import MethodView
from flask_smorest import Blueprint

from moncreneau.api import examples
from moncreneau.api.idempotency import DOC as IDEMPOTENCY_DOC
from moncreneau.api.idempotency import idempotent
from moncreneau.api.web import (
    IF_MATCH_PATTERN,
    etag,
    expected_versions,
    organization_id,
    page_args,
    page_response,
    page_schema,
    runtime,
    session,
)
from moncreneau.appointments import service
from moncreneau.appointments.schemas import (
    Appointment,
    AppointmentChange,
    AppointmentCreate,
    AppointmentQuery,
    CancelBody,
    NoBody,
)
from moncreneau.events.schemas import EventPage

blp = Blueprint(
    "appointments", __name__, url_prefix="/api/v1/appointments", description="Appointments"
)

AppointmentPage = page_schema(Appointment, "AppointmentPage")
IF_MATCH_DOC = {
    "parameters": [
        {
            "in": "header",
            "name": "If-Match",
            "required": False,
            "schema": {"type": "string", "pattern": IF_MATCH_PATTERN, "example": '"3"'},
            "description": 'Only act if the appointment is still at this version (`"3"`); '
            "otherwise 412. `*` or a list of entity tags; anything else is a 422.",
        }
    ]
}
ETAG_HEADER = {
    "ETag": {
        "description": 'The appointment\'s version, `"<version>"`.',
        "schema": {"type": "string"},
    }
}


class ListArgs(page_args("appointments"), AppointmentQuery):  # type: ignore[misc]
    pass


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


@blp.route("")
class Appointments(MethodView):
    @blp.arguments(ListArgs(), location="query")
    @blp.response(200, AppointmentPage, example=examples.APPOINTMENT_PAGE)
    def get(self, args: dict[str, Any]) -> Any:
        """List appointments"""
        status = args.get("status")
        filters = service.AppointmentFilter(
            status=status.value if status else None,
            department_id=args.get("department_id"),
            starts_from=_utc(args.get("starts_from")),
            starts_before=_utc(args.get("starts_before")),
        )
        page = service.list_page(
            session(), organization_id(), filters, args["limit"], args["cursor"]
        )
        return page_response(page)

    @idempotent
    @blp.doc(**IDEMPOTENCY_DOC)
    @blp.arguments(AppointmentCreate(), example=examples.APPOINTMENT_CREATE)
    @blp.response(201, Appointment, headers=ETAG_HEADER, example=examples.APPOINTMENT)
    @blp.alt_response(
        409, description="The slot is full; nothing was booked.", example=examples.SLOT_FULL
    )
    def post(self, body: dict[str, Any]) -> Any:
        """Book an appointment

        Emits `appointment.created`.
        """
        appointment = service.book(
            session(), organization_id(), service.NewAppointment(**body), vault=runtime().vault
        )
        return appointment, 201, etag(appointment)


@blp.route("/<id:appointment_id>")
class AppointmentById(MethodView):
    @blp.response(200, Appointment, headers=ETAG_HEADER, example=examples.APPOINTMENT)
    def get(self, appointment_id: int) -> Any:
        """Get an appointment"""
        appointment = service.get(session(), organization_id(), appointment_id)
        return appointment, 200, etag(appointment)

    @blp.doc(**IF_MATCH_DOC)
    @blp.arguments(AppointmentChange(), required=False, example=examples.APPOINTMENT_CHANGE)
    @blp.response(200, Appointment, headers=ETAG_HEADER, example=examples.APPOINTMENT_RESCHEDULED)
    @blp.alt_response(
        409,
        description="Slot full, final status, or a concurrent change.",
        example=examples.RESCHEDULE_SLOT_FULL,
    )
    @blp.alt_response(
        412, description="If-Match named an older version.", example=examples.STALE_VERSION
    )
    def patch(self, body: dict[str, Any], appointment_id: int) -> Any:
        """Reschedule or change contact details

        Emits `appointment.updated` with the changed fields' previous values; a request that
        changes nothing emits nothing.
        """
        appointment = service.change(
            session(),
            organization_id(),
            appointment_id,
            body,
            expected_versions(),
            vault=runtime().vault,
        )
        return appointment, 200, etag(appointment)


def _lifecycle(action: str, event: str, result: dict[str, Any]) -> type[MethodView]:
    def post(self: MethodView, body: dict[str, Any], appointment_id: int) -> Any:
        appointment = service.transition(
            session(),
            organization_id(),
            appointment_id,
            action,
            expected_versions(),
            body.get("reason"),
            vault=runtime().vault,
        )
        return appointment, 200, etag(appointment)

    post.__doc__ = f"{action.capitalize()} an appointment\n\nEmits `{event}`."
    if action == "cancel":
        post.__doc__ += ' The body is optional: `{"reason": "..."}`.'
    schema, example = (CancelBody, examples.CANCEL) if action == "cancel" else (NoBody, {})
    view = blp.arguments(schema(), required=False, example=example)(post)
    view = blp.alt_response(
        412, description="If-Match named an older version.", example=examples.STALE_VERSION
    )(view)
    view = blp.alt_response(
        409,
        description="Not allowed from the current status.",
        example=examples.TRANSITION_CONFLICT[action],
    )(view)
    view = blp.response(200, Appointment, headers=ETAG_HEADER, example=result)(view)
    view = blp.doc(parameters=IF_MATCH_DOC["parameters"] + IDEMPOTENCY_DOC["parameters"])(view)
    view = idempotent(view)
    cls = type(f"Appointment{action.capitalize()}", (MethodView,), {"post": view})
    return blp.route(f"/<id:appointment_id>/{action}")(cls)


AppointmentValidate = _lifecycle(
    "validate", "appointment.validated", examples.APPOINTMENT_VALIDATED
)
AppointmentComplete = _lifecycle(
    "complete", "appointment.completed", examples.APPOINTMENT_COMPLETED
)
AppointmentCancel = _lifecycle("cancel", "appointment.cancelled", examples.APPOINTMENT_CANCELLED)


@blp.route("/<id:appointment_id>/events")
class AppointmentEvents(MethodView):
    @blp.arguments(page_args("history")(), location="query")
    @blp.response(200, EventPage, example=examples.APPOINTMENT_HISTORY)
    def get(self, args: dict[str, Any], appointment_id: int) -> Any:
        """An appointment's event history, oldest first

        Paginated like every list (`limit`, default 50, and `cursor`). Folding all its events
        gives the appointment exactly as `GET` returns it.
        """
        page = service.history(
            session(),
            organization_id(),
            appointment_id,
            args["limit"],
            args["cursor"],
            vault=runtime().vault,
        )
        return page_response(page)
