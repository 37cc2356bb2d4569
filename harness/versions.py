"""What differs between PostgreSQL versions, in one place.

The harness serves PostgreSQL 13 and later. This module holds the table of
supported versions, the Debian suite each default image is built from, the
parsing of the server's own version report, and the translation of exercise 26-1's
pre-12 settings (recovery.conf, wal_keep_segments, pg_basebackup --xlog) into
what each version uses now. Pure logic: unit-tested without Docker.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pgharness.errors import UnsupportedVersion

#: The oldest major version the harness serves (wal_keep_size arrived in 13).
MIN_SUPPORTED = 13
#: The major version used when none is asked for.
DEFAULT_VERSION = 17


@dataclass(frozen=True)
class DebianSuite:
    """A Debian suite that ships ``postgresql-<major>``, for the offline image build."""

    name: str
    major: int
    #: Extra apt options for mmdebstrap (forky's Release file is past Valid-Until).
    apt_options: tuple[str, ...] = ()

    @property
    def packages(self) -> tuple[str, ...]:
        # nftables: the packet filter that partitions and degrades a node's links (pgharness.faults);
        # iproute2: tc, for a link's delay and jitter (netem); rsync: the manual's step that brings a
        # standby over a major upgrade (pgharness.upgrade).
        return (f"postgresql-{self.major}", "nftables", "iproute2", "rsync")


SUITES: dict[int, DebianSuite] = {
    13: DebianSuite("bullseye", 13),
    15: DebianSuite("bookworm", 15),
    17: DebianSuite("trixie", 17),
    18: DebianSuite("forky", 18, ('Acquire::Check-Valid-Until "false"',)),
}


def suite_for(major: int) -> DebianSuite:
    """The Debian suite to build PostgreSQL `major` from, or `UnsupportedVersion`."""
    require_supported(major)
    why = unbuildable(major, f"bring an image with PG_IMAGE=postgres:{major}")
    if why:
        raise UnsupportedVersion(why)
    return SUITES[major]


def unbuildable(major: int, remedy: str) -> str | None:
    """Why PostgreSQL `major` cannot be built here (no Debian suite ships it), ending with `remedy` in the
    caller's words (a flag, an argument); None when it can."""
    if major in SUITES:
        return None
    built = ", ".join(str(v) for v in sorted(SUITES))
    return f"no Debian suite ships PostgreSQL {major} for the offline build (versions: {built}); {remedy}"


def require_supported(major: int) -> None:
    """Refuse versions the harness cannot serve, naming the supported range."""
    if major < MIN_SUPPORTED:
        raise UnsupportedVersion(
            f"PostgreSQL {major} is not supported: the harness serves PostgreSQL {MIN_SUPPORTED} and later"
        )


def parse_version_arg(text: str) -> int:
    """Parse a user's ``--pg-version`` / ``PG_VERSION`` (``17``, ``17.2``) into a major version."""
    m = re.fullmatch(r"\s*(\d+)(?:\.\d+)?\s*", text)
    if not m:
        raise UnsupportedVersion(f"not a PostgreSQL version: {text!r} (expected a major version such as 17)")
    major = int(m.group(1))
    require_supported(major)
    return major


def major_from_version_num(version_num: int) -> int:
    """The major version from ``server_version_num`` (170002 -> 17)."""
    if version_num < 100000:
        raise UnsupportedVersion(
            f"server_version_num {version_num} is from before PostgreSQL 10; "
            f"the harness serves PostgreSQL {MIN_SUPPORTED} and later"
        )
    return version_num // 10000


def parse_postgres_v(output: str) -> int:
    """The major version from ``postgres -V`` (``postgres (PostgreSQL) 17.2 (Debian 17.2-1)``)."""
    m = re.search(r"\(PostgreSQL\)\s+(\d+)", output)
    if not m:
        raise UnsupportedVersion(f"cannot read a PostgreSQL version from {output.strip()!r}")
    return int(m.group(1))


@dataclass(frozen=True)
class Modernized:
    """Where one of the manual's pre-12 settings (as the exercise uses them) lives in a current server."""

    setting: str | None  #: the postgresql.conf setting, or None when a file replaces it
    value: str | None
    where: str  #: the file or option that carries it now


#: Bytes in a WAL segment of a default initdb, to turn segment counts into sizes.
_SEGMENT_MB = 16


def modernize(setting: str, value: str, major: int) -> Modernized:
    """Translate a pre-12 setting of exercise 26-1 (recovery.conf, wal_keep_segments, ...).

    Settings that recovery.conf held become ordinary settings in postgresql.conf
    (any included file, or ALTER SYSTEM); ``standby_mode = on`` becomes the file
    ``standby.signal``; ``wal_keep_segments = N`` becomes ``wal_keep_size`` of N
    segments of 16 MB.
    """
    require_supported(major)
    if setting == "standby_mode":
        if value.lower() in ("on", "true", "1", "yes"):
            return Modernized(None, None, "standby.signal (an empty file in the data directory)")
        return Modernized(None, None, "no standby.signal (and no recovery.signal)")
    if setting in (
        "restore_command",
        "primary_conninfo",
        "primary_slot_name",
        "recovery_target_timeline",
        "archive_cleanup_command",
        "recovery_end_command",
        "recovery_min_apply_delay",
    ):
        return Modernized(setting, value, "postgresql.conf")
    if setting == "trigger_file":
        # promote_trigger_file was removed in PostgreSQL 16.
        if major >= 16:
            return Modernized(None, None, "pg_ctl promote or SELECT pg_promote()")
        return Modernized("promote_trigger_file", value, "postgresql.conf")
    if setting == "wal_keep_segments":
        return Modernized("wal_keep_size", f"{int(value) * _SEGMENT_MB}MB", "postgresql.conf")
    raise KeyError(f"{setting} is not one of the manual's pre-12 settings (as the exercise uses them)")


#: pg_basebackup options of exercise 26-1 and what replaced them in PostgreSQL 10
#: (--xlog fetched the WAL at the end; streaming it alongside is the default now).
BASEBACKUP_OPTIONS = {"--xlog": "--wal-method=stream", "-x": "--wal-method=stream", "--xlog-method": "--wal-method"}


#: Replication features the harness uses or tests, by the major version that brought them.
FEATURES: dict[str, int] = {
    "wal_keep_size": 13,  # wal_keep_segments renamed, in MB
    "max_slot_wal_keep_size": 13,  # slots invalidated past a WAL size ('lost')
    "pg_verifybackup": 13,  # backup manifests
    "replay_pause_state": 14,  # pg_get_wal_replay_pause_state(): 'pause requested' vs 'paused'
    "restore_command_reload": 15,  # restore_command changes on reload, not restart
    "incremental_backup": 17,  # summarize_wal, pg_basebackup --incremental, pg_combinebackup
    "idle_replication_slot_timeout": 18,  # idle slots invalidated at checkpoint
}


def supports(feature: str, major: int) -> bool:
    """Whether PostgreSQL `major` has `feature` (a key of `FEATURES`)."""
    try:
        return major >= FEATURES[feature]
    except KeyError:
        raise KeyError(f"unknown feature {feature!r}; known: {', '.join(FEATURES)}") from None


_SPEC_RE = re.compile(r"^\s*(>=|<=|==|!=|>|<)?\s*(\d+)\s*$")


def version_matches(spec: str, major: int) -> bool:
    """Whether `major` satisfies `spec`: comparisons joined by commas (``">=15"``, ``">=13,<17"``, ``"17"``)."""
    ok = True
    for part in spec.split(","):
        m = _SPEC_RE.match(part)
        if not m:
            raise ValueError(f"version spec {spec!r}: use comparisons such as '>=17' or '>=13,<16'")
        op, number = m.group(1) or "==", int(m.group(2))
        ok &= {
            ">=": major >= number,
            "<=": major <= number,
            "==": major == number,
            "!=": major != number,
            ">": major > number,
            "<": major < number,
        }[op]
    return ok
