"""/api/v1/departments."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView
from flask_smorest import Blueprint

from moncreneau.api import examples
from moncreneau.api.idempotency import DOC as IDEMPOTENCY_DOC
from moncreneau.api.idempotency import idempotent
from moncreneau.api.web import organization_id, page_args, page_response, session
from moncreneau.departments import service
from moncreneau.departments.schemas import Department, DepartmentCreate, DepartmentPage

blp = Blueprint(
    "departments", __name__, url_prefix="/api/v1/departments", description="Departments"
)


@blp.route("")
class Departments(MethodView):
    @blp.arguments(page_args("departments")(), location="query")
    @blp.response(200, DepartmentPage, example=examples.DEPARTMENT_PAGE)
    def get(self, args: dict[str, Any]) -> Any:
        """List departments"""
        page = service.list_page(session(), organization_id(), args["limit"], args["cursor"])
        return page_response(page)

    @idempotent
    @blp.doc(**IDEMPOTENCY_DOC)
    @blp.arguments(DepartmentCreate(), example=examples.DEPARTMENT_CREATE)
    @blp.response(201, Department, example=examples.DEPARTMENT)
    def post(self, body: dict[str, Any]) -> Any:
        """Create a department"""
        return service.create(session(), organization_id(), service.NewDepartment(**body))


@blp.route("/<id:department_id>")
class DepartmentById(MethodView):
    @blp.response(200, Department, example=examples.DEPARTMENT)
    def get(self, department_id: int) -> Any:
        """Get a department"""
        return service.get(session(), organization_id(), department_id)
