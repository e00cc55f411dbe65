"""The README's walkthrough, run as written against a live `moncreneau run`."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.services import free_port, wait_until

README = Path(__file__).resolve().parents[2] / "README.md"
# `<!-- run -->`, `<!-- run in background: NAME -->` or `<!-- expect from: NAME -->`,
# then a fenced block.
MARKED_BLOCK = re.compile(
    r"<!-- (run|run in background: \w+|expect from: \w+) -->\n```\w*\n(.*?)```", re.S
)
DOCUMENTED_PORTS = ("8000", "8001")


@dataclass(frozen=True)
class Step:
    kind: str  # "run", "background" or "expect"
    name: str
    text: str


def steps() -> list[Step]:
    found = []
    for marker, body in MARKED_BLOCK.findall(README.read_text()):
        kind, _, name = marker.partition(": ")
        kind = {"run": "run", "run in background": "background", "expect from": "expect"}[kind]
        found.append(Step(kind, name, body))
    return found


def segments(block: str) -> list[tuple[str, list[str]]]:
    """(command, expected output lines) pairs: `#` lines after a command are its output."""
    pairs: list[tuple[str, list[str]]] = []
    command: list[str] = []
    expected: list[str] = []
    for line in block.splitlines():
        if line.startswith("#"):
            expected.append(line[1:].strip())
            continue
        if expected:
            pairs.append(("\n".join(command), expected))
            command, expected = [], []
        command.append(line)
    if command:
        pairs.append(("\n".join(command), expected))
    return pairs


def pattern(lines: list[str]) -> re.Pattern[str]:
    """`...` matches anything; whitespace is ignored; omitted lines may come in between."""
    squeezed = ["".join(line.split()) for line in lines if line]
    parts = [".*?".join(re.escape(chunk) for chunk in line.split("...")) for line in squeezed]
    return re.compile(".*?".join(parts), re.S)


def matches(expected: list[str], output: str) -> bool:
    return pattern(expected).search("".join(output.split())) is not None


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[dict[str, str]]:
    """A folder with `.venv/bin/moncreneau` and `python`, a `moncreneau run` serving, and ports."""
    bin_dir = tmp_path / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    wrapper = bin_dir / "moncreneau"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m moncreneau "$@"\n')
    wrapper.chmod(0o755)
    # The README's Python runs with this interpreter, where moncreneau is installed.
    python = bin_dir / "python"
    python.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    python.chmod(0o755)
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("MONCRENEAU_") and k not in ("DATABASE_URL", "REDIS_URL")
    }
    api_port, listen_port = str(free_port()), str(free_port())
    server = subprocess.Popen(
        [str(wrapper), "run", "--port", api_port],
        cwd=tmp_path,
        env=env,
        stdout=open(tmp_path / "run.log", "wb"),  # noqa: SIM115
        stderr=subprocess.STDOUT,
    )
    try:
        wait_until(
            lambda: "Serving on" in (tmp_path / "run.log").read_text(errors="replace"),
            what="moncreneau run serving",
        )
        yield {**env, "SANDBOX": str(tmp_path), "API_PORT": api_port, "LISTEN_PORT": listen_port}
    finally:
        server.terminate()
        server.wait(timeout=15)


def _on_ports(text: str, env: dict[str, str]) -> str:
    """The documented ports become the test's free ones; nothing else is changed."""
    text = text.replace("127.0.0.1:8000", f"127.0.0.1:{env['API_PORT']}")
    text = text.replace("127.0.0.1:8001", f"127.0.0.1:{env['LISTEN_PORT']}")
    return text.replace("--port 8001", f"--port {env['LISTEN_PORT']}")


def test_every_runnable_block_of_the_readme_does_what_the_readme_says(
    sandbox: dict[str, str],
) -> None:
    folder = Path(sandbox["SANDBOX"])
    shell_env = {
        k: v for k, v in sandbox.items() if k not in ("SANDBOX", "API_PORT", "LISTEN_PORT")
    }
    state = folder / "state.env"
    background: dict[str, tuple[subprocess.Popen[bytes], Path]] = {}
    assert [s.kind for s in steps()].count("run") >= 5, "no runnable blocks found"
    try:
        for step in steps():
            text = _on_ports(step.text, sandbox)
            if step.kind == "background":
                log = folder / f"{step.name}.log"
                process = subprocess.Popen(
                    ["bash", "-c", f"set -a; . {state}; set +a; exec {text.strip()}"],
                    cwd=folder,
                    env=shell_env,
                    stdout=open(log, "wb"),  # noqa: SIM115
                    stderr=subprocess.STDOUT,
                )
                background[step.name] = (process, log)
                # As a reader would, wait until it says it is ready before going on.
                wait_until(
                    lambda log=log: "listening on" in log.read_text(errors="replace"),
                    what=f"{step.name} to start",
                )
                continue
            if step.kind == "expect":
                _, log = background[step.name]
                lines = [line for line in text.splitlines() if line.strip()]
                for line in lines:
                    wait_until(
                        lambda line=line, log=log: matches([line], log.read_text(errors="replace")),
                        timeout=20,
                        what=f"{step.name} printing {line!r}; it printed:\n{log.read_text()}"[
                            :4000
                        ],
                    )
                continue
            for command, expected in segments(text):
                script = (
                    f"set -euo pipefail; [ -f {state} ] && {{ set -a; . {state}; set +a; }}\n"
                    f"{command}\nexport -p > {state}\n"
                )
                done = subprocess.run(
                    ["bash", "-c", script],
                    cwd=folder,
                    env=shell_env,
                    capture_output=True,
                    text=True,
                    timeout=60,
                )
                assert done.returncode == 0, f"{command}\nfailed:\n{done.stderr}"
                if expected:
                    assert matches(expected, done.stdout), (
                        f"{command}\nprinted:\n{done.stdout}\nthe README says:\n"
                        + "\n".join(expected)
                    )
    finally:
        for process, _ in background.values():
            process.terminate()
            process.wait(timeout=15)
