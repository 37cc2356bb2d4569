"""Benchmark: `pgharness up` against the floor, alternated in one run. Timings live here, never in tests.

    python bench/floor.py --runs 5              # data on disk (up's default), then on tmpfs

The floor is a primary and a streaming standby of the same node image started with the engine's API
alone, every shortcut taken: no compose, no harness, no archive, no healthcheck, both containers created
at once (the standby retries its base backup until the primary answers), ready when the standby's WAL
receiver streams, asked every 10 ms. Its standby takes a base backup, as a `docker run` pair's does;
`floor_template` is the same floor with the standby from the image's template (STANDBY_SOURCE=template,
what `pgharness up` does by default), on disk. `pgharness up --ports ephemeral` is timed as a user runs it
(its process, from start to its return with the standby streaming); its removal, and the floors', are
not timed. Each round times the five in turn (the floors and up on disk, up and the floor on tmpfs), so
all see the machine as it is; each ratio is given round by round: up on disk against the floor on disk
and against the template floor, up on tmpfs against the floor on disk (what a plain `docker run` pair
gives a user) and against the floor on tmpfs. Writes bench/floor-results.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import docker
import psycopg

REPOSITORY = Path(__file__).resolve().parents[1]
LABELS = {"org.pgharness.managed": "true", "org.pgharness.owner": "bench-floor"}
DATA = "/var/lib/pgharness"
#: The node's port, published on 127.0.0.1 at a port the engine picks.
EPHEMERAL: dict[str, Any] = {"5432/tcp": ("127.0.0.1", None)}


def streaming(port: int) -> bool:
    try:
        with psycopg.connect(host="127.0.0.1", port=port, user="postgres", password="postgres",
                             dbname="postgres", connect_timeout=1) as conn:  # fmt: skip
            row = conn.execute("SELECT status FROM pg_stat_wal_receiver").fetchone()
            return row is not None and row[0] == "streaming"
    except psycopg.Error:
        return False


def tmpfs_owner(client: docker.DockerClient, image: str) -> str:
    """tmpfs options that give the mount to the image's postgres (the engine ignores a tmpfs ``mode``)."""
    ids = client.containers.run(image, ["sh", "-c", 'echo "$(id -u) $(id -g)"'], entrypoint=[], remove=True)
    uid, gid = bytes(ids).decode().split()
    return f"uid={uid},gid={gid}"


def floor_pair(
    client: docker.DockerClient, image: str, storage: str, timeout: float = 120, standby_source: str = "basebackup"
) -> float:
    """Seconds from nothing to a standby streaming from its primary, by the engine's API alone."""
    name = f"pghfloor-{uuid.uuid4().hex[:8]}"
    owner = tmpfs_owner(client, image) if storage == "tmpfs" else ""
    made: list[Any] = []
    started = time.perf_counter()
    try:
        network = client.networks.create(name, labels=LABELS)
        made.append(network)
        containers = {}
        for role, settings in (
            ("primary", "wal_level = replica\nmax_wal_senders = 10\nfsync = off"),
            ("standby", "hot_standby = on\nwal_receiver_status_interval = '1s'\nfsync = off"),
        ):
            on_tmpfs = storage == "tmpfs"
            containers[role] = client.containers.run(
                image, [role], detach=True, name=f"{name}-{role}", hostname=role, network=name, labels=LABELS,
                environment={"POSTGRES_PASSWORD": "postgres", "PGHARNESS_SETTINGS": settings,
                             "UPSTREAM_HOST": f"{name}-primary", "NODE_NAME": role,
                             "STANDBY_SOURCE": standby_source},
                ports=EPHEMERAL, shm_size="256m",
                tmpfs={DATA: owner} if on_tmpfs else None,
                volumes=None if on_tmpfs else {f"{name}-{role}": {"bind": DATA, "mode": "rw"}},
            )  # fmt: skip
            made.insert(0, containers[role])
        standby = containers["standby"]
        standby.reload()
        port = int(standby.attrs["NetworkSettings"]["Ports"]["5432/tcp"][0]["HostPort"])
        while not streaming(port):
            if time.perf_counter() - started > timeout:
                raise RuntimeError(
                    f"the floor's standby did not stream within {timeout:g} s:\n{standby.logs()[-2000:]!r}"
                )
            time.sleep(0.01)
        return time.perf_counter() - started
    finally:
        for thing in made:
            thing.remove(force=True) if hasattr(thing, "status") else thing.remove()
        if storage != "tmpfs":
            for role in ("primary", "standby"):
                with contextlib.suppress(docker.errors.NotFound):
                    client.volumes.get(f"{name}-{role}").remove(force=True)


def up_pair(storage: str) -> float:
    """Seconds `pgharness up` takes (its whole process), then removed (not timed)."""
    name = f"pghup-{uuid.uuid4().hex[:8]}"
    pgharness = str(Path(sys.executable).with_name("pgharness"))
    started = time.perf_counter()
    subprocess.run([pgharness, "up", "--name", name, "--ports", "ephemeral", "--storage", storage],
                   check=True, stdout=subprocess.DEVNULL, cwd=REPOSITORY)  # fmt: skip
    seconds = time.perf_counter() - started
    subprocess.run([pgharness, "down", "--name", name], check=True, stdout=subprocess.DEVNULL, cwd=REPOSITORY)
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--image", default="pgharness/postgres:17", help="the node image (default: 17's)")
    args = parser.parse_args()
    client = docker.from_env()
    for storage in ("volume", "tmpfs"):  # warm: the first container and process of a run pay for caches
        floor_pair(client, args.image, storage)
        up_pair(storage)
    # Each round times all five, in turn: the floors and up with data on disk, then on tmpfs.
    rounds = [
        {"floor_volume": floor_pair(client, args.image, "volume"),
         "floor_template": floor_pair(client, args.image, "volume", standby_source="template"),
         "up_volume": up_pair("volume"), "up_tmpfs": up_pair("tmpfs"),
         "floor_tmpfs": floor_pair(client, args.image, "tmpfs")}
        for _ in range(args.runs)
    ]  # fmt: skip
    for key in ("floor_volume", "floor_template", "up_volume", "floor_tmpfs", "up_tmpfs"):
        print(f"{key:<13} median {statistics.median(r[key] for r in rounds):.2f} s")
    results: dict[str, Any] = {"rounds": rounds}
    pairs = (
        ("up_volume", "floor_volume"),
        ("up_volume", "floor_template"),
        ("up_tmpfs", "floor_volume"),
        ("up_tmpfs", "floor_tmpfs"),
    )
    for up, floor in pairs:
        ratios = [r[up] / r[floor] for r in rounds]
        results[f"{up}/{floor}"] = ratios
        print(f"{up}/{floor}: {', '.join(f'{x:.2f}' for x in ratios)} (median {statistics.median(ratios):.2f})")
    (REPOSITORY / "bench" / "floor-results.json").write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
