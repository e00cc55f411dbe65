"""Encryption at rest for webhook secrets, keyed by MONCRENEAU_SECRET_KEY."""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from moncreneau.config import ConfigError, Settings


class SecretBox:
    def __init__(self, key: str) -> None:
        if not key:
            raise ConfigError("MONCRENEAU_SECRET_KEY must not be empty")
        derived = hashlib.sha256(key.encode()).digest()
        self._fernet = Fernet(base64.urlsafe_b64encode(derived))

    def seal(self, plaintext: str) -> str:
        return self._fernet.encrypt(plaintext.encode()).decode()

    def open(self, token: str) -> str:
        try:
            return self._fernet.decrypt(token.encode()).decode()
        except InvalidToken:
            raise ConfigError(
                "a stored webhook secret cannot be decrypted: MONCRENEAU_SECRET_KEY differs "
                "from the key it was sealed with"
            ) from None


def resolve_key(settings: Settings) -> str:
    """The configured key; the embedded SQLite mode keeps a generated one beside its database."""
    if settings.secret_key:
        return settings.secret_key
    if not settings.is_sqlite:
        raise ConfigError(
            "MONCRENEAU_SECRET_KEY is required with this database: every process must use the "
            "same key to read webhook secrets"
        )
    database = settings.database_url.split("///", 1)[-1] or "moncreneau.db"
    path = Path(f"{database}.key") if database != ":memory:" else Path("moncreneau.db.key")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as handle:
        handle.write(secrets.token_urlsafe(32))
    return path.read_text().strip()
