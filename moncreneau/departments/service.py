"""Creating and reading departments."""

from __future__ import annotations

import importlib.resources
import weakref
import zoneinfo
from dataclasses import dataclass
from functools import cache
from typing import Any

from sqlalchemy import event, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from moncreneau.clock import iso_utc, utcnow
from moncreneau.domain.errors import Invalid, NotFound
from moncreneau.models import Department
from moncreneau.pagination import Page, keyset_page


@cache
def zones() -> frozenset[str]:
    # The IANA list shipped by `tzdata`, not the system folder, which also holds files such
    # as `localtime` and `posixrules` that are no zone names.
    names = importlib.resources.files("tzdata").joinpath("zones").read_text().split()
    return frozenset(names) - {"Factory"}


def zone(name: str) -> zoneinfo.ZoneInfo:
    """The IANA zone called `name`, or an `Invalid` error naming the field."""
    if name not in zones():
        raise Invalid.field("timezone", f"Unknown IANA time zone {name!r}.")
    return zoneinfo.ZoneInfo(name)


@dataclass(frozen=True)
class NewDepartment:
    name: str
    timezone: str
    slot_minutes: int = 30
    capacity: int = 1


def represent(department: Department) -> dict[str, Any]:
    return {
        "id": department.id,
        "name": department.name,
        "timezone": department.timezone,
        "slotMinutes": department.slot_minutes,
        "capacity": department.capacity,
        "createdAt": iso_utc(department.created_at),
        "updatedAt": iso_utc(department.updated_at),
    }


def create(session: Session, organization_id: int, new: NewDepartment) -> dict[str, Any]:
    zone(new.timezone)
    now = utcnow()
    department = Department(
        organization_id=organization_id,
        name=new.name,
        timezone=new.timezone,
        slot_minutes=new.slot_minutes,
        capacity=new.capacity,
        created_at=now,
        updated_at=now,
    )
    session.add(department)
    session.flush()
    return represent(department)


@dataclass(frozen=True)
class Rules:
    """What bookings need of a department."""

    id: int
    organization_id: int
    timezone: str
    slot_minutes: int
    capacity: int


# Departments never change once created: what bookings need is read once per process and
# database, not on every booking. Only what a committed transaction read is kept: a
# department created by a transaction that rolls back leaves its id free for the next one
# (SQLite reuses it).
_RULES: weakref.WeakKeyDictionary[Engine, dict[int, Rules]] = weakref.WeakKeyDictionary()
RULES_KEPT = 10_000
# `session.info` key: rules read in the session's transaction, kept once it commits
_READ = "moncreneau.department_rules"


def rules(session: Session, department_id: int) -> Rules | None:
    """Any organization's department `department_id`, or None if there is none."""
    found = _RULES.get(session.get_bind().engine, {}).get(department_id)
    if found is not None:
        return found
    read: dict[int, Rules] = session.info.setdefault(_READ, {})
    found = read.get(department_id)
    if found is None:
        department = session.get(Department, department_id)
        if department is None:
            return None
        found = read[department_id] = Rules(
            department.id,
            department.organization_id,
            department.timezone,
            department.slot_minutes,
            department.capacity,
        )
    return found


@event.listens_for(Session, "after_commit")
def _keep_rules(session: Session) -> None:
    read = session.info.pop(_READ, None)
    if read:
        known = _RULES.setdefault(session.get_bind().engine, {})
        if len(known) + len(read) > RULES_KEPT:
            known.clear()
        known.update(read)


@event.listens_for(Session, "after_rollback")
def _forget_rules(session: Session) -> None:
    session.info.pop(_READ, None)


def find(session: Session, organization_id: int, department_id: int) -> Department | None:
    department = session.get(Department, department_id)
    if department is None or department.organization_id != organization_id:
        return None
    return department


def get(session: Session, organization_id: int, department_id: int) -> dict[str, Any]:
    department = find(session, organization_id, department_id)
    if department is None:
        raise NotFound(f"No department with id {department_id}.")
    return represent(department)


def list_page(
    session: Session, organization_id: int, limit: int, cursor: str | None
) -> Page[dict[str, Any]]:
    query = select(Department).where(Department.organization_id == organization_id)
    return keyset_page(
        session,
        query,
        Department.id,
        "departments",
        limit,
        cursor,
        lambda rows: [represent(d) for d in rows],
    )
