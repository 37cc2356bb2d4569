#!/bin/sh
# pgharness: entrypoint, healthcheck and build steps of the harness's node image.
#
#   pgharness primary [postgres args]   bootstrap a primary (first start) and run postgres
#   pgharness standby [postgres args]   pg_basebackup from the primary, or the template (STANDBY_SOURCE),
#                                       on the first start; run postgres
#   pgharness backup NAME [OPTIONS]     pg_basebackup from the upstream into /backups/NAME
#   pgharness health ready|standby      healthcheck (exit 0 = healthy)
#   pgharness archive PATH NAME         archive_command: copy a WAL file into /archive, crash-safe
#   pgharness check-image               build step: find the server binaries, put them on PATH
#   pgharness make-template             build step: initdb a template cluster to copy at start
#   pgharness old-binaries collect|adopt DIR  build steps of an upgrade image: another major's
#                                       server files (and the libraries they need) from its image,
#                                       then runnable in this one (pgharness.upgrade)
#   pgharness upgrade check|link|copy|clone   pg_upgrade of the stopped $PGDATA (the old major,
#                                       binaries in /opt/pgharness/old/bin) into $PGDATA.new
#   pgharness upgrade-swap [drop-old]   $PGDATA -> $PGDATA.old, $PGDATA.new -> $PGDATA
#
# POSIX sh on purpose: it runs in Debian, official and Alpine images alike.
# Settings come from the environment (compose.yaml sets them):
#   PGHARNESS_SETTINGS    postgresql.conf lines for this node, rewritten at every start
#                         into $PGDATA/pgharness.conf (ALTER SYSTEM still wins over them)
#   PGHARNESS_EXTRA_SETTINGS  more lines, after those: a user's settings for every node
#   PGHARNESS_NODE_SETTINGS   more lines, after those: a user's settings for this node alone
#   PGHARNESS_INIT_SQL    SQL run once on a new primary (schema, extensions); standbys get
#                         its result through their base backup
#   PGHARNESS_TLS_CA, PGHARNESS_TLS_CERT, PGHARNESS_TLS_KEY   PEM texts: with all three,
#                         the node serves TLS, replication connections must use it, and a
#                         standby connects with sslmode=verify-full against PGHARNESS_TLS_CA
#   POSTGRES_PASSWORD     the postgres superuser's password (default: postgres)
#   REPLICATION_USER      the replication role (default: repli)
#   REPLICATION_PASSWORD  its password (default: repli)
# and, for a standby, exercise 26-1's recovery.conf as variables:
#   NODE_NAME             application_name in primary_conninfo (default: the hostname)
#   UPSTREAM_HOST, UPSTREAM_PORT where it takes its base backup and streams from (primary:5432)
#   STREAMING             off: no primary_conninfo, restore_command alone (log shipping)
#   SLOT_NAME             a physical slot: made by pg_basebackup, used as primary_slot_name
#   RESTORE_COMMAND       restore_command (empty: none)
#   FROM_BACKUP           start from /backups/NAME instead of a fresh pg_basebackup
#   STANDBY_SOURCE        basebackup (default) or template: the image's template data directory, with
#                         the rest replayed from the upstream's WAL (a volume's first bootstrap only)
#   RECOVERY_TARGET       point-in-time recovery instead of a standby: name:N, xid:N,
#                         lsn:X/Y, time:TIMESTAMP or immediate (recovery.signal, not standby.signal)
#   RECOVERY_TARGET_ACTION, RECOVERY_TARGET_INCLUSIVE   promote|pause|shutdown, on|off
#   BASEBACKUP_TIMEOUT    seconds a standby keeps retrying pg_basebackup (default: 120)
#   UPSTREAM_RESOLVE_TIMEOUT  seconds a standby waits for its upstream's name to resolve (default: 5)
set -eu

PGDATA=${PGDATA:-/var/lib/pgharness/data}
TLS_DIR=${PGHARNESS_TLS_DIR:-/var/lib/pgharness/tls}
TEMPLATE=${PGHARNESS_TEMPLATE:-/opt/pgharness/template}

say() { printf 'pgharness: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

# Where the server binaries are: PATH first, then pg_config, then the usual
# package layouts. Prints the directory, or nothing.
find_bindir() {
    if p=$(command -v postgres 2>/dev/null) && [ -x "$p" ]; then
        dirname "$p"; return
    fi
    if d=$(pg_config --bindir 2>/dev/null) && [ -x "$d/postgres" ]; then
        echo "$d"; return
    fi
    # The newest version first (supported versions have two digits: lexical order works).
    # shellcheck disable=SC2086  # the globs are meant to expand
    for d in $(ls -d ${PGHARNESS_BIN_GLOBS:-/usr/lib/postgresql/*/bin /usr/local/pgsql/bin /usr/pgsql-*/bin} 2>/dev/null | sort -r); do
        if [ -x "$d/postgres" ]; then echo "$d"; return; fi
    done
}

check_image() {
    bindir=$(find_bindir)
    [ -n "$bindir" ] || die "no PostgreSQL server binaries in this image (looked on PATH, in pg_config --bindir, /usr/lib/postgresql/*/bin, /usr/local/pgsql/bin): choose an image that carries postgres, initdb and pg_basebackup"
    for tool in initdb pg_ctl pg_basebackup pg_isready psql; do
        [ -x "$bindir/$tool" ] || die "the image has postgres in $bindir but not $tool: choose an image with the full server and client tools"
    done
    id postgres >/dev/null 2>&1 || die "the image has no 'postgres' user to run the server as"
    major=$("$bindir/postgres" -V | sed -n 's/^postgres (PostgreSQL) \([0-9]*\).*/\1/p')
    [ -n "$major" ] || die "cannot read the server version from '$bindir/postgres -V'"
    [ "$major" -ge 13 ] || die "PostgreSQL $major is not supported: the harness serves PostgreSQL 13 and later"
    # Put the binaries on PATH when they are not (Debian's packages keep them in
    # /usr/lib/postgresql/N/bin, with version-picking wrappers in /usr/bin).
    if [ "$(command -v postgres 2>/dev/null)" != "$bindir/postgres" ]; then
        for f in "$bindir"/*; do ln -sf "$f" /usr/local/bin/; done
    fi
    say "PostgreSQL $major, binaries in $bindir"
    ensure_tools
}

# Tools the harness runs in a node as root: nft, the packet filter that partitions and degrades a
# node's links (pgharness.faults), tc (iproute2), for a link's delay and jitter, and rsync, the
# manual's step that brings a standby over a major upgrade (pgharness.upgrade). The harness's own images carry both; an image a user brings gets them
# from its package manager when the build can reach one, and otherwise builds without them: every
# other feature works, and the one that needs the tool is refused in one line.
ensure_tools() {
    missing=""
    for tool in nft tc rsync; do command -v "$tool" >/dev/null 2>&1 || missing="$missing $tool"; done
    [ -n "$missing" ] || return 0
    packages=$(printf '%s\n' $missing | sed 's/^nft$/nftables/; s/^tc$/iproute2/')
    # shellcheck disable=SC2086  # one word per package
    if command -v apt-get >/dev/null 2>&1; then
        { apt-get update -qq && apt-get install -y -qq --no-install-recommends $packages >/dev/null \
            && rm -rf /var/lib/apt/lists/*; } || true
    elif command -v apk >/dev/null 2>&1; then
        apk add --no-cache --quiet $packages || true
    fi
    command -v nft >/dev/null 2>&1 \
        || say "warning: no nft in this image and none could be installed: partitions (pgharness.faults.partition) are refused"
    command -v tc >/dev/null 2>&1 \
        || say "warning: no tc in this image and none could be installed: a link's delay and jitter (pgharness.faults.degrade) are refused"
    command -v rsync >/dev/null 2>&1 \
        || say "warning: no rsync in this image and none could be installed: upgrades bring standbys over by base backup only"
}

make_template() {
    initdb -D "$TEMPLATE" --username=postgres --no-locale --encoding=UTF8 \
        --auth-local=trust --auth-host=scram-sha-256 --no-sync >/dev/null
    cat >>"$TEMPLATE/postgresql.conf" <<'EOF'

# --- pgharness: node-neutral defaults; role settings come from compose.yaml ---
listen_addresses = '*'
port = 5432
password_encryption = 'scram-sha-256'
log_line_prefix = '%m [%p] %e %q%a '
log_connections = off
include_if_exists = 'pgharness.conf'
EOF
    rm -rf "$TEMPLATE"/pg_log "$TEMPLATE"/log
}

# --- quoting: one function per place a value lands in (values never carry a line break:
# check_value refuses those) ---
# A postgresql.conf string value: 'it''s', backslashes doubled (the file's scanner reads escapes).
conf_string() { printf "'%s'" "$(printf '%s' "$1" | sed -e 's/\\/\\\\/g' -e "s/'/''/g")"; }
# A libpq connection-string value: 'it\'s', a backslash before ' and \.
conninfo_value() { printf "'%s'" "$(printf '%s' "$1" | sed -e 's/\\/\\\\/g' -e "s/'/\\\\'/g")"; }
# An SQL string literal (standard_conforming_strings): 'it''s'.
sql_literal() { printf "'%s'" "$(printf '%s' "$1" | sed "s/'/''/g")"; }
# An SQL identifier, and a pg_hba.conf name (quoted: no keyword, +group or /regex meaning): "a""b".
sql_ident() { printf '"%s"' "$(printf '%s' "$1" | sed 's/"/""/g')"; }
hba_name() { sql_ident "$1"; }
# A postgresql.conf line NAME = 'VALUE' (printf, never echo: dash's echo reads backslash escapes).
setting() { printf '%s = %s\n' "$1" "$(conf_string "$2")"; }

# Refuses (one line) a value no quoting can carry everywhere: empty, or with a line break.
check_value() {
    case "$2" in
    "") die "$1 is empty" ;;
    *"
"*) die "$1 contains a line break, which no connection string or postgresql.conf value carries" ;;
    esac
}

# A libpq connection string to the upstream for the replication role, from
# UPSTREAM_HOST/UPSTREAM_PORT, with TLS options when TLS is on; more key=value
# pairs (already quoted) may follow as arguments. No password: it goes in
# PGPASSWORD, or (primary_conninfo) is added by the caller.
upstream_conninfo() {
    printf 'host=%s port=%s user=%s' "$(conninfo_value "${UPSTREAM_HOST:-primary}")" \
        "$(conninfo_value "${UPSTREAM_PORT:-5432}")" "$(conninfo_value "${REPLICATION_USER:-repli}")"
    if tls_enabled; then printf ' sslmode=verify-full sslrootcert=%s' "$(conninfo_value "$TLS_DIR/ca.crt")"; fi
    for pair in "$@"; do printf ' %s' "$pair"; done
}

# The recovery settings of a standby, from the variables above.
recovery_settings() {
    echo "# --- recovery settings (recovery.conf before PostgreSQL 12), from NODE_NAME, UPSTREAM_HOST, ..."
    if [ -n "${UPSTREAM_HOST:-}" ] && [ "${STREAMING:-on}" != off ]; then
        conninfo=$(upstream_conninfo "password=$(conninfo_value "${REPLICATION_PASSWORD:-repli}")" \
            "application_name=$(conninfo_value "${NODE_NAME:-$(hostname)}")")
        setting "primary_conninfo" "$conninfo"
    fi
    if [ -n "${SLOT_NAME:-}" ]; then
        setting "primary_slot_name" "$SLOT_NAME"
    fi
    if [ -n "${RESTORE_COMMAND:-}" ]; then
        setting "restore_command" "$RESTORE_COMMAND"
    fi
    case "${RECOVERY_TARGET:-}" in
    "") return ;;
    immediate) echo "recovery_target = 'immediate'" ;;
    name:* | xid:* | lsn:* | time:*)
        setting "recovery_target_${RECOVERY_TARGET%%:*}" "${RECOVERY_TARGET#*:}" ;;
    *) die "RECOVERY_TARGET '$RECOVERY_TARGET': use name:N, xid:N, lsn:X/Y, time:TIMESTAMP or immediate" ;;
    esac
    setting "recovery_target_action" "${RECOVERY_TARGET_ACTION:-promote}"
    setting "recovery_target_inclusive" "${RECOVERY_TARGET_INCLUSIVE:-on}"
}

tls_enabled() { [ -n "${PGHARNESS_TLS_CA:-}" ] && [ -n "${PGHARNESS_TLS_CERT:-}" ] && [ -n "${PGHARNESS_TLS_KEY:-}" ]; }

# The TLS files, from the variables, at every start (outside PGDATA: base backups do not copy
# them); prints the settings that use them.
write_tls() {
    tls_enabled || return 0
    mkdir -p "$TLS_DIR"
    chmod 0700 "$TLS_DIR"
    printf '%s\n' "$PGHARNESS_TLS_CA" >"$TLS_DIR/ca.crt"
    printf '%s\n' "$PGHARNESS_TLS_CERT" >"$TLS_DIR/server.crt"
    (umask 077 && printf '%s\n' "$PGHARNESS_TLS_KEY" >"$TLS_DIR/server.key")
    echo "ssl = on"
    setting "ssl_ca_file" "$TLS_DIR/ca.crt"
    setting "ssl_cert_file" "$TLS_DIR/server.crt"
    setting "ssl_key_file" "$TLS_DIR/server.key"
}

# write_settings ROLE [DATADIR]: DATADIR/pgharness.conf (default: $PGDATA).
write_settings() {
    {
        echo "# Written by pgharness at every start from PGHARNESS_SETTINGS (compose.yaml)."
        echo "# ALTER SYSTEM (postgresql.auto.conf) overrides these."
        printf '%s\n' "${PGHARNESS_SETTINGS:-}"
        write_tls
        [ "${1:-}" != standby ] || recovery_settings
        echo "# --- PGHARNESS_EXTRA_SETTINGS"
        printf '%s\n' "${PGHARNESS_EXTRA_SETTINGS:-}"
        echo "# --- PGHARNESS_NODE_SETTINGS"
        printf '%s\n' "${PGHARNESS_NODE_SETTINGS:-}"
    } >"${2:-$PGDATA}/pgharness.conf"
}

# PGHARNESS_INIT_SQL on the primary being made in $1: a server on the local socket alone, psql, stop.
run_init_sql() {
    [ -n "${PGHARNESS_INIT_SQL:-}" ] || return 0
    say "running PGHARNESS_INIT_SQL"
    log=$(dirname "$PGDATA")/init-sql.log
    pg_ctl -D "$1" -w -l "$log" -o "-c listen_addresses='' -c archive_mode=off" start >/dev/null \
        || { cat "$log" >&2; die "the server did not start for PGHARNESS_INIT_SQL"; }
    if ! printf '%s\n' "$PGHARNESS_INIT_SQL" | psql -X -q -v ON_ERROR_STOP=1 -v VERBOSITY=verbose -f - >/dev/null; then
        pg_ctl -D "$1" -m fast -w stop >/dev/null || true
        die "PGHARNESS_INIT_SQL failed (its error is above)"
    fi
    pg_ctl -D "$1" -m fast -w stop >/dev/null || die "the server run for PGHARNESS_INIT_SQL did not stop"
}

# The server's error in $1 (its output) on one line: the last ERROR or FATAL, then what it said of each
# parameter it refused ("configuration file ... contains errors: invalid value for parameter ...").
server_error() {
    printf '%s\n' "$1" | awk '
        # "TIME [PID] 42710 ERROR:  text" (log_line_prefix) -> "42710: text"; "ERROR:  text" -> "text".
        function said(line, severity) {
            sub(/^.*\] /, "", line)
            sub("(^| )" severity ": +", ": ", line)
            sub(/^: /, "", line)
            return line
        }
        /parameter "/ && /(LOG|WARNING|ERROR|FATAL):/ {
            match($0, /(LOG|WARNING|ERROR|FATAL):/)
            params = params (params == "" ? "" : "; ") said($0, substr($0, RSTART, RLENGTH - 1))
            next
        }
        /FATAL:/ { fatal = said($0, "FATAL"); next }
        /ERROR:/ { if (error == "") error = said($0, "ERROR") }
        END {
            line = (fatal != "" ? fatal : error)
            if (line != "" && params != "") line = line ": "
            printf "%s%s", line, params
        }'
}

# SQL on stdin, run in single-user mode on the data directory $1 (server options after it); any error stops the start.
single_user_sql() {
    datadir=$1; shift
    out=$(postgres --single -D "$datadir" -c archive_mode=off "$@" postgres 2>&1 >/dev/null) \
        || die "single-user mode failed: $(server_error "$out")"
    if printf '%s\n' "$out" | grep -qE '(ERROR|FATAL):'; then
        die "single-user mode failed: $(server_error "$out")"
    fi
}

# A data directory is made aside, in $PGDATA.new, and moved into place only once
# complete: a first start that fails halfway leaves nothing the next start takes
# for a finished one (it makes the directory again, and fails again the same way).
fresh_datadir() {
    rm -rf "$PGDATA.new"
    mkdir -p "$PGDATA.new"
    chmod 0700 "$PGDATA.new"
}

finish_datadir() {
    rm -rf "$PGDATA"
    mv "$PGDATA.new" "$PGDATA"
}

# The nodes' pg_hba.conf in $1: the replication role may replicate (over TLS when TLS is on) and do
# nothing else; every other role logs in with its password; local connections are trusted.
write_hba() {
    repl_user=${REPLICATION_USER:-repli}
    repl_host=host
    if tls_enabled; then repl_host=hostssl; fi
    cat >"$1/pg_hba.conf" <<EOF
# TYPE  DATABASE     USER          ADDRESS  METHOD
local   all          all                    trust
local   replication  all                    trust
$repl_host  replication  $(hba_name "$repl_user")    all      scram-sha-256
host    replication  all           all      reject
host    all          $(hba_name "$repl_user")    all      reject
host    all          all           all      scram-sha-256
EOF
}

bootstrap_primary() {
    say "bootstrapping a primary in $PGDATA from the template"
    repl_user=${REPLICATION_USER:-repli}
    check_value POSTGRES_PASSWORD "${POSTGRES_PASSWORD:-postgres}"
    check_value REPLICATION_USER "$repl_user"
    check_value REPLICATION_PASSWORD "${REPLICATION_PASSWORD:-repli}"
    fresh_datadir
    new=$PGDATA.new
    cp -a "$TEMPLATE/." "$new/"
    write_hba "$new"
    write_settings primary "$new"
    # Roles are made in single-user mode: no server to start and stop. SCRAM_ITERATIONS (PostgreSQL 16+)
    # is the iteration count of their passwords' SCRAM secrets, which every client login pays for.
    set --
    if [ -n "${SCRAM_ITERATIONS:-}" ]; then
        case $SCRAM_ITERATIONS in *[!0-9]*|0*) die "SCRAM_ITERATIONS=$SCRAM_ITERATIONS: a whole number, 1 or more" ;; esac
        if [ "$(cat "$new/PG_VERSION")" -ge 16 ]; then set -- -c "scram_iterations=$SCRAM_ITERATIONS"; fi
    fi
    single_user_sql "$new" "$@" <<EOF
ALTER ROLE postgres PASSWORD $(sql_literal "${POSTGRES_PASSWORD:-postgres}");
CREATE ROLE $(sql_ident "$repl_user") WITH LOGIN REPLICATION PASSWORD $(sql_literal "${REPLICATION_PASSWORD:-repli}");
EOF
    run_init_sql "$new"
    finish_datadir
}

# A node that archives (archive_mode = on) needs the archive volume, writable:
# without it archive_command fails, or writes into the container, where no standby looks.
check_archive() {
    printf '%s\n' "${PGHARNESS_SETTINGS:-}" | grep -q "^archive_mode *= *on" || return 0
    awk '$5 == "/archive" { found = 1 } END { exit !found }' /proc/self/mountinfo \
        || die "archive: no volume is mounted at /archive (compose.yaml mounts the archive volume there)"
    probe="/archive/.pgharness-write-check.$$"
    (: >"$probe") 2>/dev/null && rm -f "$probe" \
        || die "archive: /archive is not writable by $(id -un) (a read-only mount, or its owner?): archive_command would fail"
}

# The upstream's host name must resolve on the replication network (UPSTREAM_RESOLVE_TIMEOUT seconds of grace).
check_upstream_resolves() {
    host=$1
    grace=${UPSTREAM_RESOLVE_TIMEOUT:-5}
    case $grace in ''|*[!0-9]*) die "UPSTREAM_RESOLVE_TIMEOUT=$grace: a whole number of seconds" ;; esac
    start=$(date +%s)
    until getent hosts "$host" >/dev/null 2>&1; do
        [ $(( $(date +%s) - start )) -lt "$grace" ] \
            || die "upstream host '$host' does not resolve on the replication network: is it a node of this cluster?"
        sleep 0.1
    done
}

# pg_basebackup from the upstream into $1 (more options after it), once the
# upstream answers; waits for it at most BASEBACKUP_TIMEOUT seconds.
basebackup() {
    dest=$1; shift
    host=${UPSTREAM_HOST:-primary}
    port=${UPSTREAM_PORT:-5432}
    wait_for_upstream "base backup"
    say "taking a base backup from $host:$port into $dest"
    write_tls >/dev/null
    PGPASSWORD="${REPLICATION_PASSWORD:-repli}" pg_basebackup --pgdata="$dest" --wal-method=stream \
        --checkpoint=fast --no-sync "$@" \
        --dbname="$(upstream_conninfo application_name=pgharness_basebackup)" \
        || die "pg_basebackup from $host:$port into $dest failed (see above)"
}

# A backup's name: a plain file name (letters, digits, '.', '_', '-'; not starting with '.').
check_backup_name() {
    case "$1" in
    "" | .* | *[!A-Za-z0-9._-]*) die "backup name '$1': use letters, digits, '.', '_' and '-' (not first '.')" ;;
    esac
}

# wait_for_upstream WHAT: wait until the upstream answers, at most BASEBACKUP_TIMEOUT seconds (WHAT: what
# the failure line says the standby could not get).
wait_for_upstream() {
    host=${UPSTREAM_HOST:-primary}
    port=${UPSTREAM_PORT:-5432}
    timeout=${BASEBACKUP_TIMEOUT:-120}
    check_upstream_resolves "$host"
    start=$(date +%s)
    until pg_isready -q -h "$host" -p "$port" -t 2; do
        [ $(( $(date +%s) - start )) -lt "$timeout" ] \
            || die "no $1 from $host:$port: it did not answer within ${timeout}s"
        sleep 0.05  # retry back-off while the upstream comes up
    done
}

# STANDBY_SOURCE=template: the standby starts from the image's template, the data directory its primary
# was made from (the same system identifier), and replays everything the primary wrote since from WAL
# (streamed, or restored from the archive), instead of copying the primary's files with pg_basebackup.
# Only for a volume's first standby, started with its primary: the WAL back to the template's checkpoint
# is then still at the primary (its first checkpoint is minutes away; one that archives removes nothing
# unarchived) or in the archive (RESTORE_COMMAND). A later bootstrap of the same volume (a rebuild)
# takes a base backup: .bootstrapped, beside the data directory, says it has had one.
standby_source() {
    src=${STANDBY_SOURCE:-basebackup}
    case $src in
    basebackup) ;;
    template)
        [ -z "${FROM_BACKUP:-}${SLOT_NAME:-}${RECOVERY_TARGET:-}" ] \
            || die "STANDBY_SOURCE=template: not with FROM_BACKUP, SLOT_NAME or RECOVERY_TARGET (they need a base backup)"
        { [ -n "${UPSTREAM_HOST:-}" ] && [ "${STREAMING:-on}" != off ]; } \
            || die "STANDBY_SOURCE=template: needs streaming (UPSTREAM_HOST, STREAMING on)"
        [ ! -e "$(dirname "$PGDATA")/.bootstrapped" ] || src=basebackup ;;
    *) die "STANDBY_SOURCE=$src: template or basebackup" ;;
    esac
    echo "$src"
}

bootstrap_standby() {
    check_value REPLICATION_USER "${REPLICATION_USER:-repli}"
    check_value REPLICATION_PASSWORD "${REPLICATION_PASSWORD:-repli}"
    src=$(standby_source)
    fresh_datadir
    new=$PGDATA.new
    if [ "$src" = template ]; then
        say "starting $PGDATA from the template; the rest comes from ${UPSTREAM_HOST:-primary}'s WAL"
        cp -a "$TEMPLATE/." "$new/"
        write_hba "$new"
        wait_for_upstream "stream"
    elif [ -n "${FROM_BACKUP:-}" ]; then
        check_backup_name "$FROM_BACKUP"
        [ -s "/backups/$FROM_BACKUP/PG_VERSION" ] || die "no backup named '$FROM_BACKUP' in /backups"
        say "restoring $PGDATA from backup $FROM_BACKUP"
        cp -a "/backups/$FROM_BACKUP/." "$new/"
    elif [ -n "${SLOT_NAME:-}" ]; then
        basebackup "$new" --create-slot --slot="$SLOT_NAME"
    else
        basebackup "$new"
    fi
    chmod 0700 "$new"
    if [ -n "${RECOVERY_TARGET:-}" ]; then
        # Targeted (point-in-time) recovery: recovery.signal, then the target's action.
        touch "$new/recovery.signal"
    else
        # standby.signal replaces recovery.conf's standby_mode = on (PostgreSQL 12+).
        touch "$new/standby.signal"
    fi
    finish_datadir
    : >"$(dirname "$PGDATA")/.bootstrapped"
}

# archive_wal PATH NAME: archive_command's work (archive_command = '/usr/local/bin/pgharness archive %p %f'),
# crash-safe as the manual asks: a copy already there with the same bytes is success (a server that
# crashed after copying, before it recorded success, archives the segment again), one with other bytes
# is refused loudly; a new copy is written under a temporary name, synced, then renamed into place.
archive_wal() {
    [ $# -eq 2 ] || die "usage: pgharness archive PATH NAME (archive_command = 'pgharness archive %p %f')"
    dir=${ARCHIVE_DIR:-/archive}
    case $2 in */*|.*|'') die "archive: '$2' is not a WAL file name" ;; esac
    if [ -e "$dir/$2" ]; then
        cmp -s "$1" "$dir/$2" && return 0
        say "archive: $2 is in the archive already with other contents: refusing to overwrite it"
        return 1
    fi
    tmp="$dir/.$2.pgharness-tmp.$$"
    if cp "$1" "$tmp" && { sync "$tmp" 2>/dev/null || sync; } && mv "$tmp" "$dir/$2"; then
        sync "$dir" 2>/dev/null || sync
        return 0
    fi
    rm -f "$tmp"
    return 1
}

run_postgres() {
    role=$1; shift
    write_settings "$role"
    exec postgres -D "$PGDATA" "$@"
}

health() {
    pg_isready -q || exit 1
    case "${1:-ready}" in
    ready) exit 0 ;;
    standby)
        # Healthy once streaming from its upstream (or, for log shipping alone,
        # once it accepts read-only connections), and once promoted.
        if [ -n "${UPSTREAM_HOST:-}" ] && [ "${STREAMING:-on}" != off ]; then
            ok=$(psql -XAtq -c "SELECT NOT pg_is_in_recovery() OR EXISTS (SELECT FROM pg_stat_wal_receiver WHERE status = 'streaming')")
            [ "$ok" = t ]
        fi ;;
    *) die "health: unknown check '$1' (ready, standby)" ;;
    esac
}

# --- major upgrades (pgharness.upgrade) ---

OLD_ROOT=/opt/pgharness/old

# The server's folders, one per line: bindir, pkglibdir, sharedir. PostgreSQL finds its lib and share
# folders relative to its own binary, so the three keep working when moved together under one prefix.
server_dirs() {
    bindir=$(find_bindir)
    [ -n "$bindir" ] || die "no PostgreSQL server binaries in this image"
    # The real folder, not the links check-image made in /usr/local/bin.
    bindir=$(dirname "$(readlink -f "$bindir/postgres")")
    if ! { libdir=$("$bindir/pg_config" --pkglibdir 2>/dev/null) && sharedir=$("$bindir/pg_config" --sharedir 2>/dev/null); }; then
        # Debian's layout (its server package has no pg_config): /usr/lib/postgresql/N/{bin,lib}, /usr/share/postgresql/N.
        major=$("$bindir/postgres" -V | sed -n 's/^postgres (PostgreSQL) \([0-9]*\).*/\1/p')
        libdir=$(dirname "$bindir")/lib
        sharedir=/usr/share/postgresql/$major
    fi
    [ -e "$libdir/plpgsql.so" ] || die "cannot tell where the server's libraries are (no plpgsql.so in $libdir)"
    [ -e "$sharedir/postgres.bki" ] || die "cannot tell where the server's share folder is (no postgres.bki in $sharedir)"
    printf '%s\n' "$bindir" "$libdir" "$sharedir"
}

# collect DIR (in the old major's image): its server folders under DIR/root, the path of its bindir in
# DIR/bindir, and every shared library they load under its own name (soname) in DIR/libs.
collect_old() {
    out=$1
    dirs=$(server_dirs)
    mkdir -p "$out/root" "$out/libs"
    # shellcheck disable=SC2086  # the three folders, one word each
    tar -cf - $dirs 2>/dev/null | tar -xf - -C "$out/root"
    printf '%s\n' "$dirs" | head -n 1 >"$out/bindir"
    # shellcheck disable=SC2086
    find $dirs -type f \( -perm -u+x -o -name '*.so*' \) -exec ldd {} \; 2>/dev/null \
        | sed -n 's/^[[:space:]]*\([^[:space:]]*\) => \(\/[^[:space:]]*\) .*/\1 \2/p' | sort -u \
        | while read -r name path; do cp -L "$path" "$out/libs/$name"; done
}

# adopt DIR (in the new major's image, as root): the old server runs on this image's C library and on
# every library this image has under the same name (a shared library keeps its ABI while its soname
# stays); only the libraries this image lacks are kept, in a folder the dynamic linker searches. The
# old bindir is linked at /opt/pgharness/old/bin. Fails when an old binary still lacks a library.
adopt_old() {
    old=$1
    bindir="$old/root$(cat "$old/bindir")"
    mkdir -p "$old/lib"
    for lib in "$old/libs"/*; do
        [ -e "$lib" ] || continue
        name=$(basename "$lib")
        if ldconfig -p | grep -q "^[[:space:]]*$name (" ; then rm -f "$lib"; else mv "$lib" "$old/lib/"; fi
    done
    rmdir "$old/libs"
    echo "$old/lib" >/etc/ld.so.conf.d/pgharness-old.conf
    ldconfig
    unresolved=$(for f in "$bindir"/*; do ldd "$f" 2>/dev/null | sed -n "s|^[[:space:]]*\([^ ]*\) => not found|$f: \1|p"; done)
    [ -z "$unresolved" ] || die "the old server's binaries cannot run in this image, libraries missing: $unresolved"
    ln -sfn "$bindir" "$OLD_ROOT/bin"
    "$OLD_ROOT/bin/postgres" -V >/dev/null || die "the old server does not run in this image: $OLD_ROOT/bin/postgres -V failed"
    say "old server $("$OLD_ROOT/bin/postgres" -V), binaries in $bindir"
}

# "Data page checksum version" of a stopped cluster, by the pg_controldata of its own major.
checksums_of() { "$1/pg_controldata" "$2" | sed -n 's/^Data page checksum version: *//p'; }

# upgrade MODE: pg_upgrade of $PGDATA (stopped cleanly, the old major) into $PGDATA.new, made from this
# image's template with the old cluster's data checksums. check: pg_upgrade --check alone (nothing is
# changed). pg_hba.conf and pg_ident.conf come along (pg_upgrade moves data, not configuration).
upgrade_data() {
    mode=$1
    case $mode in check|link|copy|clone) ;; *) die "upgrade: unknown mode '$mode' (check, link, copy, clone)" ;; esac
    [ -x "$OLD_ROOT/bin/pg_upgrade" ] || [ -x "$OLD_ROOT/bin/postgres" ] || die "upgrade: this image has no old server in $OLD_ROOT/bin: use an upgrade image"
    [ -s "$PGDATA/PG_VERSION" ] || die "upgrade: no cluster in $PGDATA"
    new_bin=$(find_bindir)
    new=$PGDATA.new
    rm -rf "$new"
    cp -a "$TEMPLATE" "$new"
    chmod 0700 "$new"
    # The node's settings that pg_upgrade checks on the new cluster (wal_level and slots, for the logical
    # slots it carries from 17 on); the entrypoint writes the whole pgharness.conf at the node's next start.
    grep -E '^(wal_level|max_replication_slots|max_wal_senders) *=' "$PGDATA/pgharness.conf" >"$new/pgharness.conf" || true
    old_sums=$(checksums_of "$OLD_ROOT/bin" "$PGDATA")
    new_sums=$(checksums_of "$new_bin" "$new")
    if [ "$old_sums" = 0 ] && [ "$new_sums" != 0 ]; then "$new_bin/pg_checksums" --disable -D "$new" >/dev/null; fi
    if [ "$old_sums" != 0 ] && [ "$new_sums" = 0 ]; then "$new_bin/pg_checksums" --enable -D "$new" >/dev/null; fi
    cd "$(dirname "$PGDATA")"
    set -- --old-bindir="$OLD_ROOT/bin" --new-bindir="$new_bin" --old-datadir="$PGDATA" --new-datadir="$new" \
        --username=postgres --socketdir=/tmp
    case $mode in
    check)
        if run_pg_upgrade "$new_bin" "$new" "$@" --check; then status=0; else status=$?; fi
        rm -rf "$new"
        return $status ;;
    link) run_pg_upgrade "$new_bin" "$new" "$@" --link ;;
    clone) run_pg_upgrade "$new_bin" "$new" "$@" --clone ;;
    copy) run_pg_upgrade "$new_bin" "$new" "$@" ;;
    esac
    cp "$PGDATA/pg_hba.conf" "$PGDATA/pg_ident.conf" "$new/"
}

# run_pg_upgrade NEW_BINDIR NEW_DATADIR ARGS: pg_upgrade; when it fails, the error lines of the logs it
# names (its own last words only point at them) go after its output, last.
run_pg_upgrade() {
    bin=$1 new=$2; shift 2
    "$bin/pg_upgrade" "$@" && return 0
    say "pg_upgrade failed; the errors in its logs ($new/pg_upgrade_output.d):"
    grep -h -A2 "error:" "$new"/pg_upgrade_output.d/*/log/*.log 2>/dev/null | tail -n 6 >&2 || true
    return 1
}

# upgrade-swap [drop-old]: the upgraded cluster takes $PGDATA's place; the old one is kept as
# $PGDATA.old, or removed (drop-old: after link mode it shares files with the new one and must never
# start again).
upgrade_swap() {
    [ -s "$PGDATA.new/PG_VERSION" ] || die "upgrade-swap: no upgraded cluster in $PGDATA.new"
    rm -rf "$PGDATA.old"
    mv "$PGDATA" "$PGDATA.old"
    mv "$PGDATA.new" "$PGDATA"
    case ${1:-} in
    drop-old) rm -rf "$PGDATA.old" ;;
    "") ;;
    *) die "upgrade-swap: unknown option '$1' (drop-old)" ;;
    esac
}

# Sourced by the unit tests (PGHARNESS_LIBRARY=1) for its functions alone.
if [ -n "${PGHARNESS_LIBRARY:-}" ]; then return 0; fi

cmd=${1:-primary}
[ $# -gt 0 ] && shift
case "$cmd" in
primary)
    check_archive
    [ -s "$PGDATA/PG_VERSION" ] || bootstrap_primary
    run_postgres primary "$@" ;;
standby)
    check_archive
    [ -s "$PGDATA/PG_VERSION" ] || bootstrap_standby
    run_postgres standby "$@" ;;
backup)
    [ $# -ge 1 ] || die "usage: pgharness backup NAME [pg_basebackup options]"
    name=$1; shift
    check_backup_name "$name"
    [ ! -e "/backups/$name" ] || die "a backup named '$name' exists already"
    basebackup "/backups/$name" "$@"
    say "backup $name written to /backups/$name" ;;
health) health "$@" ;;
archive) archive_wal "$@" ;;
check-image) check_image ;;
make-template) make_template ;;
old-binaries)
    [ $# -eq 2 ] || die "usage: pgharness old-binaries collect|adopt DIR"
    case $1 in collect) collect_old "$2" ;; adopt) adopt_old "$2" ;; *) die "old-binaries: unknown step '$1'" ;; esac ;;
upgrade)
    [ $# -eq 1 ] || die "usage: pgharness upgrade check|link|copy|clone"
    upgrade_data "$1" ;;
upgrade-swap) upgrade_swap "$@" ;;
-*) run_postgres primary "$cmd" "$@" ;;
*) exec "$cmd" "$@" ;;
esac
