"""The integrators' receiver: `verify` accepts genuine deliveries only; each event runs once."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy.engine import make_url

from moncreneau import receiver
from moncreneau.delivery import signing
from moncreneau.receiver import (
    Deduplicator,
    MemoryStore,
    SqlStore,
    Store,
    WebhookVerificationError,
    verify,
)
from tests import services
from tests.samples import BODY, EVENT

MSG_ID = "dlv_01jd3k5q8c2v0t7m6x4yb9r1zf"
NOW = 1_767_225_600
# Fixed secrets, so that a failure is reproducible.
OLD_SECRET = "whsec_" + base64.b64encode(bytes(range(32))).decode()
NEW_SECRET = "whsec_" + base64.b64encode(bytes(range(100, 132))).decode()
WRONG_SECRET = "whsec_" + base64.b64encode(b"\x07" * 32).decode()

STANDARD = ("webhook-id", "webhook-timestamp", "webhook-signature")
MONCRENEAU = ("X-Moncreneau-Signature", "X-Moncreneau-Timestamp")


def delivery(
    *secrets: str, body: bytes = BODY, timestamp: int = NOW, keep: tuple[str, ...] = ()
) -> dict[str, str]:
    """The headers MonCréneau sends; with `keep`, only those of one scheme."""
    headers = {
        "Content-Type": "application/json",
        "X-Moncreneau-Event": "appointment.created",
        "X-Moncreneau-Delivery": MSG_ID,
        "X-Moncreneau-Timestamp": str(timestamp),
        **signing.signature_headers(secrets or [OLD_SECRET], MSG_ID, timestamp, body),
    }
    if keep:
        signed = set(STANDARD + MONCRENEAU)
        headers = {k: v for k, v in headers.items() if k not in signed or k in keep}
    return headers


SCHEMES = {"both": (), "standard": STANDARD, "moncreneau": MONCRENEAU}


# verify: genuine deliveries


@pytest.mark.parametrize("keep", SCHEMES.values(), ids=SCHEMES.keys())
def test_a_genuine_delivery_verifies_and_returns_the_event(keep: tuple[str, ...]) -> None:
    assert verify(BODY, delivery(OLD_SECRET, keep=keep), OLD_SECRET, now=NOW) == EVENT


def test_a_moncreneau_signature_made_by_hand_from_the_contract_verifies() -> None:
    digest = hmac.new(OLD_SECRET.encode("utf-8"), BODY, hashlib.sha256).hexdigest()
    headers = {"X-Moncreneau-Signature": f"sha256={digest}", "X-Moncreneau-Timestamp": str(NOW)}

    assert verify(BODY, headers, OLD_SECRET, now=NOW)["id"] == EVENT["id"]


def test_header_names_match_whatever_their_case() -> None:
    shouted = {k.upper(): v for k, v in delivery(OLD_SECRET).items()}
    lowered = {k.lower(): v for k, v in delivery(OLD_SECRET).items()}

    assert verify(BODY, shouted, OLD_SECRET, now=NOW) == EVENT
    assert verify(BODY, lowered, OLD_SECRET, now=NOW) == EVENT


def test_the_current_time_is_used_when_now_is_not_given() -> None:
    headers = delivery(OLD_SECRET, timestamp=int(time.time()))

    assert verify(BODY, headers, OLD_SECRET) == EVENT


@pytest.mark.parametrize("keep", SCHEMES.values(), ids=SCHEMES.keys())
@pytest.mark.parametrize("holder", [OLD_SECRET, NEW_SECRET], ids=["old-secret", "new-secret"])
def test_during_a_rotation_a_delivery_signed_with_two_secrets_verifies_with_either(
    holder: str, keep: tuple[str, ...]
) -> None:
    headers = delivery(NEW_SECRET, OLD_SECRET, keep=keep)

    assert verify(BODY, headers, holder, now=NOW) == EVENT


@pytest.mark.parametrize("keep", SCHEMES.values(), ids=SCHEMES.keys())
@pytest.mark.parametrize("signer", [OLD_SECRET, NEW_SECRET], ids=["old-secret", "new-secret"])
def test_a_receiver_holding_two_secrets_accepts_a_delivery_signed_with_either(
    signer: str, keep: tuple[str, ...]
) -> None:
    headers = delivery(signer, keep=keep)

    assert verify(BODY, headers, [NEW_SECRET, OLD_SECRET], now=NOW) == EVENT
    assert verify(BODY, headers, iter([WRONG_SECRET, signer]), now=NOW) == EVENT


@pytest.mark.parametrize("age", [-300, 0, 300])
def test_a_timestamp_exactly_at_the_tolerance_still_verifies(age: int) -> None:
    assert verify(BODY, delivery(timestamp=NOW - age), OLD_SECRET, now=NOW) == EVENT


def test_the_tolerance_can_be_narrowed() -> None:
    headers = delivery(timestamp=NOW - 10)

    assert verify(BODY, headers, OLD_SECRET, tolerance=10, now=NOW) == EVENT
    with pytest.raises(WebhookVerificationError, match="too old"):
        verify(BODY, headers, OLD_SECRET, tolerance=9, now=NOW)


# verify: each reason for refusing


def refusal(body: bytes, headers: dict[str, str], secret: Any = OLD_SECRET) -> str:
    with pytest.raises(WebhookVerificationError) as caught:
        verify(body, headers, secret, now=NOW)
    assert isinstance(caught.value, ValueError)
    return str(caught.value)


def test_a_delivery_without_any_signature_header_is_refused_for_a_missing_header() -> None:
    headers = {k: v for k, v in delivery().items() if k not in ("webhook-signature", *MONCRENEAU)}

    assert refusal(BODY, headers).startswith("missing header: neither webhook-signature")


@pytest.mark.parametrize(
    ("missing", "keep"),
    [
        ("webhook-id", STANDARD),
        ("webhook-timestamp", STANDARD),
        ("X-Moncreneau-Timestamp", MONCRENEAU),
    ],
)
def test_a_scheme_missing_one_of_its_headers_is_refused_naming_it(
    missing: str, keep: tuple[str, ...]
) -> None:
    headers = delivery(keep=keep)
    del headers[missing]

    assert refusal(BODY, headers) == f"missing header: {missing.lower()}"


@pytest.mark.parametrize("raw", ["soon", "1.5", "-5", " 1767225600", "1_767_225_600", "١٢٣"])
@pytest.mark.parametrize("header", ["webhook-timestamp", "X-Moncreneau-Timestamp"])
def test_a_timestamp_that_is_not_unix_seconds_is_refused_as_bad(header: str, raw: str) -> None:
    headers = delivery()
    headers[header] = raw

    assert refusal(BODY, headers) == (
        f"bad timestamp: {header.lower()} is {raw!r}, not Unix seconds"
    )


@pytest.mark.parametrize("keep", [STANDARD, MONCRENEAU], ids=["standard", "moncreneau"])
def test_a_delivery_older_than_the_tolerance_is_refused_as_too_old(keep: tuple[str, ...]) -> None:
    headers = delivery(timestamp=NOW - 301, keep=keep)

    assert refusal(BODY, headers).startswith("too old:")
    # The same headers verify at the time they were made: only the age is wrong.
    assert verify(BODY, headers, OLD_SECRET, now=NOW - 301) == EVENT


def test_a_delivery_from_beyond_the_tolerance_in_the_future_is_refused() -> None:
    assert refusal(BODY, delivery(timestamp=NOW + 301)).startswith("too far in the future:")


@pytest.mark.parametrize("keep", SCHEMES.values(), ids=SCHEMES.keys())
def test_a_wrong_secret_is_refused_because_no_signature_matches(keep: tuple[str, ...]) -> None:
    message = refusal(BODY, delivery(OLD_SECRET, keep=keep), [WRONG_SECRET])

    assert message.startswith("no signature matches:")


def test_during_a_rotation_a_third_secret_is_still_refused() -> None:
    assert refusal(BODY, delivery(NEW_SECRET, OLD_SECRET), WRONG_SECRET).startswith(
        "no signature matches:"
    )


@pytest.mark.parametrize("position", [0, len(BODY) // 2, len(BODY) - 1])
@pytest.mark.parametrize("keep", SCHEMES.values(), ids=SCHEMES.keys())
def test_changing_one_byte_of_the_body_is_refused(keep: tuple[str, ...], position: int) -> None:
    tampered = bytearray(BODY)
    tampered[position] ^= 0x01

    assert refusal(bytes(tampered), delivery(keep=keep)).startswith("no signature matches:")


@pytest.mark.parametrize(
    ("header", "value"),
    [("webhook-id", "dlv_someone_else"), ("webhook-timestamp", str(NOW - 1))],
)
def test_changing_a_signed_standard_header_is_refused(header: str, value: str) -> None:
    headers = delivery(keep=STANDARD)
    headers[header] = value

    assert refusal(BODY, headers) == (
        "no signature matches: nothing in webhook-signature was made with the secret(s) given"
    )


@pytest.mark.parametrize("broken", ["webhook-signature", "X-Moncreneau-Signature"])
def test_every_scheme_present_must_verify_not_just_one(broken: str) -> None:
    headers = delivery()
    headers[broken] = delivery(WRONG_SECRET)[broken]

    assert broken in refusal(BODY, headers)


@pytest.mark.parametrize("value", ["", "v1,", "sha256=", "v1,é∂ƒ", "sha256=é∂ƒ", "\udcff"])
@pytest.mark.parametrize("header", ["webhook-signature", "X-Moncreneau-Signature"])
def test_an_empty_or_non_ascii_signature_is_refused_not_crashed(header: str, value: str) -> None:
    headers = delivery()
    headers[header] = value

    assert refusal(BODY, headers).startswith("no signature matches:")


def test_signature_failures_are_not_reported_as_bad_payloads() -> None:
    with pytest.raises(WebhookVerificationError) as caught:
        verify(BODY, delivery(), WRONG_SECRET, now=NOW)

    assert caught.value.bad_payload is False


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"not json", "body is not JSON"),
        (b"\xff\xfe\xfa", "body is not JSON"),
        (b"[" * 100_000 + b"]" * 100_000, "body is not JSON"),
        (b'["evt_1"]', "body is not a JSON object"),
        (b'{"type": "appointment.created"}', "body is not an event: no string 'id'"),
        (b'{"id": 7, "type": "appointment.created"}', "body is not an event: no string 'id'"),
        (b'{"id": "evt_1"}', "body is not an event: no string 'type'"),
    ],
    ids=["text", "not-utf8", "too-deep", "array", "no-id", "numeric-id", "no-type"],
)
def test_a_signed_body_that_is_not_an_event_is_refused_as_a_bad_payload(
    body: bytes, reason: str
) -> None:
    with pytest.raises(WebhookVerificationError) as caught:
        verify(body, delivery(body=body), OLD_SECRET, now=NOW)

    assert str(caught.value) == reason
    assert caught.value.bad_payload is True


def test_an_unsigned_body_that_is_not_json_is_refused_for_its_signature_first() -> None:
    message = refusal(b"not json", delivery(body=BODY))

    assert message.startswith("no signature matches:")


@pytest.mark.parametrize("secrets", [[], "", [OLD_SECRET, ""]], ids=["none", "empty", "one-empty"])
def test_verifying_without_a_usable_secret_is_a_programming_error_not_a_refusal(
    secrets: Any,
) -> None:
    with pytest.raises(ValueError, match="at least one secret") as caught:
        verify(BODY, delivery(), secrets, now=NOW)

    assert not isinstance(caught.value, WebhookVerificationError)


def test_a_secret_that_is_not_base64_is_a_programming_error_for_the_standard_scheme() -> None:
    with pytest.raises(ValueError, match="not whsec_ followed by base64") as caught:
        verify(BODY, delivery(keep=STANDARD), "whsec_not base64!", now=NOW)

    assert not isinstance(caught.value, WebhookVerificationError)


# Importing without Flask, SQLAlchemy or a database driver

FORBIDDEN = ["flask", "werkzeug", "sqlalchemy", "sqlite3", "_sqlite3", "psycopg", "psycopg2"]
FORBIDDEN += ["MySQLdb", "pymysql", "redis", "rq"]

# The start of a program that fails to import any of FORBIDDEN (passed as its arguments).
REFUSING = """
import importlib.abc, json, sys
FORBIDDEN = set(sys.argv[1:])

class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in FORBIDDEN:
            raise ImportError(f"the import proof refuses {name}")
        return None

sys.meta_path.insert(0, Refuse())
"""


def prove(code: str) -> subprocess.CompletedProcess[str]:
    """Run `code` after REFUSING in a fresh interpreter."""
    return subprocess.run(
        [sys.executable, "-c", REFUSING + code, *FORBIDDEN],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).parents[2],
        check=False,
    )


IMPORT_PROOF = """
from moncreneau.receiver import Deduplicator, MemoryStore, verify
from moncreneau.delivery.signing import signature_headers

body = b'{"id": "evt_1", "type": "appointment.created"}'
secret = "whsec_" + "A" * 44
headers = {"X-Moncreneau-Timestamp": "100", **signature_headers([secret], "m", 100, body)}
event = verify(body, headers, secret, now=100)
once = Deduplicator(MemoryStore())
ran = [once.process(event, print) for _ in range(2)]
loaded = sorted(name for name in sys.modules if name.partition(".")[0] in FORBIDDEN)
print(json.dumps({"ran": ran, "loaded": loaded}))
"""


def test_importing_and_using_the_receiver_needs_no_flask_sqlalchemy_or_database_driver() -> None:
    """In a fresh interpreter that refuses to import any of them."""
    result = prove(IMPORT_PROOF)

    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout.splitlines()[-1])
    assert outcome == {"ran": [True, False], "loaded": []}


def test_the_import_proof_would_catch_a_forbidden_import() -> None:
    """The same check, run on a module that does import one, fails."""
    proof = IMPORT_PROOF.replace(
        "from moncreneau.receiver", "import sqlite3\nfrom moncreneau.receiver"
    )
    result = prove(proof)

    assert result.returncode != 0
    assert "the import proof refuses sqlite3" in result.stderr


# Deduplicator, on every store

StoreFactory = Callable[[], Store]


@pytest.fixture(scope="module")
def postgres_dsn() -> Iterator[str]:
    with services.throwaway_database("moncreneau_receiver", migrated=False) as url:
        yield make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@pytest.fixture(params=["memory", "sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def new_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreFactory]:
    """Makes stores that share one record of processed ids, one per consumer (thread)."""
    connections: list[Any] = []
    lock = threading.Lock()

    def opened(connection: Any) -> Any:
        with lock:
            connections.append(connection)
        return connection

    if request.param == "memory":
        shared = MemoryStore()
        yield lambda: shared
    elif request.param == "sqlite":
        path = tmp_path / "receiver.db"
        # Closed by this fixture, in another thread than the consumer's that used it.
        yield lambda: SqlStore(opened(sqlite3.connect(path, timeout=30, check_same_thread=False)))
    else:
        dsn: str = request.getfixturevalue("postgres_dsn")
        with psycopg.connect(dsn, autocommit=True) as admin:
            admin.execute("DROP TABLE IF EXISTS webhook_events")
        yield lambda: SqlStore(opened(psycopg.connect(dsn)))
    for connection in connections:
        connection.close()


class Handler:
    """Counts its runs; optionally slow, or failing."""

    def __init__(self, delay: float = 0.0, fail: bool = False) -> None:
        self.delay = delay
        self.fail = fail
        self.seen: list[str] = []
        self._lock = threading.Lock()

    def __call__(self, event: dict[str, Any]) -> None:
        time.sleep(self.delay)
        if self.fail:
            raise RuntimeError(f"handling {event['id']} failed")
        with self._lock:
            self.seen.append(event["id"])


def test_an_event_is_handled_once_however_often_it_is_processed(new_store: StoreFactory) -> None:
    once = Deduplicator(new_store())
    handler = Handler()

    assert [once.process(EVENT, handler) for _ in range(3)] == [True, False, False]
    assert handler.seen == [EVENT["id"]]


def test_events_with_different_ids_are_each_handled(new_store: StoreFactory) -> None:
    once = Deduplicator(new_store())
    handler = Handler()

    for n in range(3):
        assert once.process({**EVENT, "id": f"evt_{n}"}, handler)

    assert handler.seen == ["evt_0", "evt_1", "evt_2"]


def test_a_duplicate_is_recognised_by_another_consumer_of_the_same_store(
    new_store: StoreFactory,
) -> None:
    handler = Handler()

    assert Deduplicator(new_store()).process(EVENT, handler) is True
    assert Deduplicator(new_store()).process(EVENT, handler) is False
    assert handler.seen == [EVENT["id"]]


def test_a_handler_that_raises_leaves_the_event_to_be_processed_again(
    new_store: StoreFactory,
) -> None:
    once = Deduplicator(new_store())

    with pytest.raises(RuntimeError, match="failed"):
        once.process(EVENT, Handler(fail=True))
    handler = Handler()

    assert once.process(EVENT, handler) is True
    assert once.process(EVENT, handler) is False
    assert handler.seen == [EVENT["id"]]


def test_eight_consumers_racing_on_one_event_handle_it_exactly_once(
    new_store: StoreFactory,
) -> None:
    handler = Handler(delay=0.05)
    start = threading.Barrier(8)
    outcomes: list[bool] = []
    errors: list[BaseException] = []

    def consume() -> None:
        try:
            start.wait()
            # Each consumer opens its store at the same moment, as processes starting would.
            outcomes.append(Deduplicator(new_store()).process(EVENT, handler))
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=consume) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert errors == []
    assert sorted(outcomes) == [False] * 7 + [True]
    assert handler.seen == [EVENT["id"]]


def test_a_consumer_waiting_on_a_claim_that_fails_then_handles_the_event(
    new_store: StoreFactory,
) -> None:
    """A redelivery arriving during a failing first try must not be answered "done"."""
    first_started = threading.Event()
    second = Handler()
    outcome: list[bool] = []

    def fail_slowly(event: dict[str, Any]) -> None:
        first_started.set()
        time.sleep(0.3)
        raise RuntimeError("the first try failed")

    def redelivery() -> None:
        first_started.wait(10)
        outcome.append(Deduplicator(new_store()).process(EVENT, second))

    thread = threading.Thread(target=redelivery)
    thread.start()
    with pytest.raises(RuntimeError, match="first try"):
        Deduplicator(new_store()).process(EVENT, fail_slowly)
    thread.join(timeout=30)

    assert outcome == [True]
    assert second.seen == [EVENT["id"]]


def test_an_event_without_a_string_id_or_type_is_refused(new_store: StoreFactory) -> None:
    once = Deduplicator(new_store())
    handler = Handler()

    with pytest.raises(ValueError, match="string 'id', got 7"):
        once.process({**EVENT, "id": 7}, handler)
    with pytest.raises(ValueError, match="string 'type', got None"):
        once.process({"id": "evt_1"}, handler)
    assert handler.seen == []


# MemoryStore and SqlStore specifics


def test_a_bounded_memory_store_forgets_the_oldest_ids_first() -> None:
    store = MemoryStore(max_size=2)
    once = Deduplicator(store)
    handler = Handler()

    for event_id in ["evt_a", "evt_b", "evt_c", "evt_c", "evt_b", "evt_a"]:
        once.process({**EVENT, "id": event_id}, handler)

    assert handler.seen == ["evt_a", "evt_b", "evt_c", "evt_a"]
    assert len(store) == 2
    assert "evt_a" in store and "evt_c" in store and "evt_b" not in store


@pytest.mark.parametrize("size", [0, -1])
def test_a_memory_store_bound_below_one_is_refused(size: int) -> None:
    with pytest.raises(ValueError, match=f"max_size must be at least 1 or None, got {size}"):
        MemoryStore(max_size=size)


def test_the_sql_store_records_each_processed_event_in_webhook_events(tmp_path: Path) -> None:
    connection = sqlite3.connect(tmp_path / "receiver.db")
    once = Deduplicator(SqlStore(connection))
    once.process(EVENT, Handler())
    once.process(EVENT, Handler())

    rows = connection.execute("SELECT id, event_type, processed_at FROM webhook_events").fetchall()
    assert [(event_id, event_type) for event_id, event_type, _ in rows] == [
        (EVENT["id"], EVENT["type"])
    ]
    assert rows[0][2]
    connection.close()


def test_the_sql_store_keeps_an_existing_webhook_events_table(tmp_path: Path) -> None:
    path = tmp_path / "receiver.db"
    first = sqlite3.connect(path)
    Deduplicator(SqlStore(first)).process(EVENT, Handler())
    first.close()
    handler = Handler()

    second = sqlite3.connect(path)
    assert Deduplicator(SqlStore(second)).process(EVENT, handler) is False
    assert handler.seen == []
    second.close()


def test_the_handlers_writes_commit_with_the_claim_and_roll_back_with_it(tmp_path: Path) -> None:
    path = tmp_path / "receiver.db"
    connection = sqlite3.connect(path)
    connection.execute("CREATE TABLE bookings (event_id TEXT)")
    once = Deduplicator(SqlStore(connection))

    def write_then(fail: bool) -> Callable[[dict[str, Any]], None]:
        def handle(event: dict[str, Any]) -> None:
            connection.execute("INSERT INTO bookings VALUES (?)", (event["id"],))
            if fail:
                raise RuntimeError("failed after writing")

        return handle

    with pytest.raises(RuntimeError):
        once.process(EVENT, write_then(fail=True))
    once.process(EVENT, write_then(fail=False))
    once.process(EVENT, write_then(fail=False))

    # Read on another connection: only committed rows count.
    reader = sqlite3.connect(path)
    assert reader.execute("SELECT event_id FROM bookings").fetchall() == [(EVENT["id"],)]
    assert reader.execute("SELECT id FROM webhook_events").fetchall() == [(EVENT["id"],)]
    reader.close()
    connection.close()


def test_the_sql_store_refuses_an_autocommit_connection(tmp_path: Path) -> None:
    connection = sqlite3.connect(tmp_path / "receiver.db", isolation_level=None)

    with pytest.raises(ValueError, match="autocommit"):
        SqlStore(connection)
    connection.close()


def test_the_sql_store_refuses_an_unknown_paramstyle(tmp_path: Path) -> None:
    connection = sqlite3.connect(tmp_path / "receiver.db")

    with pytest.raises(ValueError, match="got 'named'"):
        SqlStore(connection, paramstyle="named")
    connection.close()


def test_the_receiver_module_exports_its_whole_api() -> None:
    assert sorted(receiver.__all__) == [
        "Deduplicator",
        "MemoryStore",
        "SqlStore",
        "Store",
        "WebhookVerificationError",
        "verify",
    ]


@pytest.mark.parametrize("header", ["webhook-timestamp", "X-Moncreneau-Timestamp"])
def test_a_timestamp_of_thousands_of_digits_is_refused_as_bad_and_not_repeated(
    header: str,
) -> None:
    headers = delivery()
    headers[header] = "1" * 5_000

    assert refusal(BODY, headers) == (
        f"bad timestamp: {header.lower()} is 5,000 characters long, not Unix seconds"
    )
