"""/api/v1/events: the organization's events in commit order."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView
from flask_smorest import Blueprint
from sqlalchemy import select

from moncreneau import examples
from moncreneau.domain.errors import NotFound
from moncreneau.events.schemas import Event, EventPage, EventQuery
from moncreneau.fields import is_public_id
from moncreneau.models import EventRecord
from moncreneau.outbox import store
from moncreneau.pagination import Page, decode_cursor
from moncreneau.web import organization_id, page_response, session
from moncreneau.webhooks.payloads import envelope_v1

blp = Blueprint("events", __name__, url_prefix="/api/v1/events", description="Events")


@blp.route("")
class Events(MethodView):
    @blp.arguments(EventQuery, location="query")
    @blp.response(200, EventPage, example=examples.EVENT_PAGE)
    def get(self, args: dict[str, Any]) -> Any:
        """List events, oldest first

        Resume after the last event you processed with `cursor`: events appear in the order
        they were committed, and a later page never misses one committed meanwhile.
        """
        after = decode_cursor("events", args["cursor"], 2**63 - 1) if args["cursor"] else 0
        limit = args["limit"]
        types = [args["type"]] if args.get("type") else None
        rows = store.read_after(
            session(), after, limit + 1, organization_id=organization_id(), types=types
        )
        items = [envelope_v1(r) for r in rows]
        return page_response(Page.of(rows, limit, "events", "position", items))


@blp.route("/<string:event_id>")
class EventById(MethodView):
    @blp.response(200, Event, example=examples.CREATED_EVENT)
    def get(self, event_id: str) -> Any:
        """Get an event"""
        record = is_public_id(event_id, "evt") and session().scalar(
            select(EventRecord).where(
                EventRecord.id == event_id, EventRecord.organization_id == organization_id()
            )
        )
        if not record:
            raise NotFound(f"No event with id {event_id!r}.")
        return envelope_v1(record)
