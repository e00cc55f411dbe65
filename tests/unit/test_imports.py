"""Every module of the package imports on its own, first, in an interpreter of its own."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import moncreneau

PACKAGE = Path(moncreneau.__file__).parent

# Runs in a new interpreter that has loaded no module of ours: each module is imported in a
# forked child, so every import starts from that clean state without paying for the
# third-party libraries again.
_PROBE = """
import json, os, sys, traceback
import flask, flask_smorest, marshmallow, sqlalchemy, alembic, redis, rq, cryptography
assert not [m for m in sys.modules if m.split(".")[0] == "moncreneau"]
failures = {}
for module in json.loads(sys.argv[1]):
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        try:
            __import__(module)
            message = b""
        except BaseException:
            message = traceback.format_exc().encode()
        os.write(write, message[-3000:])
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        message = pipe.read()
    os.waitpid(pid, 0)
    if message:
        failures[module] = message.decode()
print(json.dumps(failures))
"""


def _modules() -> list[str]:
    names = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.is_relative_to(PACKAGE / "migrations"):
            continue  # Alembic runs them; importing one would migrate
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def _import_failures(modules: list[str]) -> dict[str, str]:
    result = subprocess.run(
        [sys.executable, "-c", _PROBE, json.dumps(modules)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=PACKAGE.parent,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    failures: dict[str, str] = json.loads(result.stdout)
    return failures


def test_every_module_imports_first_in_a_clean_interpreter() -> None:
    modules = _modules()
    assert {"moncreneau.delivery.store", "moncreneau.webhooks.service"} <= set(modules)
    assert _import_failures(modules) == {}


def test_the_probe_reports_a_module_that_cannot_import() -> None:
    failures = _import_failures(["moncreneau.clock", "moncreneau.no_such_module"])
    assert list(failures) == ["moncreneau.no_such_module"]
    assert "ModuleNotFoundError" in failures["moncreneau.no_such_module"]


def test_the_delivery_machinery_never_imports_the_api_packages() -> None:
    api = ("moncreneau.webhooks", "moncreneau.appointments", "moncreneau.departments")
    offenders = [
        f"{path.relative_to(PACKAGE.parent)}: {line.strip()}"
        for folder in ("delivery", "outbox", "domain")
        for path in (PACKAGE / folder).rglob("*.py")
        for line in path.read_text(encoding="utf-8").splitlines()
        if line.lstrip().startswith(("from ", "import ")) and any(name in line for name in api)
    ]
    assert offenders == []


def test_every_benchmark_module_imports_first_in_a_clean_interpreter() -> None:
    """The benchmarks run only on demand: a broken import would show only then."""
    modules = [f"benchmarks.{p.stem}" for p in sorted((PACKAGE.parent / "benchmarks").glob("*.py"))]
    assert "benchmarks.__main__" in modules
    assert _import_failures(modules) == {}
