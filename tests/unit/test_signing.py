"""Delivery signatures match an independent computation and the integrators' verifiers."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Callable

import pytest
import standardwebhooks
import svix.webhooks

from moncreneau import receiver
from moncreneau.delivery import signing

BODY = b'{"id":"evt_1","type":"appointment.created","version":"2.0","data":{"object":{"id":7}}}'
MSG_ID = "msg_01jd3k5q8c2v0t7m6x4yb9r1ze"
# Fixed secrets, so that a failure is reproducible; generated ones are checked separately.
OLD_SECRET = "whsec_" + base64.b64encode(bytes(range(32))).decode()
NEW_SECRET = "whsec_" + base64.b64encode(bytes(range(100, 132))).decode()
WRONG_SECRET = "whsec_" + base64.b64encode(b"\x07" * 32).decode()

Verifier = Callable[[bytes, dict[str, str], str], None]


def _standardwebhooks(body: bytes, headers: dict[str, str], secret: str) -> None:
    standardwebhooks.Webhook(secret).verify(body, headers)


def _svix(body: bytes, headers: dict[str, str], secret: str) -> None:
    svix.webhooks.Webhook(secret).verify(body, headers)


def _plain_hmac(body: bytes, headers: dict[str, str], secret: str) -> None:
    """The integrators' guide's check: any comma-separated `sha256=` value matches."""
    expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    offered = headers["X-Moncreneau-Signature"].split(",")
    if not any(hmac.compare_digest(expected, candidate) for candidate in offered):
        raise standardwebhooks.WebhookVerificationError("X-Moncreneau-Signature does not match")


def _moncreneau_verify(body: bytes, headers: dict[str, str], secret: str) -> None:
    receiver.verify(body, headers, secret, now=int(time.time()))


VERIFIERS: dict[str, Verifier] = {
    "standardwebhooks": _standardwebhooks,
    "svix": _svix,
    "plain-hmac": _plain_hmac,
    "moncreneau": _moncreneau_verify,
}
REJECTED = (standardwebhooks.WebhookVerificationError, receiver.WebhookVerificationError)


def _headers(*secrets: str, timestamp: int | None = None) -> dict[str, str]:
    now = int(time.time()) if timestamp is None else timestamp
    return {
        "X-Moncreneau-Timestamp": str(now),
        **signing.signature_headers(secrets, MSG_ID, now, BODY),
    }


def test_the_moncreneau_signature_is_the_hex_hmac_of_the_body_under_the_whole_secret() -> None:
    by_hand = hmac.new(OLD_SECRET.encode("utf-8"), BODY, hashlib.sha256).hexdigest()

    assert signing.moncreneau_signature(OLD_SECRET, BODY) == f"sha256={by_hand}"
    assert _headers(OLD_SECRET)["X-Moncreneau-Signature"] == f"sha256={by_hand}"


def test_the_standard_signature_is_the_base64_hmac_of_id_timestamp_and_body() -> None:
    """Keyed with the base64-decoded part of the secret after `whsec_`."""
    key = base64.b64decode(OLD_SECRET.removeprefix("whsec_"))
    signed = MSG_ID.encode() + b"." + b"1767225600" + b"." + BODY
    by_hand = "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()

    assert signing.standard_signature(OLD_SECRET, MSG_ID, 1767225600, BODY) == by_hand
    headers = signing.signature_headers([OLD_SECRET], MSG_ID, 1767225600, BODY)
    assert headers == {
        "X-Moncreneau-Signature": signing.moncreneau_signature(OLD_SECRET, BODY),
        "webhook-id": MSG_ID,
        "webhook-timestamp": "1767225600",
        "webhook-signature": by_hand,
    }


def test_a_generated_secret_is_whsec_and_32_random_bytes_in_base64() -> None:
    secret = signing.generate_secret()

    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret.removeprefix("whsec_"), validate=True)) == 32
    assert signing.generate_secret() != secret


@pytest.mark.parametrize("verifier", VERIFIERS.values(), ids=VERIFIERS.keys())
def test_every_verifier_accepts_headers_from_signature_headers(verifier: Verifier) -> None:
    verifier(BODY, _headers(OLD_SECRET), OLD_SECRET)


@pytest.mark.parametrize("verifier", VERIFIERS.values(), ids=VERIFIERS.keys())
def test_every_verifier_accepts_a_freshly_generated_secret(verifier: Verifier) -> None:
    secret = signing.generate_secret()

    verifier(BODY, _headers(secret), secret)


@pytest.mark.parametrize("position", [0, len(BODY) // 2, len(BODY) - 1])
@pytest.mark.parametrize("verifier", VERIFIERS.values(), ids=VERIFIERS.keys())
def test_changing_one_byte_of_the_body_fails_every_verifier(
    verifier: Verifier, position: int
) -> None:
    headers = _headers(OLD_SECRET)
    tampered = bytearray(BODY)
    tampered[position] ^= 0x01

    with pytest.raises(REJECTED):
        verifier(bytes(tampered), headers, OLD_SECRET)


@pytest.mark.parametrize("verifier", [_standardwebhooks, _svix, _moncreneau_verify])
def test_changing_the_webhook_id_fails_the_standard_verifiers(verifier: Verifier) -> None:
    headers = _headers(OLD_SECRET)
    headers["webhook-id"] = MSG_ID[:-1] + "f"

    with pytest.raises(REJECTED):
        verifier(BODY, headers, OLD_SECRET)


@pytest.mark.parametrize("verifier", [_standardwebhooks, _svix, _moncreneau_verify])
def test_changing_the_webhook_timestamp_fails_the_standard_verifiers(verifier: Verifier) -> None:
    headers = _headers(OLD_SECRET)
    headers["webhook-timestamp"] = str(int(headers["webhook-timestamp"]) - 1)

    with pytest.raises(REJECTED):
        verifier(BODY, headers, OLD_SECRET)


def test_changing_the_moncreneau_signature_fails_the_plain_hmac_check_and_verify() -> None:
    headers = _headers(OLD_SECRET)
    signature = headers["X-Moncreneau-Signature"]
    headers["X-Moncreneau-Signature"] = signature[:-1] + ("0" if signature[-1] != "0" else "1")
    del headers["webhook-signature"]  # so that only this scheme is checked

    with pytest.raises(REJECTED):
        _plain_hmac(BODY, headers, OLD_SECRET)
    with pytest.raises(receiver.WebhookVerificationError):
        _moncreneau_verify(BODY, headers, OLD_SECRET)


@pytest.mark.parametrize("verifier", VERIFIERS.values(), ids=VERIFIERS.keys())
def test_a_wrong_secret_fails_every_verifier(verifier: Verifier) -> None:
    with pytest.raises(REJECTED):
        verifier(BODY, _headers(OLD_SECRET), WRONG_SECRET)


@pytest.mark.parametrize("scheme", ["standard", "moncreneau"])
def test_a_stale_timestamp_fails_verify_even_with_a_valid_signature(scheme: str) -> None:
    now = int(time.time())
    stale = now - signing.DEFAULT_TOLERANCE - 1
    headers = _headers(OLD_SECRET, timestamp=stale)
    if scheme == "moncreneau":
        del headers["webhook-signature"]

    with pytest.raises(receiver.WebhookVerificationError, match="timestamp"):
        receiver.verify(BODY, headers, OLD_SECRET, now=now)
    # The same headers verify at the time they were made: only the age is wrong.
    receiver.verify(BODY, headers, OLD_SECRET, now=stale)


def test_a_timestamp_from_the_future_beyond_the_tolerance_fails_verify() -> None:
    now = int(time.time())
    headers = _headers(OLD_SECRET, timestamp=now + signing.DEFAULT_TOLERANCE + 1)

    with pytest.raises(receiver.WebhookVerificationError, match="timestamp"):
        receiver.verify(BODY, headers, OLD_SECRET, now=now)


def test_headers_without_any_signature_fail_verify() -> None:
    with pytest.raises(receiver.WebhookVerificationError, match="missing header"):
        receiver.verify(BODY, {"webhook-id": MSG_ID}, OLD_SECRET, now=int(time.time()))


def test_signing_without_a_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="secret"):
        signing.signature_headers([], MSG_ID, int(time.time()), BODY)


def test_during_a_rotation_both_headers_carry_one_signature_per_secret_newest_first() -> None:
    headers = _headers(NEW_SECRET, OLD_SECRET)
    timestamp = int(headers["webhook-timestamp"])

    assert headers["X-Moncreneau-Signature"] == ",".join(
        [
            signing.moncreneau_signature(NEW_SECRET, BODY),
            signing.moncreneau_signature(OLD_SECRET, BODY),
        ]
    )
    assert headers["webhook-signature"] == " ".join(
        [
            signing.standard_signature(NEW_SECRET, MSG_ID, timestamp, BODY),
            signing.standard_signature(OLD_SECRET, MSG_ID, timestamp, BODY),
        ]
    )


@pytest.mark.parametrize("holder", [OLD_SECRET, NEW_SECRET], ids=["old-secret", "new-secret"])
@pytest.mark.parametrize("verifier", VERIFIERS.values(), ids=VERIFIERS.keys())
def test_during_a_rotation_the_holder_of_either_secret_verifies(
    verifier: Verifier, holder: str
) -> None:
    verifier(BODY, _headers(NEW_SECRET, OLD_SECRET), holder)


@pytest.mark.parametrize("verifier", VERIFIERS.values(), ids=VERIFIERS.keys())
def test_during_a_rotation_a_third_secret_still_fails(verifier: Verifier) -> None:
    with pytest.raises(REJECTED):
        verifier(BODY, _headers(NEW_SECRET, OLD_SECRET), WRONG_SECRET)


@pytest.mark.parametrize("verifier", VERIFIERS.values(), ids=VERIFIERS.keys())
def test_during_a_rotation_a_tampered_body_fails_for_both_secrets(verifier: Verifier) -> None:
    headers = _headers(NEW_SECRET, OLD_SECRET)
    tampered = BODY.replace(b'"id":7', b'"id":8')

    for secret in (OLD_SECRET, NEW_SECRET):
        with pytest.raises(REJECTED):
            verifier(tampered, headers, secret)
