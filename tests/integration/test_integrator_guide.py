"""The integrators' guide keeps its word: its snippets run and its examples are the code's."""

from __future__ import annotations

import base64
import inspect
import json
import os
import re
import runpy
import shutil
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import standardwebhooks
import urllib3
from sqlalchemy import select
from werkzeug.serving import make_server

from moncreneau import clock
from moncreneau.app import create_app
from moncreneau.auth import keys
from moncreneau.config import DEFAULT_RETRY_SCHEDULE, Settings
from moncreneau.db import make_engine
from moncreneau.delivery import attempts, dispatcher, schedule, sender, signing
from moncreneau.delivery import recorder as recorder_module
from moncreneau.delivery import store as deliveries
from moncreneau.domain.events import EVENT_TYPES as TYPES
from moncreneau.models import Delivery, EventRecord
from moncreneau.ops.housekeeping import keep_house
from moncreneau.ops.migrate import upgrade
from moncreneau.outbox import payloads
from moncreneau.outbox.relay import relay_once
from moncreneau.personal import Revealed, reveal
from moncreneau.webhooks import deliveries as delivery_log
from tests import services
from tests.conftest import Api

ROOT = Path(__file__).resolve().parents[2]
# The README's "For integrators" section.
GUIDE = ROOT / "README.md"
# Set to 1 to rewrite the guide's example payloads from the code, then review the diff.
UPDATE = os.environ.get("UPDATE_GUIDE_EXAMPLES") == "1"

SNIPPET = re.compile(r"<!-- test: ([\w-]+) -->\n```(\w+)\n(.*?)```", re.S)
EXAMPLE = re.compile(
    r"(<!-- example: ([\w.]+) (\d+\.\d+)(?: (thin))? -->\n```json\n)(.*?)(```)", re.S
)
ANSWERS_TABLE = re.compile(r"<!-- test: receiver-answers -->\n((?:\|.*\n)+)")

SECRET = "whsec_" + base64.b64encode(bytes(range(32))).decode()
OLD_SECRET = "whsec_" + base64.b64encode(bytes(range(100, 132))).decode()
OTHER_SECRET = "whsec_" + base64.b64encode(b"\x07" * 32).decode()
EVENT = {
    "id": "evt_01kf0hp0pa1tzr9pkksdd997vw",
    "type": "appointment.created",
    "created": "2026-02-01T09:00:03Z",
    "version": "2.0",
    "data": {"object": {"id": 123, "name": "Zoé Lefèvre", "status": "pending", "version": 1}},
}
# Compact and UTF-8, as MonCréneau sends it; the non-ASCII name checks the bytes are hashed.
BODY = json.dumps(EVENT, separators=(",", ":"), ensure_ascii=False).encode()
# Genuine too, but not as JSON libraries write it back: catches a verifier that re-encodes.
SPACED = json.dumps(EVENT, indent=1).encode() + b"\n"
TAMPERED = BODY.replace(b'"id":123', b'"id":124')


def guide() -> str:
    return GUIDE.read_text(encoding="utf-8")


def snippet(name: str) -> str:
    found = [code for marker, _lang, code in SNIPPET.findall(guide()) if marker == name]
    assert len(found) == 1, f"{GUIDE.name} should hold one block marked <!-- test: {name} -->"
    return found[0]


def save_snippet(name: str, directory: Path, filename: str) -> Path:
    path = directory / filename
    path.write_text(snippet(name), encoding="utf-8")
    return path


def require(tool: str) -> str:
    """The tool's path; a loud skip without it, a failure under CI=true."""
    path = shutil.which(tool)
    if path is None:
        services.unavailable(tool, "not found on PATH")
    assert path is not None
    return path


def delivery(body: bytes, *secrets: str, timestamp: int | None = None) -> dict[str, str]:
    """The headers of one attempt, made by the dispatcher itself."""
    attempt = deliveries.Claimed(
        seq=1,
        id="msg_01kf0hp0pvjxgxejza328gjg39",
        subscription_id=1,
        event_id=EVENT["id"],
        event_type=EVENT["type"],
        payload_version=EVENT["version"],
        body=body,
        attempt=1,
        attempt_budget=10,
        locked_until=clock.now() + timedelta(minutes=1),
        secrets=secrets,
    )
    return attempts.request_headers(attempt, int(time.time()) if timestamp is None else timestamp)


def run(
    command: list[str], secrets: list[str], cwd: Path, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MONCRENEAU_WEBHOOK_SECRET": ",".join(secrets)}
    return subprocess.run(
        command, capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout, check=False
    )


# Node.js


NODE_SNIPPETS = {"node-hmac": "verify-moncreneau.js", "node-standard": "verify-standard.js"}


@pytest.fixture(params=sorted(NODE_SNIPPETS))
def node_verifier(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    """Runs one Node.js snippet on the command line, as the guide shows, on a saved delivery."""
    node = require("node")
    script = save_snippet(request.param, tmp_path, NODE_SNIPPETS[request.param])

    def verify(
        body: bytes, headers: dict[str, str], secrets: list[str]
    ) -> subprocess.CompletedProcess[str]:
        saved = tmp_path / "body.json"
        saved.write_bytes(body)
        header_args = [f"{name}: {value}" for name, value in headers.items()]
        return run([node, str(script), str(saved), *header_args], secrets, tmp_path)

    return verify


@pytest.mark.parametrize("body", [BODY, SPACED], ids=["compact", "spaced"])
def test_the_node_snippets_accept_a_genuine_delivery(node_verifier: Any, body: bytes) -> None:
    done = node_verifier(body, delivery(body, SECRET), [SECRET])

    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"ok {EVENT['type']} {EVENT['id']}"


def test_the_node_snippets_refuse_a_tampered_body(node_verifier: Any) -> None:
    done = node_verifier(TAMPERED, delivery(BODY, SECRET), [SECRET])

    assert done.returncode != 0
    assert "refused" in done.stderr
    assert "ok" not in done.stdout


@pytest.mark.parametrize(
    ("signed_with", "held"),
    [
        ((SECRET, OLD_SECRET), [OLD_SECRET]),
        ((SECRET, OLD_SECRET), [SECRET]),
        ((OLD_SECRET,), [SECRET, OLD_SECRET]),
    ],
    ids=["old-secret-held", "new-secret-held", "both-held"],
)
def test_the_node_snippets_accept_either_secret_during_a_rotation(
    node_verifier: Any, signed_with: tuple[str, ...], held: list[str]
) -> None:
    done = node_verifier(BODY, delivery(BODY, *signed_with), held)

    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("ok ")


def test_the_node_snippets_refuse_another_secret_and_a_stale_timestamp(node_verifier: Any) -> None:
    rotated = delivery(BODY, SECRET, OLD_SECRET)
    stale = delivery(BODY, SECRET, timestamp=int(time.time()) - 301)

    assert node_verifier(BODY, rotated, [OTHER_SECRET]).returncode != 0
    assert node_verifier(BODY, stale, [SECRET]).returncode != 0


@pytest.fixture
def node_server(tmp_path: Path) -> Iterator[str]:
    """The guide's node:http endpoint, on a free port, holding SECRET."""
    node = require("node")
    save_snippet("node-hmac", tmp_path, "verify-moncreneau.js")
    server = save_snippet("node-server", tmp_path, "server.js")
    env = {**os.environ, "MONCRENEAU_WEBHOOK_SECRET": SECRET, "PORT": "0"}
    process = subprocess.Popen(
        [node, str(server)], cwd=tmp_path, env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("listening on port "), line
        yield f"http://127.0.0.1:{line.split()[-1]}/webhooks/moncreneau"
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_the_node_server_answers_200_to_a_genuine_delivery_and_401_to_a_tampered_one(
    node_server: str,
) -> None:
    http = urllib3.PoolManager(retries=False)
    headers = delivery(BODY, SECRET)

    genuine = http.request("POST", node_server, body=BODY, headers=headers)
    tampered = http.request("POST", node_server, body=TAMPERED, headers=headers)

    assert genuine.status == 200
    assert json.loads(genuine.data) == {"received": EVENT["id"]}
    assert tampered.status == 401
    assert "no X-Moncreneau-Signature matches" in json.loads(tampered.data)["error"]


# The command line


def test_the_openssl_snippet_matches_a_saved_body_and_reports_a_tampered_one(
    tmp_path: Path,
) -> None:
    bash = require("bash")
    require("openssl")
    script = save_snippet("openssl-verify", tmp_path, "verify-delivery.sh")
    saved = tmp_path / "body.json"

    def check(body: bytes, header: str, secret: str) -> subprocess.CompletedProcess[str]:
        saved.write_bytes(body)
        return run([bash, str(script), str(saved), header], [secret], tmp_path)

    signed = delivery(BODY, SECRET)["X-Moncreneau-Signature"]
    rotated = delivery(BODY, SECRET, OLD_SECRET)["X-Moncreneau-Signature"]
    genuine = check(BODY, signed, SECRET)
    assert (genuine.returncode, genuine.stdout) == (0, "ok\n"), genuine.stderr
    spaced = delivery(SPACED, SECRET)["X-Moncreneau-Signature"]
    assert check(SPACED, spaced, SECRET).returncode == 0
    assert check(BODY, rotated, OLD_SECRET).returncode == 0
    assert check(BODY, rotated, SECRET).returncode == 0
    tampered = check(TAMPERED, signed, SECRET)
    assert tampered.returncode == 1
    assert tampered.stderr.startswith("mismatch: this body and secret give sha256=")
    assert check(BODY, signed, OTHER_SECRET).returncode == 1


def python_receiver(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, secrets: str) -> Any:
    monkeypatch.setenv("MONCRENEAU_WEBHOOK_SECRET", secrets)
    path = save_snippet("python-receiver", tmp_path, "receiver.py")
    return runpy.run_path(str(path), run_name="guide_receiver")["app"]


@pytest.fixture
def live_python_receiver(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[str]:
    """The guide's Flask endpoint on a real loopback server, holding SECRET."""
    server = make_server("127.0.0.1", 0, python_receiver(monkeypatch, tmp_path, SECRET))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/webhooks/moncreneau"
    server.shutdown()
    thread.join(timeout=5)


def test_the_curl_snippet_sends_a_delivery_that_verifies_with_both_schemes(
    live_python_receiver: str, tmp_path: Path
) -> None:
    bash = require("bash")
    require("curl")
    require("openssl")
    script = save_snippet("curl-send", tmp_path, "send-delivery.sh")
    saved = tmp_path / "body.json"
    saved.write_bytes(BODY)

    accepted = run([bash, str(script), str(saved), live_python_receiver], [SECRET], tmp_path)
    refused = run([bash, str(script), str(saved), live_python_receiver], [OTHER_SECRET], tmp_path)

    assert accepted.returncode == 0, accepted.stderr
    assert json.loads(accepted.stdout) == {"received": EVENT["id"]}
    assert refused.returncode != 0
    # Both schemes were sent and checked: the Standard Webhooks one is checked first.
    assert "no signature matches: nothing in webhook-signature" in refused.stdout


def test_the_curl_snippet_signs_as_moncreneau_does(tmp_path: Path) -> None:
    """Every header it sends is the one the dispatcher would send for that attempt."""
    bash = require("bash")
    require("openssl")
    script = snippet("curl-send").replace("curl -sS", "printf '%s\\n'", 1)
    (tmp_path / "print-delivery.sh").write_text(script, encoding="utf-8")
    (tmp_path / "body.json").write_bytes(BODY)

    done = run([bash, "print-delivery.sh", "body.json", "URL"], [SECRET], tmp_path)

    assert done.returncode == 0, done.stderr
    sent = dict(
        arg.split(": ", 1) for arg in done.stdout.splitlines() if re.match(r"^[\w-]+: ", arg)
    )
    headers = {k: v for k, v in delivery(BODY, SECRET).items() if k != "User-Agent"}
    attempt = sent["X-Moncreneau-Delivery"]
    expected = signing.signature_headers([SECRET], attempt, int(sent["webhook-timestamp"]), BODY)
    assert sent.keys() == headers.keys()
    assert sent["X-Moncreneau-Event"] == EVENT["type"]
    assert sent["X-Webhook-Version"] == EVENT["version"]
    assert sent["webhook-id"] == attempt
    for name, value in expected.items():
        assert sent[name] == value, name


# Python


def test_the_python_receiver_snippet_accepts_genuine_deliveries_and_refuses_the_rest(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    client = python_receiver(monkeypatch, tmp_path, SECRET).test_client()
    path = "/webhooks/moncreneau"

    genuine = client.post(path, data=BODY, headers=delivery(BODY, SECRET))
    spaced = client.post(path, data=SPACED, headers=delivery(SPACED, SECRET))
    rotated = client.post(path, data=BODY, headers=delivery(BODY, SECRET, OLD_SECRET))
    tampered = client.post(path, data=TAMPERED, headers=delivery(BODY, SECRET))
    foreign = client.post(path, data=BODY, headers=delivery(BODY, OTHER_SECRET))
    not_json = client.post(path, data=b"[]", headers=delivery(b"[]", SECRET))

    assert (genuine.status_code, genuine.json) == (200, {"received": EVENT["id"]})
    assert spaced.status_code == 200
    assert rotated.status_code == 200
    assert tampered.status_code == 401
    assert foreign.status_code == 401
    assert not_json.status_code == 400


def test_the_python_receiver_snippet_accepts_either_secret_it_holds(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    client = python_receiver(monkeypatch, tmp_path, f"{SECRET},{OLD_SECRET}").test_client()

    response = client.post("/webhooks/moncreneau", data=BODY, headers=delivery(BODY, OLD_SECRET))

    assert response.status_code == 200


def test_the_standardwebhooks_snippet_verifies_with_any_secret_held(tmp_path: Path) -> None:
    path = save_snippet("python-standardwebhooks", tmp_path, "verify_standard.py")
    verify_delivery = runpy.run_path(str(path))["verify_delivery"]

    assert verify_delivery(BODY, delivery(BODY, SECRET), [SECRET]) == EVENT
    assert verify_delivery(SPACED, delivery(SPACED, SECRET), [SECRET]) == EVENT
    assert verify_delivery(BODY, delivery(BODY, SECRET, OLD_SECRET), [OLD_SECRET]) == EVENT
    assert verify_delivery(BODY, delivery(BODY, OLD_SECRET), [SECRET, OLD_SECRET]) == EVENT
    with pytest.raises(standardwebhooks.WebhookVerificationError):
        verify_delivery(TAMPERED, delivery(BODY, SECRET), [SECRET])
    with pytest.raises(standardwebhooks.WebhookVerificationError, match="too old"):
        verify_delivery(BODY, delivery(BODY, SECRET, timestamp=int(time.time()) - 400), [SECRET])
    with pytest.raises(standardwebhooks.WebhookVerificationError):
        verify_delivery(BODY, delivery(BODY, SECRET), [OTHER_SECRET])


def test_the_ordering_snippet_keeps_the_newest_version_of_an_appointment(tmp_path: Path) -> None:
    path = save_snippet("python-ordering", tmp_path, "ordering.py")
    apply = runpy.run_path(str(path))["apply"]
    connection = sqlite3.connect(":memory:")
    connection.execute(
        "CREATE TABLE appointments"
        " (id INTEGER PRIMARY KEY, status TEXT, date_time TEXT, version INTEGER)"
    )

    def event(version: int, status: str) -> dict[str, Any]:
        appointment = {"id": 1, "status": status, "dateTime": "2027-03-15T10:00:00+01:00"}
        return {"data": {"object": {**appointment, "version": version}}}

    for version, status in [(2, "validated"), (1, "pending"), (3, "completed"), (2, "validated")]:
        apply(connection, event(version, status))

    assert connection.execute("SELECT status, version FROM appointments").fetchall() == [
        ("completed", 3)
    ]


# What an answer does


def _response(code: int | None, error: str | None = None, retry_after: str | None = None) -> Any:
    return sender.Response(code, error, "", retry_after, 25)


# Each row of the guide's table, and answers that fall under it.
ANSWERS: dict[str, list[sender.Response]] = {
    "`2xx` within 10 s": [_response(200), _response(202), _response(204)],
    "`3xx`": [
        _response(code, "redirect to https://example.org/new (not followed)")
        for code in (301, 302, 304, 307, 308)
    ],
    "`4xx` (`400`, `401`, `404`, `422`, ...)": [
        _response(code, f"HTTP {code}") for code in (400, 401, 403, 404, 405, 409, 422)
    ],
    "`410 Gone`": [_response(410, "HTTP 410")],
    "`429` or `503` with `Retry-After`": [
        _response(429, "HTTP 429", "120"),
        _response(503, "HTTP 503", "120"),
    ],
    "`5xx`": [_response(code, f"HTTP {code}") for code in (500, 502, 503, 504)],
    "no answer within 10 s": [
        _response(None, "no response within 10s"),
        _response(None, "connection timed out"),
    ],
    "connection refused, DNS failure": [
        _response(None, "connection refused"),
        _response(None, "DNS lookup failed"),
    ],
}


def answers_table() -> dict[str, str]:
    """First column -> the status in the second, from the guide's table of answers."""
    found = ANSWERS_TABLE.search(guide())
    assert found, f"{GUIDE.name} has no table marked <!-- test: receiver-answers -->"
    rows = [
        [cell.strip() for cell in line.strip().strip("|").split("|")]
        for line in found.group(1).splitlines()[2:]
    ]
    return {row[0]: row[1].strip("`") for row in rows}


def outcome_of(response: sender.Response, attempt: int = 1) -> deliveries.Settlement:
    settings = Settings()
    claimed = deliveries.Claimed(
        seq=1,
        id="msg_1",
        subscription_id=1,
        event_id="evt_1",
        event_type="appointment.created",
        payload_version="2.0",
        body=BODY,
        attempt=attempt,
        attempt_budget=settings.attempt_budget,
        locked_until=clock.now() + timedelta(minutes=1),
    )
    return attempts.outcome(claimed, response, clock.now(), settings)


def test_the_table_of_answers_says_what_the_dispatcher_does() -> None:
    table = answers_table()

    assert table.keys() == ANSWERS.keys()
    for row, responses in ANSWERS.items():
        for response in responses:
            assert outcome_of(response).status == table[row], (row, response)


def test_retry_after_is_honoured_on_429_and_503_only_and_capped_at_a_day() -> None:
    def delay(response: sender.Response) -> float:
        settlement = outcome_of(response)
        assert settlement.next_attempt_at is not None
        return (settlement.next_attempt_at - clock.now()).total_seconds()

    assert 119 < delay(_response(429, "HTTP 429", "120")) <= 120
    assert 119 < delay(_response(503, "HTTP 503", "120")) <= 120
    assert delay(_response(500, "HTTP 500", "120")) < 10
    assert delay(_response(429, "HTTP 429")) < 10
    assert 86399 < delay(_response(503, "HTTP 503", "999999")) <= 86400


def test_the_last_attempt_is_dead_whatever_the_answer() -> None:
    last = Settings().attempt_budget

    assert outcome_of(_response(500, "HTTP 500"), attempt=last).status == deliveries.DEAD
    assert outcome_of(_response(None, "connection refused"), attempt=last).status == deliveries.DEAD
    assert outcome_of(_response(200), attempt=last).status == deliveries.SUCCEEDED


def _duration(seconds: float) -> str:
    for unit, size in (("h", 3600), ("min", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g} {unit}"
    return f"{seconds:g} s"


def test_the_numbers_the_guide_quotes_are_those_of_the_code() -> None:
    text = " ".join(guide().split())
    settings = Settings()
    delays = [_duration(s) for s in DEFAULT_RETRY_SCHEDULE]
    quoted = [
        f"{', '.join(delays[:-1])} and {delays[-1]} later",
        f"(each ±{schedule.JITTER * 100:g} %",
        f"capped at {_duration(schedule.MAX_RETRY_AFTER)})",
        f"{signing.DEFAULT_TOLERANCE} seconds",
        f"`2xx` within {settings.delivery_timeout:g} s",
        f"no response within {settings.delivery_timeout:g}s",
        f"first {sender.EXCERPT_BYTES} bytes",
        f"halved, down to {dispatcher.MIN_ENDPOINT_LIMIT}",
        f"`previousSecretExpiresAt` ({settings.secret_grace_hours:g} h)",
        f"{delivery_log.MAX_REPLAY} per call",
        f"Every delivery failed for {settings.disable_after_hours:g} hours.",
        "The endpoint answered 410 Gone.",
    ]

    assert settings.attempt_budget == 10 and "ten attempts" in text
    assert settings.disable_after_hours == 5 * 24 and "five days" in text
    for phrase in quoted:
        assert phrase in text, phrase
    source = inspect.getsource(recorder_module)
    assert "The endpoint answered 410 Gone." in source
    assert '"Every delivery failed for {' in source


# Every event, in each version


Key = tuple[str, str, str]  # (type, version, style)


def expected_examples() -> set[Key]:
    full = {(kind, version, payloads.FULL) for kind in TYPES for version in payloads.VERSIONS}
    return full | {("appointment.updated", payloads.LATEST, payloads.THIN)}


def _ok(response: Any, status: int) -> Any:
    assert response.status_code == status, response.json
    return response.json


def generate_examples(directory: Path) -> dict[Key, dict[str, Any]]:
    """Every event type through the real services on a new SQLite database, then rendered."""
    url = f"sqlite:///{directory / 'guide.db'}"
    engine = make_engine(url)
    upgrade(engine)
    engine.dispose()
    settings = Settings(
        database_url=url, secret_key="guide-examples-secret-key-000000", allow_private_urls=True
    )
    app = create_app(settings)
    sessions = app.extensions["moncreneau"].sessions
    try:
        with sessions() as db:
            org = keys.create_organization(db, "Clinique Exemple")
            db.commit()
        api = Api(app.test_client(), org["apiKey"])
        department = _ok(
            api.post(
                "/departments",
                {
                    "name": "Radiologie",
                    "timezone": "Europe/Paris",
                    "slotMinutes": 30,
                    "capacity": 2,
                },
            ),
            201,
        )
        hook = _ok(
            api.post(
                "/webhooks",
                {
                    "url": "https://example.org/webhooks/moncreneau",
                    "events": ["*"],
                    "description": "Front desk",
                },
            ),
            201,
        )
        old = _ok(
            api.post(
                "/webhooks",
                {
                    "url": "https://example.org/webhooks/old-endpoint",
                    "events": ["appointment.created"],
                },
            ),
            201,
        )
        first = _ok(
            api.post(
                "/appointments",
                {
                    "departmentId": department["id"],
                    "dateTime": "2027-03-15T10:00:00",
                    "name": "Zoé Lefèvre",
                    "email": "zoe.lefevre@example.org",
                    "phone": "+33 6 12 34 56 78",
                    "notes": "First visit; bring the prescription.",
                },
            ),
            201,
        )
        path = f"/appointments/{first['id']}"
        patch = {"dateTime": "2027-03-15T10:30:00", "phone": "+33 6 98 76 54 32"}
        _ok(api.patch(path, patch), 200)
        _ok(api.post(f"{path}/validate"), 200)
        _ok(api.post(f"{path}/complete"), 200)
        second = _ok(
            api.post(
                "/appointments",
                {
                    "departmentId": department["id"],
                    "dateTime": "2027-03-16T09:00:00",
                    "name": "Louis Martin",
                    "email": "louis.martin@example.org",
                },
            ),
            201,
        )
        cancel = {"reason": "The patient is unwell."}
        _ok(api.post(f"/appointments/{second['id']}/cancel", cancel), 200)
        _ok(api.post(f"/webhooks/{hook['id']}/test"), 202)
        _answer_410(sessions, settings, old["id"])
        vault = app.extensions["moncreneau"].vault
        third = _ok(
            api.post(
                "/appointments",
                {
                    "departmentId": department["id"],
                    "dateTime": "2026-11-02T09:00:00",
                    "name": "Jeanne Petit",
                    "email": "jeanne.petit@example.org",
                },
            ),
            201,
        )
        _ok(api.post(f"/appointments/{third['id']}/validate"), 200)
        _ok(api.post(f"/appointments/{third['id']}/complete"), 200)
        _ok(api.post("/erasures", {"email": "jeanne.petit@example.org"}), 202)
        keep_house(sessions, settings, vault, clock.now())
        with sessions() as db:
            records = list(db.scalars(select(EventRecord).order_by(EventRecord.position)))
            events = reveal(db, vault, records)
    finally:
        app.extensions["moncreneau"].sessions.kw["bind"].dispose()
    first_of_type: dict[str, Revealed] = {}
    for event in events:
        first_of_type.setdefault(event.type, event)
    assert first_of_type.keys() == set(TYPES)
    return {
        (kind, version, style): json.loads(payloads.render(first_of_type[kind], version, style))
        for kind, version, style in expected_examples()
    }


def _answer_410(sessions: Any, settings: Settings, webhook_id: int) -> None:
    """The old endpoint answers 410 to its first delivery: the dispatcher disables it."""
    relay_once(sessions, settings)
    with sessions() as db:
        ids = db.scalars(select(Delivery.id).where(Delivery.subscription_id == webhook_id))
        claimed = deliveries.claim(db, list(ids)[:1], clock.now(), timedelta(minutes=1))
        db.commit()
    assert len(claimed) == 1
    recorder = recorder_module.Recorder(sessions, settings)
    recorder.add(attempts.outcome(claimed[0], _response(410, "HTTP 410"), clock.now(), settings))
    assert recorder.wait_idle(10)


def _pretty(payload: dict[str, Any]) -> str:
    return json.dumps(payload, indent=2, ensure_ascii=False) + "\n"


def documented_examples() -> dict[Key, dict[str, Any]]:
    found: dict[Key, dict[str, Any]] = {}
    for _opening, kind, version, thin, body, _closing in EXAMPLE.findall(guide()):
        key = (kind, version, thin or payloads.FULL)
        assert key not in found, f"{GUIDE.name} shows {key} twice"
        found[key] = json.loads(body)
    return found


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> dict[Key, dict[str, Any]]:
    examples = generate_examples(tmp_path_factory.mktemp("guide"))
    if UPDATE:

        def rewrite(match: re.Match[str]) -> str:
            opening, kind, version, thin, _body, closing = match.groups()
            return opening + _pretty(examples[(kind, version, thin or payloads.FULL)]) + closing

        GUIDE.write_text(EXAMPLE.sub(rewrite, guide()), encoding="utf-8")
    return examples


def shape(value: Any) -> Any:
    """The keys at every level and the type of every value, not the values themselves."""
    if isinstance(value, dict):
        return {key: shape(item) for key, item in value.items()}
    if isinstance(value, list):
        return [shape(item) for item in value]
    return type(value).__name__


def fixed_values(payload: dict[str, Any]) -> dict[str, Any]:
    """What a reader branches on: the same in every run, unlike ids and times."""
    subject = payload["data"]["object"]
    return {
        "type": payload["type"],
        "version": payload["version"],
        "data.object.status": subject.get("status"),
        "data.changedFields": payload["data"].get("changedFields"),
    }


def test_every_event_type_has_an_example_in_each_version_and_one_thin(
    generated: dict[Key, dict[str, Any]],
) -> None:
    assert documented_examples().keys() == expected_examples() == generated.keys()


@pytest.mark.parametrize("key", sorted(expected_examples()), ids="-".join)
def test_each_example_has_the_structure_the_code_renders_today(
    generated: dict[Key, dict[str, Any]], key: Key
) -> None:
    documented = documented_examples().get(key)

    assert documented is not None, f"{GUIDE.name} has no example for {key}"
    assert shape(documented) == shape(generated[key])
    assert fixed_values(documented) == fixed_values(generated[key])
