"""Constants several modules share: where things live in a node, how resources are labelled.

A leaf module: it imports nothing of the harness, so any module can import it.
"""

from __future__ import annotations

#: Where nodes are reached from the host: published ports on loopback only.
HOST = "127.0.0.1"
#: The port PostgreSQL listens on inside every node.
CONTAINER_PORT = 5432
#: Where a cluster's compose services keep their data directories: disk volumes, or memory (tmpfs).
STORAGES = ("volume", "tmpfs")
#: Where the compose `standby` starts from (compose.yaml's STANDBY_SOURCE): the template, or a base backup.
STANDBY_SOURCES = ("template", "basebackup")
#: pg_upgrade's modes, and how a standby comes over in an upgrade (`pgharness.upgrade`; the command's choices).
UPGRADE_MODES = ("link", "copy", "clone")
UPGRADE_STANDBY_METHODS = ("rsync", "basebackup")
#: Where each node's data volume is mounted (PGDATA is its data/ folder).
DATA_MOUNT = "/var/lib/pgharness"
#: Where the shared WAL archive is mounted.
ARCHIVE_PATH = "/archive"
#: Where the backups volume is mounted (base backups and dumps, one entry each).
BACKUPS_PATH = "/backups"
#: The compose network that carries node-to-node traffic (compose.yaml).
REPLICATION_NETWORK = "replication"
#: Size of the header that starts every WAL segment (SizeOfXLogLongPHD).
LONG_PAGE_HEADER_SIZE = 40

#: Label that every container, volume and network of the harness carries.
MANAGED_LABEL = "org.pgharness.managed"
#: Compose's own labels: the project (one per cluster) and the service.
PROJECT_LABEL = "com.docker.compose.project"
SERVICE_LABEL = "com.docker.compose.service"
ONEOFF_LABEL = "com.docker.compose.oneoff"
CONFIG_FILES_LABEL = "com.docker.compose.project.config_files"
#: Label naming a node added at run time (a one-off container of the `node` service).
NODE_LABEL = "org.pgharness.node"
#: Label marking a PostgreSQL node's container (compose.yaml's x-node), as opposed to a user's service.
KIND_LABEL = "org.pgharness.kind"
#: The kind of the container that holds an environment's name while one process makes it (`environments.claimed`).
CLAIM_KIND = "claim"
#: Who removes a resource: a process (``pytest-PID``, ``pid-PID``) or a person (``harness-up``, ``compose``).
OWNER_LABEL = "org.pgharness.owner"
#: The owning process's host (hostname/machine id) and start time (clock ticks after boot).
OWNER_HOST_LABEL = "org.pgharness.owner-host"
OWNER_STARTED_LABEL = "org.pgharness.owner-started"
