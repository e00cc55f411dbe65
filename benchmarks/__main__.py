"""`python -m benchmarks [ID ...] [--quick]`: run the benchmarks, print and record figures."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

from benchmarks import api, commits, delivery, fairness, latency, relay, traffic
from benchmarks.results import Run, chart, markdown

HERE = Path(__file__).resolve().parent
# In the order they run; several ids may come from one benchmark.
BENCHMARKS: dict[str, Callable[[Run], None]] = {
    "P1": api.p1,
    "P2": delivery.p2,
    "P2t": traffic.p2t,
    "P3": delivery.p3,
    "P4": latency.p4,
    "P4r": latency.p4r,
    "P5": delivery.p5,
    "P6": relay.p6,
    "P7": delivery.p7,
    "M1": delivery.m1,
    "F1": fairness.f1,
    "F2": fairness.f2,
    "E1": latency.e1,
    "P9": commits.p9,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("ids", nargs="*", metavar="ID", help=f"among {', '.join(BENCHMARKS)}")
    parser.add_argument("--quick", action="store_true", help="smaller loads, shorter rounds")
    parser.add_argument("--rounds", type=int, default=None, help="rounds per figure [3; quick 2]")
    parser.add_argument(
        "--write",
        action="store_true",
        help="write RESULTS.md and latency.png even for a selection (always for a full run)",
    )
    args = parser.parse_args(argv)
    by_upper = {b.upper(): b for b in BENCHMARKS}
    unknown = [i for i in args.ids if i.upper() not in by_upper]
    if unknown:
        parser.error(f"unknown id(s) {unknown}; choose among {list(BENCHMARKS)}")
    selected = [by_upper[i.upper()] for i in args.ids] or list(BENCHMARKS)
    run = Run(quick=args.quick, rounds=args.rounds or (2 if args.quick else 3))
    started = time.monotonic()
    for bench_id in BENCHMARKS:
        if bench_id in selected:
            print(f"== {bench_id}", flush=True)
            BENCHMARKS[bench_id](run)
    print(f"== done in {time.monotonic() - started:.0f}s", flush=True)
    if args.write or not args.ids:
        command = "python -m benchmarks " + " ".join(sys.argv[1:] if argv is None else argv)
        (HERE / "RESULTS.md").write_text(markdown(run, command.strip()), encoding="utf-8")
        chart(run.latencies, HERE / "latency.png")
        print(f"wrote {HERE / 'RESULTS.md'} and {HERE / 'latency.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
