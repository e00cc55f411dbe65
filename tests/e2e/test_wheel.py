"""The package as a user installs it: a wheel in a virtual environment outside the checkout."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import urllib.request
import venv
from pathlib import Path
from typing import Any

import pytest

from tests.services import moncreneau_run

ROOT = Path(__file__).resolve().parents[2]


def _run(*args: str | Path, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, timeout=300, **kwargs
    )
    assert result.returncode == 0, f"{args}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def _call(base: str, key: str, method: str, path: str, body: Any = None) -> Any:
    request = urllib.request.Request(
        f"{base}/api/v1{path}",
        method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"X-API-Key": key, "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The `moncreneau` command of a fresh virtual environment that has only the wheel of ours.

    The dependencies are the ones this test run already has, made visible to the new
    environment by a path file, so that no download is needed; moncreneau itself comes from
    the wheel alone.
    """
    folder = tmp_path_factory.mktemp("wheel")
    dist = folder / "dist"
    _run(
        sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
        "--wheel-dir", dist, ROOT,
    )  # fmt: skip
    (wheel,) = dist.glob("moncreneau-*.whl")
    env_dir = folder / "venv"
    venv.create(env_dir, with_pip=False)
    python = env_dir / "bin" / "python"
    site = Path(
        _run(python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))").stdout.strip()
    )
    dependencies = [p for p in {sysconfig.get_path("purelib"), sysconfig.get_path("platlib")}]
    (site / "dependencies.pth").write_text("\n".join(dependencies) + "\n")
    _run(sys.executable, "-m", "pip", "--python", python, "install", "--quiet", "--no-deps", wheel)
    return env_dir / "bin" / "moncreneau"


def test_a_wheel_installed_outside_the_checkout_migrates_and_books(
    installed: Path, tmp_path: Path
) -> None:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("MONCRENEAU_") and k != "PYTHONPATH"
    }
    env["DATABASE_URL"] = f"sqlite:///{tmp_path / 'clinic.db'}"
    where = _run(
        installed.parent / "python", "-c", "import moncreneau; print(moncreneau.__file__)",
        cwd=tmp_path, env=env,
    )  # fmt: skip
    assert Path(where.stdout.strip()).is_relative_to(installed.parent.parent)
    assert not Path(where.stdout.strip()).is_relative_to(ROOT)

    _run(installed, "db", "upgrade", cwd=tmp_path, env=env)
    org = json.loads(
        _run(installed, "org", "create", "Clinique", "--json", cwd=tmp_path, env=env).stdout
    )

    with moncreneau_run(tmp_path, env, [installed]) as base:
        department = _call(
            base, org["apiKey"], "POST", "/departments",
            {"name": "Radiologie", "timezone": "Europe/Paris", "slotMinutes": 30, "capacity": 1},
        )  # fmt: skip
        booked = _call(
            base, org["apiKey"], "POST", "/appointments",
            {"departmentId": department["id"], "dateTime": "2026-02-01T10:00:00", "name": "Test"},
        )  # fmt: skip
        assert booked["status"] == "pending"
        assert booked["dateTime"] == "2026-02-01T10:00:00+01:00"
        events = _call(base, org["apiKey"], "GET", f"/appointments/{booked['id']}/events")
        assert [e["type"] for e in events["data"]] == ["appointment.created"]
        # The portal's templates and assets are package data: the wheel must carry them.
        link = _call(base, org["apiKey"], "POST", "/portal-links", {"expiresInMinutes": 5})
        with urllib.request.urlopen(link["url"], timeout=10) as page:
            assert "portal.css" in page.read().decode()
        with urllib.request.urlopen(f"{base}/portal/static/portal.css", timeout=10) as css:
            assert css.status == 200 and css.read()
