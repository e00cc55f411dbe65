"""Schemathesis against the committed spec: every default check, valid and invalid data, links."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from flask import Flask
from hypothesis import HealthCheck, settings
from hypothesis.stateful import run_state_machine_as_test
from schemathesis.config import SchemathesisConfig
from sqlalchemy import select

from moncreneau.app import create_app
from moncreneau.db import make_session_factory
from moncreneau.models import ApiKey
from tests import services
from tests.conftest import make_settings, new_organization

SPEC_FILE = Path(__file__).resolve().parents[2] / "openapi" / "openapi.json"
SPEC: dict[str, Any] = json.loads(SPEC_FILE.read_text())
# Known before the spec is loaded, so that schemathesis itself sends, omits and garbles it.
API_KEY = "mck_fuzzfuzz_" + "k" * 32
SEED = 20260201
MAX_EXAMPLES = 25
STATEFUL_SCENARIOS = 10
STATEFUL_STEPS = 12

# Well-formed requests that the state of the organization refuses, each documented on its
# operation: JSON Schema cannot say "a department that exists", "a start on that department's
# slot grid", "a key not used before with another body" or "a zone of the tz database".
# Schemathesis counts a 422 or a 412 to valid data as a finding, so the operations below
# expect them, and `test_the_api_conforms_to_its_spec` then insists that such a 422 names one
# of these fields.
BOOKING = {"departmentId", "dateTime"}
IDEMPOTENCY = {"Idempotency-Key"}
BUSINESS_RULES: dict[str, set[str]] = {
    **{f"POST {path}": IDEMPOTENCY for path, item in SPEC["paths"].items() if "post" in item},
    # The tz database's names: a list that grows with each tzdata release, so not an enum.
    "POST /api/v1/departments": {"timezone"} | IDEMPOTENCY,
    "POST /api/v1/appointments": BOOKING | IDEMPOTENCY,
    "PATCH /api/v1/appointments/{appointment_id}": {"dateTime"},
    "POST /api/v1/webhooks/{webhook_id}/replay": {"to"} | IDEMPOTENCY,
}
DEFAULT_ACCEPTED = ["2xx", "3xx", "401", "403", "404", "409", "429", "5xx"]


def _documented(name: str, status: str) -> bool:
    method, path = name.split(" ", 1)
    return status in SPEC["paths"][path][method.lower()]["responses"]


def _expected_statuses() -> list[dict[str, Any]]:
    """Per operation: the documented 412 of `If-Match`, and 422 where a business rule is."""
    operations = []
    for path, item in SPEC["paths"].items():
        for method in ("get", "post", "patch", "delete"):
            name = f"{method.upper()} {path}"
            if method not in item:
                continue
            extra = [s for s in ("412",) if _documented(name, s)]
            if name in BUSINESS_RULES:
                assert _documented(name, "422"), name
                extra.append("422")
            if extra:
                operations.append(
                    {
                        "include-name": name,
                        "checks": {
                            "positive_data_acceptance": {
                                "expected-statuses": DEFAULT_ACCEPTED + extra
                            }
                        },
                    }
                )
    return operations


CONFIG = SchemathesisConfig.from_dict(
    {
        "seed": SEED,
        "base-url": "http://localhost",
        "auth": {"openapi": {"ApiKeyAuth": {"api_key": API_KEY}}},
        "generation": {"mode": "all", "max-examples": MAX_EXAMPLES, "deterministic": True},
        # Date-times carry both `format` and a year `pattern`: most drawn values are filtered.
        "suppress-health-check": ["filter_too_much", "too_slow"],
        "operations": _expected_statuses(),
    }
)


class _App:
    """The WSGI app schemathesis calls; the fixture plugs in one per test process."""

    app: Callable[..., Any] | None = None

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        assert self.app is not None, "the fuzzed_app fixture did not run"
        return self.app(environ, start_response)


TARGET = _App()
schema = schemathesis.openapi.from_path(SPEC_FILE, config=CONFIG)
schema.app = TARGET


@contextmanager
def _app_on_a_database_of_its_own() -> Iterator[Flask]:
    """The app on a PostgreSQL database of its own, whatever the fuzzer leaves behind in it."""
    with services.throwaway_database("moncreneau_fuzz") as url:
        # The stateful run creates webhooks by the hundred: the cap would end its links early.
        app = create_app(make_settings(url, max_webhooks_per_organization=100_000))
        organization = new_organization(app)["id"]
        with make_session_factory(app.extensions["moncreneau"].sessions.kw["bind"])() as db:
            key = db.scalars(select(ApiKey).where(ApiKey.organization_id == organization)).one()
            key.prefix = API_KEY.rsplit("_", 1)[0]
            key.key_hash = hashlib.sha256(API_KEY.encode()).hexdigest()
            db.commit()
        # The module's app comes back after a test's own (tests may run in any order).
        previous, TARGET.app = TARGET.app, app
        yield app
        TARGET.app = previous
        app.extensions["moncreneau"].sessions.kw["bind"].dispose()


@pytest.fixture(scope="module")
def fuzzed_app() -> Iterator[Flask]:
    with _app_on_a_database_of_its_own() as app:
        yield app


@pytest.fixture
def empty_app() -> Iterator[Flask]:
    """For the stateful run: replaying a scenario meets the state it met the first time
    only if what other tests left behind (which of them ran first in this process) is
    not there."""
    with _app_on_a_database_of_its_own() as app:
        yield app


def _headers_fit_the_spec(case: Any) -> bool:
    """Whether every documented header sent matches its `pattern`.

    The coverage phase fills an optional header whose pattern it cannot satisfy with `0` and
    still labels the request valid; such a request is not, and a 422 is the right answer.
    """
    operation = SPEC["paths"][case.path][case.method.lower()]
    for parameter in operation.get("parameters", []):
        value = (case.headers or {}).get(parameter["name"])
        pattern = parameter["schema"].get("pattern")
        header = parameter["in"] == "header" and value is not None
        if header and pattern and re.search(pattern, value) is None:
            return False
    return True


def _refused_by_a_business_rule(case: Any, response: Any) -> None:
    if response.status_code != 422 or case.meta is None:
        return
    if not case.meta.generation.mode.is_positive or not _headers_fit_the_spec(case):
        return
    fields = set(response.json().get("errors", {}))
    allowed = BUSINESS_RULES.get(f"{case.method.upper()} {case.path}", set())
    assert fields and fields <= allowed, (
        f"valid data refused: {case.method} {case.formatted_path} -> {response.text}"
    )


@schema.parametrize()
def test_the_api_conforms_to_its_spec(case: Any, fuzzed_app: Flask) -> None:
    response = case.call_and_validate()
    _refused_by_a_business_rule(case, response)


def test_linked_calls_conform_to_the_spec(empty_app: Flask) -> None:
    """Create, then follow the spec's links: read, change, move through the lifecycle, delete."""

    class Machine(schema.as_state_machine()):  # type: ignore[misc]
        def after_call(self, response: Any, case: Any) -> None:
            super().after_call(response, case)
            _refused_by_a_business_rule(case, response)

    run_state_machine_as_test(
        Machine,
        settings=settings(
            max_examples=STATEFUL_SCENARIOS,
            stateful_step_count=STATEFUL_STEPS,
            derandomize=True,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
        ),
    )
