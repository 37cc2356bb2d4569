"""What each fault costs to switch on and to undo, on one primary + standby.

    python bench/faults.py [--runs 5]

For each fault of `pgharness.faults` that works on a running node (a partition, a degraded link, a starved
container, a paused container), the seconds its apply takes and the seconds its undo takes until the
cluster replicates again (the undo waits for a round trip on every replication link, as the context
managers do). Minimum, median and maximum over the runs; writes bench/faults-results.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

from pgharness import Cluster, Node
from pgharness.faults import Degradation, degrade, heal, partition, starve, wait_replicating


def unpause(node: Node) -> None:
    node.unpause()
    wait_replicating(node.cluster)


FAULTS: dict[str, tuple[Callable[[Node], None], Callable[[Node], None]]] = {
    "partition": (partition, heal),
    "degrade loss 10%": (lambda node: degrade(node, Degradation(loss=10)), heal),
    "degrade rate 1mbit": (lambda node: degrade(node, Degradation(rate=1_000_000)), heal),
    "starve 0.1 CPUs": (lambda node: starve(node, cpus=0.1), heal),
    "pause": (lambda node: node.pause(), unpause),
}


def summary(values: list[float]) -> dict[str, float]:
    return {
        "min": round(min(values), 3),
        "median": round(statistics.median(values), 3),
        "max": round(max(values), 3),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args(argv)
    results: dict[str, dict[str, dict[str, float]]] = {}
    with Cluster(owner="bench", storage="tmpfs") as cluster:
        standby = cluster.standby
        for name, (apply, undo) in FAULTS.items():
            applied, undone = [], []
            for _ in range(args.runs):
                started = time.perf_counter()
                apply(standby)
                middle = time.perf_counter()
                undo(standby)
                applied.append(middle - started)
                undone.append(time.perf_counter() - middle)
            results[name] = {"apply": summary(applied), "undo": summary(undone)}
            print(
                f"{name:<22} apply {results[name]['apply']['median']:.3f} s   "
                f"undo {results[name]['undo']['median']:.3f} s   (medians of {args.runs})"
            )
    out = Path(__file__).with_name("faults-results.json")
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
