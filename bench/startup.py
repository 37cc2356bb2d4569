"""Benchmark: time from nothing to a primary + streaming standby with a first row replicated.

    make bench                      # 5 runs on the default image
    python bench/startup.py --runs 10 --pg-version 17

Prints each phase's median, min and max. Timings live here, never in tests.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import psycopg

from harness import Cluster, HarnessError, Node
from harness.compose import docker_client
from harness.image import ImageSpec, ensure_image, server_version
from harness.versions import DEFAULT_VERSION, parse_version_arg


def first_write(node: Node) -> float:
    """Retry an INSERT on `node` until one commits; return when it did."""
    while True:
        try:
            node.sql("INSERT INTO hoge VALUES (2)")
            return time.perf_counter()
        except psycopg.Error:
            time.sleep(0.01)


def one_run(image: str) -> dict[str, float]:
    t0 = time.perf_counter()
    cluster = Cluster(image=image, owner="bench")
    try:
        cluster.start()
        t_up = time.perf_counter()
        primary, standby = cluster.primary, cluster.standby
        primary.sql("CREATE TABLE hoge (col integer)")
        primary.sql("INSERT INTO hoge VALUES (1)")
        primary.wait_for_catchup(standby)
        assert standby.sql("SELECT col FROM hoge") == [(1,)]
        t_row = time.perf_counter()
        # Harness-driven failover: SIGKILL the primary, promote the standby, first write accepted.
        t_kill = time.perf_counter()
        primary.kill()
        t_promote = time.perf_counter()
        standby.promote()
        t_failover = first_write(standby)
    finally:
        t_teardown = time.perf_counter()
        cluster.destroy()
    t_down = time.perf_counter()
    return {
        "up (compose up --wait)": t_up - t0,
        "up + first row replicated": t_row - t0,
        "promotion (to first write)": t_failover - t_promote,
        "failover (kill to first write)": t_failover - t_kill,
        "down (compose down -v)": t_down - t_teardown,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--pg-version", default=str(DEFAULT_VERSION))
    parser.add_argument("--pg-image", default="")
    parser.add_argument("--json", default="bench/results.json", help="where to write the figures as JSON")
    args = parser.parse_args()
    try:
        image = ensure_image(ImageSpec(parse_version_arg(args.pg_version), args.pg_image or None))
        runs = [one_run(image) for _ in range(args.runs)]
    except HarnessError as e:
        print(f"bench: error: {e}", file=sys.stderr)
        return 1
    machine = {
        "cores": os.cpu_count(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "docker": docker_client().version().get("Version"),
        "postgres": server_version(image),
        "image": image,
    }
    figures = {}
    print(", ".join(f"{k}: {v}" for k, v in machine.items()) + f"; {args.runs} runs")
    print(f"{'phase':<32} {'median':>8} {'min':>8} {'max':>8}")
    for phase in runs[0]:
        values = [r[phase] for r in runs]
        figures[phase] = {"median": statistics.median(values), "min": min(values), "max": max(values)}
        print(f"{phase:<32} {statistics.median(values):>7.2f}s {min(values):>7.2f}s {max(values):>7.2f}s")
    Path(args.json).write_text(json.dumps({"machine": machine, "runs": args.runs, "seconds": figures}, indent=2))
    print(f"written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
