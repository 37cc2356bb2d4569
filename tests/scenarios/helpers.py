"""Steps that several scenarios share."""


def generate_segments(primary, table, count):
    """Write rows into `table` and close `count` WAL segments; return the last one, once archived."""
    for _ in range(count):
        primary.sql(f"INSERT INTO {table} SELECT g FROM generate_series(1, 1000) g")
        segment = primary.switch_wal()
    primary.wait_for_archived(segment)
    return segment


def notice_lost_standbys_fast(primary):
    """Let the primary drop a silent standby's connection after 2 s instead of wal_sender_timeout's 60 s."""
    primary.sql("ALTER SYSTEM SET wal_sender_timeout = '2s'")
    primary.sql("SELECT pg_reload_conf()")


def pg_wal_files(node):
    """The file names in the node's pg_wal."""
    return {name for (name,) in node.sql("SELECT name FROM pg_ls_waldir()")}


def set_and_reload(node, setting, value):
    """ALTER SYSTEM SET one setting and reload the configuration."""
    node.sql(f"ALTER SYSTEM SET {setting} = '{value}'")
    node.sql("SELECT pg_reload_conf()")
