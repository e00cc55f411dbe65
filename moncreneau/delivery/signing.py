"""Signing deliveries: `X-Moncreneau-Signature` and the Standard Webhooks signature.

- `X-Moncreneau-Signature`: `sha256=` + hex HMAC-SHA256 of the raw body, keyed with the
  whole secret string (`whsec_...`) as UTF-8 bytes.
- `webhook-signature`: `v1,` + base64 HMAC-SHA256 of `{id}.{timestamp}.{body}`, keyed with
  the base64-decoded part of the secret after `whsec_` (the Standard Webhooks scheme).

During a secret rotation both headers carry one signature per valid secret, newest first:
comma-separated for `X-Moncreneau-Signature`, space-separated for `webhook-signature`.
Receivers verify with `moncreneau.receiver.verify`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Iterable

PREFIX = "whsec_"
DEFAULT_TOLERANCE = 300


def generate_secret() -> str:
    return PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def _standard_key(secret: str) -> bytes:
    raw = secret[len(PREFIX) :] if secret.startswith(PREFIX) else secret
    return base64.b64decode(raw)


def moncreneau_signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def standard_signature(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(_standard_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signature_headers(
    secrets_: Iterable[str], msg_id: str, timestamp: int, body: bytes
) -> dict[str, str]:
    keys = list(secrets_)
    if not keys:
        raise ValueError("at least one secret is needed to sign")
    return {
        "X-Moncreneau-Signature": ",".join(moncreneau_signature(k, body) for k in keys),
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(standard_signature(k, msg_id, timestamp, body) for k in keys),
    }
