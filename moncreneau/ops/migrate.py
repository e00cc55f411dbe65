"""Running the Alembic migrations shipped in the package, from code and from the command line."""

from __future__ import annotations

import logging
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy.engine import Engine

# A package resource, so that an installed wheel finds them as well as a checkout does.
MIGRATIONS = "moncreneau:migrations"


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", MIGRATIONS)
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def upgrade(engine: Engine, revision: str = "head", vault: Any = None) -> None:
    """`vault` (a `moncreneau.personal.Vault`) seals the personal data of events written
    before 0014; without it, MONCRENEAU_SECRET_KEY is read when there is any."""
    logging.getLogger("alembic").setLevel(logging.WARNING)
    config = alembic_config(engine.url.render_as_string(hide_password=False))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        config.attributes["vault"] = vault
        command.upgrade(config, revision)
