"""Every process checks every setting at start, and exits naming the one it cannot use."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.conftest import pipeline_env

# (command, settings changed from a working production environment, the variable named)
BAD_STARTS = [
    ("api", {"MONCRENEAU_SECRET_KEY": None}, "MONCRENEAU_SECRET_KEY"),
    ("relay", {"MONCRENEAU_SECRET_KEY": None}, "MONCRENEAU_SECRET_KEY"),
    ("api", {"MONCRENEAU_SECRET_KEY": ","}, "MONCRENEAU_SECRET_KEY"),
    ("worker", {"MONCRENEAU_DELIVERY_TIMEOUT": "0"}, "MONCRENEAU_DELIVERY_TIMEOUT"),
    ("api", {"MONCRENEAU_SECRET_GRACE_HOURS": "1e300"}, "MONCRENEAU_SECRET_GRACE_HOURS"),
    ("worker", {"MONCRENEAU_DISABLE_AFTER_HOURS": "1e300"}, "MONCRENEAU_DISABLE_AFTER_HOURS"),
    ("org create X", {"MONCRENEAU_SECRET_KEY": None}, "MONCRENEAU_SECRET_KEY"),
]


def _start(command: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    # The bound only keeps a process that would wrongly start from hanging the suite.
    return subprocess.run(
        [sys.executable, "-m", "moncreneau", *command.split()],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(("command", "changes", "variable"), BAD_STARTS)
def test_a_production_process_with_an_unusable_setting_exits_at_once_naming_it(
    command: str,
    changes: dict[str, str | None],
    variable: str,
    postgres_url: str,
    redis_url: str,
    tmp_path: Path,
) -> None:
    env = pipeline_env(postgres_url, redis_url)
    for name, value in changes.items():
        if value is None:
            env.pop(name)
        else:
            env[name] = value
    if command == "api":
        command = "api --port 0 --workers 1"
    done = _start(command, env, tmp_path)
    assert done.returncode != 0
    assert variable in done.stderr
    assert "Traceback" not in done.stderr


def test_the_embedded_mode_with_an_unusable_setting_exits_before_creating_anything(
    tmp_path: Path,
) -> None:
    env = pipeline_env(f"sqlite:///{tmp_path / 'moncreneau.db'}", None)
    env["MONCRENEAU_DELIVERY_TIMEOUT"] = "0"
    env.pop("MONCRENEAU_SECRET_KEY")
    done = _start("run --port 0", env, tmp_path)
    assert done.returncode != 0
    assert "MONCRENEAU_DELIVERY_TIMEOUT" in done.stderr
    assert list(tmp_path.iterdir()) == []
