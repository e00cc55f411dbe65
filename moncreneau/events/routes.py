"""/api/v1/events: the organization's events in commit order."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView
from flask_smorest import Blueprint

from moncreneau import examples
from moncreneau.events import service
from moncreneau.events.schemas import Event, EventPage, EventQuery
from moncreneau.web import organization_id, page_response, runtime, session

blp = Blueprint("events", __name__, url_prefix="/api/v1/events", description="Events")


@blp.route("")
class Events(MethodView):
    @blp.arguments(EventQuery(), location="query")
    @blp.response(200, EventPage, example=examples.EVENT_PAGE)
    def get(self, args: dict[str, Any]) -> Any:
        """List events, oldest first

        Resume after the last event you processed with `cursor`: events appear in the order
        they were committed, and a later page never misses one committed meanwhile.
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
