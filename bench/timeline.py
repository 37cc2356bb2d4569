"""Where a cluster's start goes: one `Cluster.start()` (nodes on tmpfs, as the pytest plugin runs them) laid
out on one clock from the engine's events, the nodes' own log lines and the harness's steps.

    python bench/timeline.py [--pg-version 17] [--storage tmpfs|volume] [--standbys N]

Each line: seconds since `start()` was called, and what happened then. Docker's event times and its log
timestamps come from the engine's clock; on a local engine that is this machine's.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import datetime

from pgharness import Cluster, HarnessError
from pgharness.compose import docker_client
from pgharness.image import ImageSpec, ensure_image
from pgharness.versions import DEFAULT_VERSION, parse_version_arg

#: Node log lines worth a place on the timeline (a substring of each).
MILESTONES = (
    "bootstrapping",
    "base backup",
    "pg_basebackup",
    "starting PostgreSQL",
    "database system is ready",
    "entering standby mode",
    "consistent recovery state",
    "started streaming WAL",
)


def stamp(text: str) -> float:
    """A Docker log timestamp (RFC 3339 with nanoseconds) as seconds since the epoch."""
    whole, _, fraction = text.rstrip("Z").partition(".")
    base = datetime.fromisoformat(whole + "+00:00").timestamp()
    return base + float("0." + (fraction or "0")[:6])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pg-version", default=str(DEFAULT_VERSION))
    parser.add_argument("--storage", choices=("tmpfs", "volume"), default="tmpfs")
    parser.add_argument("--standbys", type=int, default=1, help="streaming standbys (the first is compose's)")
    args = parser.parse_args()
    try:
        image = ensure_image(ImageSpec(parse_version_arg(args.pg_version)))
        client = docker_client()
        cluster = Cluster(image=image, owner="bench", storage=args.storage, standbys=args.standbys)
        t0 = time.perf_counter()
        wall0 = time.time()
        with cluster:
            up = time.perf_counter() - t0
            events = client.events(since=int(wall0), until=int(time.time()) + 1, decode=True)
            lines: list[tuple[float, str]] = [(0.0, "start() called"), (up, "start() returned: every node ready")]
            for event in events:
                attributes = event.get("Actor", {}).get("Attributes", {})
                if attributes.get("com.docker.compose.project") != cluster.name and not str(
                    attributes.get("name", "")
                ).startswith(cluster.name):
                    continue
                at = event["timeNano"] / 1e9 - wall0
                if at < 0 or event.get("Action", "").startswith("exec_"):
                    continue
                name = attributes.get("com.docker.compose.service") or attributes.get("name", "")
                lines.append((at, f"engine: {event['Type']} {event['Action']} {name}"))
            for node in cluster.nodes:
                raw = node.container.logs(timestamps=True).decode(errors="replace")
                for line in raw.splitlines():
                    when, _, text = line.partition(" ")
                    if any(m in text for m in MILESTONES):
                        lines.append((stamp(when) - wall0, f"{node.name}: {text.strip()[:110]}"))
    except HarnessError as e:
        print(f"timeline: error: {e}", file=sys.stderr)
        return 1
    for at, what in sorted(lines):
        print(f"{at:7.3f} s  {what}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
