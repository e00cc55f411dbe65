"""Real `moncreneau relay` and `moncreneau worker` processes on PostgreSQL and Redis."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from moncreneau.config import Settings
from moncreneau.integrator.listen import api_call
from tests import services
from tests.conftest import make_settings
from tests.receiver import Receiver, start_receiver

SECRET_KEY = "e2e-secret-key"
DELIVERY_TIMEOUT = 2.0


@pytest.fixture(scope="session")
def redis_url() -> str:
    problem = services.redis_problem()
    if problem:
        services.unavailable("Redis", problem)
    return services.REDIS_URL


@pytest.fixture
def queue_name() -> str:
    """A queue of this test's own: no other test or run shares its jobs, so none is wiped."""
    return f"moncreneau-test-{uuid.uuid4().hex[:12]}"


def pipeline_env(database_url: str, redis_url: str | None, **extra: str) -> dict[str, str]:
    return services.process_env(
        database_url,
        redis_url,
        MONCRENEAU_SECRET_KEY=SECRET_KEY,
        MONCRENEAU_ALLOW_PRIVATE_URLS="true",
        MONCRENEAU_RETRY_SCHEDULE="0,1,2",
        MONCRENEAU_DELIVERY_TIMEOUT=str(DELIVERY_TIMEOUT),
        MONCRENEAU_SWEEP_SECONDS="0.2",
        MONCRENEAU_RELAY_POLL_SECONDS="0.02",
        MONCRENEAU_LOG_LEVEL="WARNING",
        **extra,
    )


@dataclass
class Processes:
    env: dict[str, str]
    log_dir: Path
    running: list[subprocess.Popen[bytes]] = field(default_factory=list)
    log_paths: dict[int, Path] = field(default_factory=dict)

    def start(self, command: str, *args: str, **extra_env: str) -> subprocess.Popen[bytes]:
        path = self.log_dir / f"{command}-{len(self.running)}.log"
        log = open(path, "wb")  # noqa: SIM115
        process = subprocess.Popen(
            [sys.executable, "-m", "moncreneau", command, *args],
            env={**self.env, **extra_env},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.running.append(process)
        self.log_paths[process.pid] = path
        return process

    def log_of(self, process: subprocess.Popen[bytes]) -> str:
        return self.log_paths[process.pid].read_text(errors="replace")

    def kill(self, process: subprocess.Popen[bytes]) -> None:
        """SIGKILL: no cleanup, no flush, as a crash or an OOM kill would do."""
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)

    def logs(self) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}"
            for p in sorted(self.log_dir.glob("*.log"))
        )

    def stop_all(self) -> None:
        for process in self.running:
            if process.poll() is None:
                process.terminate()
        for process in self.running:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()


@pytest.fixture
def settings(postgres_url: str, redis_url: str, queue_name: str) -> Settings:
    """The API in the test process shares the database and Redis with the processes."""
    return make_settings(
        postgres_url,
        redis_url=redis_url,
        queue_name=queue_name,
        secret_key=SECRET_KEY,
        delivery_timeout=DELIVERY_TIMEOUT,
    )


@pytest.fixture
def processes(
    postgres_url: str,
    redis_url: str,
    queue_name: str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> Iterator[Processes]:
    env = pipeline_env(postgres_url, redis_url, MONCRENEAU_QUEUE_NAME=queue_name)
    procs = Processes(env, tmp_path)
    yield procs
    procs.stop_all()
    if request.node.rep_call.failed if hasattr(request.node, "rep_call") else False:
        print(procs.logs())


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    rec = start_receiver()
    yield rec
    rec.server.shutdown()


# The same client `moncreneau listen` uses against a running MonCréneau.
call = api_call


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """A `moncreneau run` process in its own folder, and an organization's key."""
    env = pipeline_env(f"sqlite:///{tmp_path / 'moncreneau.db'}", None)
    env.pop("MONCRENEAU_SECRET_KEY")  # the embedded mode keeps its own key file
    with services.moncreneau_run(tmp_path, env) as base:
        created = subprocess.run(
            [sys.executable, "-m", "moncreneau", "org", "create", "Clinique", "--json"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            check=True,
        )
        yield base, json.loads(created.stdout)["apiKey"]
    assert (tmp_path / "moncreneau.db.key").exists()
