"""Simulator speed: wall time and simulated events per second for each official workload (one core).

    SPATTEN_DATA_DIR=../shared/data python experiments/bench_hwsim.py [--repeat 3]
Target: the 11,328-row GPT-2-medium workload in under 2 s.
"""

from __future__ import annotations

import argparse
import time

from spatten import hwsim
from spatten.hwsim import paper
from spatten.trace import Trace


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--preset", default="spatten")
    args = parser.parse_args()
    wdir = paper.workloads_dir()
    print("| workload | rows | DRAM bytes | simulated cycles | events | best wall s | events/s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for path in sorted(wdir.glob("*.csv")):
        trace = Trace.from_official_csv(path)
        best, report = float("inf"), None
        for _ in range(args.repeat):
            start = time.perf_counter()
            report = hwsim.simulate(trace, args.preset, dense_baseline=False)
            best = min(best, time.perf_counter() - start)
        events = report["events"]
        print(f"| {path.name[:60]} | {len(trace)} | {report.dram_bytes} | {report.cycles} | {events} | "
              f"{best:.3f} | {events / best:.3g} |")


if __name__ == "__main__":
    main()
