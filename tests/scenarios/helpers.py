"""Steps that several scenarios share."""

import contextlib
import os
import random
import re
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import docker
import psycopg
import pytest

from pgharness.constants import DATA_MOUNT
from pgharness.failover import primary_conninfo
from pgharness.image import ImageSpec, build_lock
from pgharness.load import WriteLoad
from pgharness.wait import poll_until


def generate_segments(primary, table, count):
    """Write rows into `table` and close `count` WAL segments; return the last one, once archived."""
    for _ in range(count):
        primary.sql(f"INSERT INTO {table} SELECT g FROM generate_series(1, 1000) g")
        segment = primary.switch_wal()
    primary.wait_for_archived(segment)
    return segment


def lose_partitioned_standby(primary, query, expected):
    """Wait until `primary` shows that it lost a partitioned standby: `query` returns `expected`.

    A commit first: the walsenders send it, and the partition refuses what goes to a cut-off standby
    (a TCP reset), so the primary drops that connection at once instead of at its next keepalive, half
    of wal_sender_timeout later.
    """
    primary.sql("SELECT txid_current()")
    return primary.poll_query_until(query, expected)


def notice_lost_standbys_fast(primary):
    """Let the primary drop a silent standby's connection after 2 s instead of wal_sender_timeout's 60 s."""
    primary.set_config(wal_sender_timeout="2s")


@contextlib.contextmanager
def process_stopped(node, backend_type):
    """The server process of `backend_type` on `node` (``'walreceiver'``, ``'checkpointer'``, as
    pg_stat_activity names it) stopped by SIGSTOP for the block, continued after it, also on failure."""
    pid = str(node.scalar("SELECT pid FROM pg_stat_activity WHERE backend_type = %s", (backend_type,)))
    node.exec("sh", "-c", 'kill -STOP "$1"', "sh", pid)
    try:
        yield
    finally:
        node.exec("sh", "-c", 'kill -CONT "$1"', "sh", pid)


def pg_wal_files(node):
    """The file names in the node's pg_wal."""
    return {name for (name,) in node.sql("SELECT name FROM pg_ls_waldir()")}


def connect_kwargs(node, **overrides):
    """Keyword arguments of a TCP connection to `node` through its published port (on 127.0.0.1 for a local
    engine, the engine's address for a remote one)."""
    return {"host": node.host, "port": node.port, "dbname": "postgres", "connect_timeout": 10, **overrides}


def refused(node, sqlstate, **kwargs):
    """Connecting with `kwargs` fails, and the server logs the refusal as a FATAL with `sqlstate`.

    libpq reports a failed connection without its SQLSTATE; the server's log line has it
    (log_line_prefix carries %e).
    """
    line = re.compile(rf"\] {sqlstate} .*FATAL: ")
    before = len(line.findall(node.logs(tail=5000)))
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(**kwargs).close()  # (closed, should it ever connect)
    node.poll_query_until("SELECT true")  # the server is still up, and its log line is written
    poll_until(
        lambda: len(line.findall(node.logs(tail=5000))),
        lambda count: count > before,
        what=f"a FATAL with SQLSTATE {sqlstate} in {node.name}'s log",
        timeout=10,
    )


def in_one_transaction(node, *statements, dbname="postgres", end="COMMIT"):
    """Run `statements` in one transaction on `node` (a session of its own), ended by `end`
    (``COMMIT``, or ``PREPARE TRANSACTION 'gid'``)."""
    with node.background_session(dbname) as session:
        session.run("BEGIN")
        for statement in statements:
            session.run(statement)
        session.run(end)


def with_a_failover_slot(cluster, *, failover_slots, hold_back=True, sync_worker=True, standby="standby2"):
    """A logical topology whose subscription's slot is kept for failover: its standby (`standby`, streaming
    through a physical slot, with feedback) is the one to take over. With `failover_slots` (17+) the slot
    is a failover slot; `sync_worker` lets the standby's slot-sync worker copy it, and `hold_back` sets
    synchronized_standby_slots (no change reaches the subscriber before the standby has it). Returns (the
    publisher, the standby, the subscriber, the subscription).

    By default the standby that takes over is one added at run time: it archives once promoted, as a real
    primary does (the old publisher's rejoin reads the new timeline's WAL from the archive)."""
    publisher, subscriber = cluster.primary, cluster.node("subscriber")
    standby = cluster.node(standby)
    publisher.sql("SELECT pg_create_physical_replication_slot('standby_slot')")
    standby_settings = {
        "primary_slot_name": "standby_slot",
        "hot_standby_feedback": "on",
        # The slot-sync worker connects to a database with primary_conninfo's role (see below).
        "primary_conninfo": primary_conninfo(cluster, "primary", standby.name, dbname="postgres"),
    }
    if failover_slots:
        # Slot synchronisation is a logical walsender connection: pg_hba.conf matches it by database, and the
        # harness lets the replication role open no database session. This scenario allows it one, here only.
        publisher.add_hba("host", "postgres", cluster.replication_user, "all", "scram-sha-256")
        standby_settings["sync_replication_slots"] = "on" if sync_worker else "off"
        if hold_back:
            publisher.set_config(synchronized_standby_slots="standby_slot")
    standby.set_config(standby_settings)
    publisher.poll_query_until("SELECT active FROM pg_replication_slots WHERE slot_name = 'standby_slot'")

    WriteLoad.create_table(publisher)
    WriteLoad.create_table(subscriber)
    publication = publisher.publish("pub", tables=["pgharness_load"])
    subscription = subscriber.subscribe(publication, "sub", **({"failover": True} if failover_slots else {}))
    subscription.wait_for_sync()
    if failover_slots and sync_worker:
        # The standby holds a synchronised copy of the subscription's slot.
        standby.poll_query_until("SELECT synced AND NOT temporary FROM pg_replication_slots WHERE slot_name = 'sub'")
    return publisher, standby, subscriber, subscription


# --- child processes: a test run or a `pgharness` command, and what they leave on the engine ---


def labelled(label):
    """Every container, volume and network carrying `label` (key=value)."""
    client = docker.from_env()
    filters = {"label": label}
    return (
        client.containers.list(all=True, filters=filters)
        + client.volumes.list(filters=filters)
        + client.networks.list(filters=filters)
    )


def remove_projects(label):
    """Remove the compose projects whose resources carry `label` (cleanup after a failed test)."""
    projects = {r.attrs.get("Labels", {}).get("com.docker.compose.project") for r in labelled(label)} - {None}
    for project in projects:
        subprocess.run(["docker", "compose", "-p", project, "down", "-v"], capture_output=True, check=False)


def default_sigint():
    """In a child, before exec: SIGINT as a terminal's foreground job has it.

    A shell starts background jobs (`make soak &`, CI steps) with SIGINT ignored, and
    children inherit that; a child that ignores SIGINT cannot show what Ctrl-C does.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def run_pytest(tmp_path, test_source, *args, env_extra=None, **popen):
    """Start pytest on `test_source` in a child process (output on its stdout); return the Popen.

    Its clusters carry the owner label ``org.pgharness.owner=pytest-<its pid>``. `env_extra` adds
    environment variables.
    """
    (tmp_path / "test_inner.py").write_text(textwrap.dedent(test_source))
    popen.setdefault("stdout", subprocess.PIPE)
    return subprocess.Popen(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", *args, "test_inner.py"],
        cwd=tmp_path,
        stderr=subprocess.STDOUT,
        text=True,
        # faulthandler: `finish` has a child that is past its deadline print every thread's stack.
        env={
            **os.environ,
            "PGHARNESS_EVIDENCE_DIR": str(tmp_path / "evidence"),
            "PYTHONFAULTHANDLER": "1",
            **(env_extra or {}),
        },
        preexec_fn=default_sigint,
        **popen,
    )


def finish(proc, timeout):
    """The output of child run `proc` (`run_pytest`) once it exits within `timeout` seconds. Past that, it is
    made to print every thread's stack (faulthandler, on SIGABRT) and the test fails with that output: where
    the child hangs, instead of a bare TimeoutExpired."""
    try:
        return proc.communicate(timeout=timeout)[0]
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGABRT)
        try:
            output = proc.communicate(timeout=30)[0]
        except subprocess.TimeoutExpired as e:
            output = e.output
        pytest.fail(f"the child run did not exit within {timeout} s; its output and stacks:\n{output}")


def file_system(node, path=DATA_MOUNT):
    """The type of the file system `path` is on, inside `node` (coreutils' names: tmpfs, ext2/ext3, ...)."""
    return node.exec("stat", "--file-system", "--format=%T", path).strip()


def project_resources(name):
    """Every container, volume and network labelled with compose project `name`."""
    client = docker.from_env()
    label = {"label": f"com.docker.compose.project={name}"}
    return (
        client.containers.list(all=True, filters=label)
        + client.volumes.list(filters=label)
        + client.networks.list(filters=label)
    )


def pgharness(*args, env=None, timeout=180):
    """Run `python -m pgharness ARGS` the way a user would; return the completed process."""
    return subprocess.run(
        [sys.executable, "-m", "pgharness", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=timeout,
        check=False,
    )


def node_ready(container):
    """Whether the node in `container` is ready as the harness means it (`Node.readiness`), asked through
    its cluster (a test run's clusters run no Docker healthchecks)."""
    from pgharness.cluster import Cluster
    from pgharness.errors import HarnessError

    if container.status != "running":
        return False
    try:
        node = Cluster.attach(container.labels["com.docker.compose.project"]).node(
            container.labels["com.docker.compose.service"]
        )
        return node.readiness(timeout=5) == "ready"
    except (HarnessError, psycopg.Error, docker.errors.NotFound):
        return False


def wait_until_ready(label, count=2, timeout=120, *, present=None):
    """Wait until `count` nodes (PostgreSQL containers) carry `label` and all are ready (`node_ready`); with
    `present`, until that many carry it and `count` of them are ready."""
    client = docker.from_env()
    filters = {"label": [label, "org.pgharness.kind=postgres"]}
    present = count if present is None else present

    def readiness():
        return [node_ready(c) for c in client.containers.list(all=True, filters=filters)]

    poll_until(
        readiness,
        lambda ready: len(ready) == present and ready.count(True) >= count,
        what=f"{present} containers labelled {label}, {count} of them ready",
        timeout=timeout,
        retry_on=(docker.errors.NotFound,),
    )


def remove_image_built_from(base):
    """Remove a throwaway base image, the node images built from it, and the lock file of their build."""
    client = docker.from_env()
    spec = ImageSpec(0, base)  # the node image's tag comes from the base image alone
    for image in client.images.list(spec.tag):
        client.images.remove(image.id, force=True)
    client.images.remove(base, force=True)
    build_lock(spec).unlink(missing_ok=True)


#: The kernel's ephemeral ports (Linux's default where the file is missing).
#: Random ports drawn from the system's entropy, whatever seeds `random`.
_PORTS = random.SystemRandom()

EPHEMERAL = Path("/proc/sys/net/ipv4/ip_local_port_range")


def free_port():
    """A port free on 127.0.0.1 now, below the ephemeral range. The engine publishes the other workers'
    clusters on ports it takes from that range (``127.0.0.1::5432``), so a free one picked there can be
    gone before `pgharness up` binds it ("port ... is already in use")."""
    low = int(EPHEMERAL.read_text().split()[0]) if EPHEMERAL.exists() else 32768
    for _ in range(100):
        # Not the `random` module's shared generator: a shuffled run seeds it alike in every worker, which
        # would then pick the same ports at the same moment.
        port = _PORTS.randrange(20000, max(low, 20001))
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise AssertionError(f"no free port between 20000 and {low} on 127.0.0.1 in 100 tries")
