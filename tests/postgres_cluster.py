"""A PostgreSQL server of a test's own, which the test may stop and start at will."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

TOOLS = ("initdb", "pg_ctl", "postgres")
# initdb and postgres refuse to run as root: as root, the server runs as this user.
SERVER_USER = "postgres"


def _bindir_candidates() -> list[Path]:
    found: list[Path] = []
    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=True
            ).stdout.strip()
            found.append(Path(out))
        except (OSError, subprocess.SubprocessError):
            pass
    versions = Path("/usr/lib/postgresql").glob("*/bin")
    found += sorted(
        versions, key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0, reverse=True
    )
    return found


def find_bindir() -> Path | None:
    """Where initdb, pg_ctl and postgres are: pg_config's bindir, else the newest installed."""
    for candidate in _bindir_candidates():
        if all(os.access(candidate / tool, os.X_OK) for tool in TOOLS):
            return candidate
    return None


def _run_as() -> tuple[list[str], pwd.struct_passwd | None]:
    if os.geteuid() != 0:
        return [], None
    user = pwd.getpwnam(SERVER_USER)
    return ["runuser", "-u", SERVER_USER, "--"], user


def problem() -> str | None:
    """Why a private cluster cannot be started here, or None."""
    if find_bindir() is None:
        return f"no PostgreSQL server binaries ({', '.join(TOOLS)}) from pg_config or in /usr/lib"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(SERVER_USER)
        except KeyError:
            return f"running as root and there is no {SERVER_USER!r} user to run the server"
        if shutil.which("runuser") is None:
            return "running as root and runuser is missing"
    return None


@dataclass
class Cluster:
    """A throwaway cluster on 127.0.0.1:`port`, trust authentication, no fsync."""

    bindir: Path
    root: Path
    port: int
    run_as: list[str]

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, tool: str, *args: str) -> None:
        command = [*self.run_as, str(self.bindir / tool), *args]
        done = subprocess.run(command, cwd=self.root, capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            raise RuntimeError(
                f"{tool} {' '.join(args)} failed ({done.returncode}):\n"
                f"{done.stdout}{done.stderr}\n{self.log()}"
            )

    def start(self) -> None:
        """Start and wait until it accepts connections."""
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root} "
            "-c fsync=off -c full_page_writes=off"
        )
        self._run(
            "pg_ctl",
            "start",
            "-w",
            "-t",
            "30",
            "-D",
            str(self.data),
            "-l",
            self._log_path(),
            "-o",
            options,
        )

    def stop(self, mode: str = "fast") -> None:
        """Stop; `fast` ends every session as an operator's restart does."""
        self._run("pg_ctl", "stop", "-w", "-t", "30", "-m", mode, "-D", str(self.data))

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def _log_path(self) -> str:
        return str(self.root / "server.log")

    def log(self) -> str:
        path = Path(self._log_path())
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def destroy(self) -> None:
        try:
            if self.running():
                self.stop("immediate")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


def create_cluster(port: int) -> Cluster:
    """initdb a new cluster in a temporary directory the server's user owns."""
    bindir = find_bindir()
    assert bindir is not None, problem()
    run_as, user = _run_as()
    root = Path(tempfile.mkdtemp(prefix="moncreneau-pg-"))
    if user is not None:
        os.chown(root, user.pw_uid, user.pw_gid)
    cluster = Cluster(bindir, root, port, run_as)
    try:
        cluster._run(
            "initdb",
            "-D",
            str(cluster.data),
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--locale",
            "C",
            "--no-sync",
        )
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise
    return cluster
