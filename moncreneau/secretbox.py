"""Encryption at rest for webhook secrets, keyed by MONCRENEAU_SECRET_KEY.

The variable may list several keys, comma-separated: the first seals, every one opens,
so the key can be changed without downtime (`moncreneau secrets reseal` then drops the old).
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from sqlalchemy import select
from sqlalchemy.orm import Session

from moncreneau.config import SECRET_KEY_REQUIRED, ConfigError, Settings, secret_keys
from moncreneau.models import IdempotencyRecord, WebhookSubscription


def _fernet(key: str) -> Fernet:
    return Fernet(base64.urlsafe_b64encode(hashlib.sha256(key.encode()).digest()))


class SecretBox:
    def __init__(self, key: str) -> None:
        keys = secret_keys(key)
        if not keys:
            raise ConfigError("MONCRENEAU_SECRET_KEY must not be empty")
        self._fernet = MultiFernet([_fernet(k) for k in keys])

    def seal(self, plaintext: str) -> str:
        return self._fernet.encrypt(plaintext.encode()).decode()

    def open(self, token: str) -> str:
        try:
            return self._fernet.decrypt(token.encode()).decode()
        except InvalidToken:
            raise _unreadable() from None

    def reseal(self, token: str) -> str:
        """The same secret, sealed again with the first key."""
        try:
            return self._fernet.rotate(token.encode()).decode()
        except InvalidToken:
            raise _unreadable() from None


def reseal_stored(session: Session, box: SecretBox) -> int:
    """Seal every stored secret with the first key; returns how many were sealed again."""
    count = 0
    for subscription in session.scalars(select(WebhookSubscription)):
        subscription.secret = box.reseal(subscription.secret)
        if subscription.previous_secret is not None:
            subscription.previous_secret = box.reseal(subscription.previous_secret)
        count += 1
    for record in session.scalars(select(IdempotencyRecord)):
        record.response_body = box.reseal(record.response_body)
        count += 1
    return count


def _unreadable() -> ConfigError:
    return ConfigError(
        "a stored secret cannot be decrypted: none of the keys in MONCRENEAU_SECRET_KEY "
        "is the one it was sealed with"
    )


def resolve_key(settings: Settings) -> str:
    """The configured key; the embedded SQLite mode keeps a generated one beside its database."""
    if settings.secret_key:
        return settings.secret_key
    if not settings.is_sqlite:
        raise ConfigError(SECRET_KEY_REQUIRED)
    database = settings.database_url.split("///", 1)[-1] or "moncreneau.db"
    path = Path(f"{database}.key") if database != ":memory:" else Path("moncreneau.db.key")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as handle:
        handle.write(secrets.token_urlsafe(32))
    return path.read_text().strip()
