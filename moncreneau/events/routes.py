"""/api/v1/events: the organization's events in commit order."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView
from flask_smorest import Blueprint

from moncreneau.api import examples
from moncreneau.api.web import organization_id, page_response, runtime, session
from moncreneau.events import catalog, service
from moncreneau.events.schemas import Event, EventPage, EventQuery, EventTypePage

blp = Blueprint("events", __name__, url_prefix="/api/v1/events", description="Events")
types_blp = Blueprint(
    "event_types", __name__, url_prefix="/api/v1/event-types", description="Event types"
)


@blp.route("")
class Events(MethodView):
    @blp.arguments(EventQuery(), location="query")
    @blp.response(200, EventPage, example=examples.EVENT_PAGE)
    def get(self, args: dict[str, Any]) -> Any:
        """List events, oldest first

        Resume after the last event you processed with `cursor`: events appear in the log's
        one order, and a later page never misses one committed meanwhile.
        """
        page = service.list_page(
            session(),
            organization_id(),
            args["limit"],
            args["cursor"],
            args.get("type"),
            vault=runtime().vault,
        )
        return page_response(page)


@blp.route("/<string:event_id>")
class EventById(MethodView):
    @blp.response(200, Event, example=examples.CREATED_EVENT)
    def get(self, event_id: str) -> Any:
        """Get an event"""
        return service.get(session(), organization_id(), event_id, vault=runtime().vault)


@types_blp.route("")
class EventTypes(MethodView):
    @types_blp.response(200, EventTypePage, example=catalog.first_page_example())
    def get(self) -> Any:
        """List event types, with a JSON Schema and an example per payload version

        Every type there is, in one page. Each example is rendered by the code that renders
        deliveries, and every delivery validates against its version's schema.
        """
        return {"data": catalog.catalog(), "nextCursor": None, "hasMore": False}
