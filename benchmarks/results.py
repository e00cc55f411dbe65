"""Result rows, printed as they come, and the RESULTS.md table and latency chart they make."""

from __future__ import annotations

import os
import platform
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from benchmarks.harness import Spread, percentile, postgres_version

PERCENTILES = (50.0, 75.0, 90.0, 95.0, 99.0, 99.9)


@dataclass(frozen=True)
class Row:
    id: str
    what: str
    figure: str
    baseline: str = "—"
    ratio: Spread | None = None
    target: str = "—"
    met: bool | None = None
    measured: str = ""

    def cells(self) -> list[str]:
        ratio = self.ratio.show(2) if self.ratio else "—"
        met = "—" if self.met is None else ("yes" if self.met else "**no**")
        return [self.id, self.what, self.figure, self.baseline, ratio, self.target, met]


@dataclass
class Run:
    """One invocation: its settings and everything measured so far."""

    quick: bool
    rounds: int
    rows: list[Row] = field(default_factory=list)
    # label -> latencies in milliseconds, for the chart
    latencies: dict[str, list[float]] = field(default_factory=dict)
    load_before: float = field(default_factory=lambda: os.getloadavg()[0])

    def size(self, full: int, quick: int) -> int:
        return quick if self.quick else full

    def add(self, row: Row) -> None:
        self.rows.append(row)
        print(" | ".join(row.cells()), flush=True)
        if row.measured:
            print(f"    {row.measured}", flush=True)


HEADER = ["id", "what", "figure", "baseline", "ratio: median (min-max)", "target", "met?"]


def machine() -> str:
    return (
        f"{os.cpu_count()} cores ({platform.processor() or platform.machine()}), "
        f"Python {platform.python_version()}, PostgreSQL {postgres_version()}, "
        f"{platform.system()} {platform.release()}"
    )


def markdown(run: Run, command: str) -> str:
    lines = [
        "# Benchmark results",
        "",
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {machine()}, with `{command}`: "
        f"{run.rounds} round(s) per figure{', quick sizes' if run.quick else ''}. Every process "
        "(PostgreSQL, Redis, MonCréneau, the receiver and the load clients) shares those cores; "
        f"load average {run.load_before:.1f} before the run and {os.getloadavg()[0]:.1f} after "
        "(anything above what the benchmarks start themselves means other work on the machine).",
        "",
        "| " + " | ".join(HEADER) + " |",
        "| " + " | ".join("---" for _ in HEADER) + " |",
    ]
    lines += ["| " + " | ".join(row.cells()) + " |" for row in run.rows]
    lines += ["", "## What each figure measures", ""]
    lines += [f"- **{row.id}**: {row.measured}" for row in run.rows if row.measured]
    lines += ["", "![latency percentiles](latency.png)", ""]
    return "\n".join(lines)


def chart(latencies: Mapping[str, Sequence[float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(8, 4.5))
    positions = range(len(PERCENTILES))
    for label, values in latencies.items():
        axes.plot(
            positions,
            [percentile(values, q) for q in PERCENTILES],
            marker="o",
            label=f"{label} (n={len(values)})",
        )
    axes.set_xticks(list(positions), [f"p{q:g}" for q in PERCENTILES])
    axes.set_yscale("log")
    axes.set_ylabel("milliseconds")
    axes.set_title("MonCréneau latency percentiles")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
