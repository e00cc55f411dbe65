"""/api/v1/portal-links: one-time links that open the integrator portal for the caller."""

from __future__ import annotations

from typing import Any

import marshmallow as ma
from flask import request
from flask.views import MethodView
from flask_smorest import Blueprint

from moncreneau.api.fields import StrictBoolean, StrictInteger
from moncreneau.api.idempotency import DOC as IDEMPOTENCY_DOC
from moncreneau.api.idempotency import idempotent
from moncreneau.api.web import organization_id, runtime, session
from moncreneau.clock import iso_utc, utcnow
from moncreneau.portal import links

blp = Blueprint(
    "portal_links", __name__, url_prefix="/api/v1/portal-links", description="Portal links"
)

LINK_CREATE = {"expiresInMinutes": 60, "readOnly": False}
LINK = {
    "url": "https://moncreneau.example.org/portal/open/mcp_Xq3v9d2Lr0bS1kPz7yWm4aHn6tUe8cJf5oGi2wRlY0s",
    "expiresAt": "2026-01-15T11:00:00Z",
    "readOnly": False,
}


class PortalLinkCreate(ma.Schema):
    expiresInMinutes = StrictInteger(
        load_default=60,
        validate=ma.validate.Range(min=links.MIN_MINUTES, max=links.MAX_MINUTES),
        metadata={"description": "How long the link and its session last: 1 to 10080 (a week)."},
    )
    readOnly = StrictBoolean(
        load_default=False,
        metadata={"description": "`true`: the portal shows everything and changes nothing."},
    )


class PortalLink(ma.Schema):
    url = ma.fields.String(
        required=True,
        metadata={
            "description": "Opens the portal once; the browser session lasts until expiresAt."
        },
    )
    expiresAt = ma.fields.String(required=True, metadata={"format": "date-time"})
    readOnly = ma.fields.Boolean(required=True)


def portal_base() -> str:
    """Where people reach this server: the setting, else the address this call came to."""
    return runtime().settings.public_url or request.host_url.rstrip("/")


@blp.route("")
class PortalLinks(MethodView):
    @idempotent
    @blp.doc(**IDEMPOTENCY_DOC)
    @blp.arguments(PortalLinkCreate(), example=LINK_CREATE)
    @blp.response(201, PortalLink, example=LINK)
    def post(self, body: dict[str, Any]) -> Any:
        """Create a link to the integrator portal

        Hand the `url` to whoever receives your webhooks: it opens the portal for your
        organization once, and the browser session it starts lasts until `expiresAt`.
        A `readOnly` link lets them see everything and change nothing.
        """
        issued = links.issue(
            session(), organization_id(), body["expiresInMinutes"], body["readOnly"], utcnow()
        )
        return {
            "url": portal_base() + links.OPEN_PATH + issued.token,
            "expiresAt": iso_utc(issued.expires_at),
            "readOnly": body["readOnly"],
        }
