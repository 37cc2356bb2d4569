"""Upgrade time by method: pg_upgrade in link and copy modes, the standby brought over by rsync or by a
fresh base backup, on a primary + standby with pgbench's tables at a chosen scale.

    python bench/upgrade.py [--from 13] [--to 15] [--scale 10] [--runs 1]

Each combination runs on a cluster of its own (data on disk, as `pgharness up` keeps it): the seconds of
each step of `pgharness.upgrade.upgrade` (stop, check, pg_upgrade, standbys, start) and their total.
Writes bench/upgrade-results.json. The upgrade image is built before the first run and not timed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pgharness import Cluster, HarnessError
from pgharness.image import ImageSpec, ensure_image, server_version, upgrade_image
from pgharness.load import pgbench_init
from pgharness.upgrade import Mode, StandbyMethod, upgrade
from pgharness.versions import parse_version_arg

COMBINATIONS: list[tuple[Mode, StandbyMethod]] = [
    ("link", "rsync"),
    ("link", "basebackup"),
    ("copy", "rsync"),
    ("copy", "basebackup"),
]
STEPS = ("stop", "check", "pg_upgrade", "standbys", "start")


def one_upgrade(old: str, new: str, scale: int, mode: Mode, standbys: StandbyMethod) -> dict[str, float]:
    with Cluster(image=old, owner="bench", storage="volume") as cluster:
        pgbench_init(cluster.primary, scale=scale)
        cluster.primary.wait_for_catchup(cluster.standby)
        report = upgrade(cluster, to=new, mode=mode, standbys=standbys)
        return {**report.seconds, "total": round(sum(report.seconds.values()), 3)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--from", dest="old", default="13")
    parser.add_argument("--to", dest="new", default="15")
    parser.add_argument("--scale", type=int, default=10, help="pgbench scale (10: about 160 MB)")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--json", default="bench/upgrade-results.json")
    args = parser.parse_args()
    try:
        old = ensure_image(ImageSpec(parse_version_arg(args.old)))
        new = ensure_image(ImageSpec(parse_version_arg(args.new)))
        upgrade_image(old, new)
        results: dict[str, list[dict[str, float]]] = {}
        for mode, standbys in COMBINATIONS:
            key = f"{mode}+{standbys}"
            results[key] = [one_upgrade(old, new, args.scale, mode, standbys) for _ in range(args.runs)]
    except HarnessError as e:
        print(f"bench: error: {e}", file=sys.stderr)
        return 1
    print(f"{server_version(old)} -> {server_version(new)}; pgbench scale {args.scale}; {args.runs} run(s) each")
    print(f"{'pg_upgrade mode + standby':<26}" + "".join(f"{step:>12}" for step in (*STEPS, "total")))
    for key, runs in results.items():
        best = min(runs, key=lambda r: r["total"])
        print(f"{key:<26}" + "".join(f"{best.get(step, 0):>11.2f}s" for step in (*STEPS, "total")))
    result = {"from": server_version(old), "to": server_version(new), "scale": args.scale, "seconds": results}
    Path(args.json).write_text(json.dumps(result, indent=2))
    print(f"written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
