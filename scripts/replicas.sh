#!/usr/bin/env bash
# Replica pairs for the tests, on their own ports and data directories (the machine's
# default servers on 5432/3306 are left alone). The ports lie below Linux's ephemeral range
# (32768-60999), so no client socket or test proxy can be holding one when a server starts.
#
#   PostgreSQL 15  primary 127.0.0.1:15432  streaming standby 127.0.0.1:15433 (pg_basebackup -R)
#   MariaDB        primary 127.0.0.1:13306  GTID replica      127.0.0.1:13307 (slave_pos)
#
# Both have a `dbpool_test` database and role (password `dbpool-test-pw`; trust on loopback for
# PostgreSQL). Data lives under $DBPOOL_REPLICAS_DIR (default /tmp/dbpool-replicas) and is kept
# between runs, so a later `start` only starts the servers (about a second).
#
#   replicas.sh start            idempotent; repairs or rebuilds a pair left broken (killed run,
#                                promoted standby, stopped replication)
#   replicas.sh stop             stop all four servers (data kept)
#   replicas.sh node start|stop pg-primary|pg-standby|my-primary|my-replica
#   replicas.sh pg-promote       pg_ctl promote the standby
#   replicas.sh rebuild pg|my    throw a pair away and make it afresh
set -euo pipefail

DIR="${DBPOOL_REPLICAS_DIR:-/tmp/dbpool-replicas}"
# The newest installed PostgreSQL (15 on Debian 12), unless told otherwise.
PGBIN="${DBPOOL_PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)}"
PG_PRIMARY_PORT=15432
PG_STANDBY_PORT=15433
MY_PRIMARY_PORT=13306
MY_REPLICA_PORT=13307
PASSWORD="dbpool-test-pw"
RUN="$DIR/run"

log() { echo "replicas: $*" >&2; }

as_user() {  # as_user <user> <command...>: root drops privileges, anyone else runs as self
    local user=$1; shift
    if [ "$(id -u)" -eq 0 ]; then runuser -u "$user" -- "$@"; else "$@"; fi
}

owned_dir() {  # owned_dir <user> <dir>: a data directory the server's user owns (mode 0700)
    if [ "$(id -u)" -eq 0 ]; then install -d -o "$1" -g "$1" -m 0700 "$2"
    else install -d -m 0700 "$2"; fi
}

wait_for() {  # wait_for <what> <seconds> <command...>
    local what=$1 seconds=$2; shift 2
    local tries=$((seconds * 10))
    for _ in $(seq 1 "$tries"); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.1
    done
    log "$what did not come up within ${seconds}s"
    return 1
}

prepare_dirs() {
    mkdir -p "$DIR" "$RUN"
    chmod 0777 "$RUN"  # both servers put their sockets and pid files here
}

# ---- PostgreSQL ------------------------------------------------------------------------

pg_dir() { echo "$DIR/pg-$1"; }
pg_port() { if [ "$1" = primary ]; then echo $PG_PRIMARY_PORT; else echo $PG_STANDBY_PORT; fi; }
pg_sql() {  # pg_sql <port> <sql>
    "$PGBIN/psql" -h 127.0.0.1 -p "$1" -U postgres -d postgres -qAtX -v ON_ERROR_STOP=1 -c "$2"
}
pg_up() { "$PGBIN/pg_isready" -q -U postgres -h 127.0.0.1 -p "$(pg_port "$1")"; }

pg_node() {  # pg_node start|stop primary|standby
    local action=$1 node=$2 data
    data="$(pg_dir "$node")"
    if [ "$action" = stop ]; then
        if [ -f "$data/postmaster.pid" ]; then
            as_user postgres "$PGBIN/pg_ctl" -D "$data" -m fast -w -t 20 stop >/dev/null 2>&1 || true
        fi
        return 0
    fi
    pg_up "$node" && return 0
    as_user postgres "$PGBIN/pg_ctl" -D "$data" -l "$data/server.log" -w -t 20 start >/dev/null
}

pg_create() {
    local primary standby
    primary="$(pg_dir primary)"; standby="$(pg_dir standby)"
    log "creating the PostgreSQL primary and standby"
    pg_node stop standby; pg_node stop primary
    rm -rf "$primary" "$standby"
    owned_dir postgres "$primary"
    as_user postgres "$PGBIN/initdb" -D "$primary" -U postgres -A trust --no-sync \
        --no-instructions >/dev/null
    cat >>"$primary/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $PG_PRIMARY_PORT
unix_socket_directories = '$RUN'
wal_level = replica
max_wal_senders = 10
hot_standby = on
hot_standby_feedback = on
wal_receiver_status_interval = 1s
wal_retrieve_retry_interval = 500ms
max_connections = 200
shared_buffers = 32MB
fsync = off
synchronous_commit = off
full_page_writes = off
CONF
    cat >"$primary/pg_hba.conf" <<HBA
local all         all                 trust
host  all         all   127.0.0.1/32  trust
host  replication all   127.0.0.1/32  trust
HBA
    pg_node start primary
    pg_sql $PG_PRIMARY_PORT "CREATE ROLE dbpool_test LOGIN PASSWORD '$PASSWORD'"
    pg_sql $PG_PRIMARY_PORT "CREATE DATABASE dbpool_test OWNER dbpool_test"
    owned_dir postgres "$standby"
    as_user postgres "$PGBIN/pg_basebackup" -h 127.0.0.1 -p $PG_PRIMARY_PORT -U postgres \
        -D "$standby" -R -X stream -c fast --no-sync >/dev/null
    echo "port = $PG_STANDBY_PORT" >>"$standby/postgresql.conf"
    pg_node start standby
}

pg_healthy() {  # the primary writes, the standby is in recovery and streaming from it
    pg_up primary && pg_up standby || return 1
    [ "$(pg_sql $PG_PRIMARY_PORT 'SELECT pg_is_in_recovery()')" = f ] || return 1
    [ "$(pg_sql $PG_STANDBY_PORT 'SELECT pg_is_in_recovery()')" = t ] || return 1
    # A paused replay (a lag test killed midway) is resumed rather than rebuilt.
    pg_sql $PG_STANDBY_PORT 'SELECT pg_wal_replay_resume()' >/dev/null 2>&1 || true
    wait_for "PostgreSQL streaming" 5 pg_streaming
}

pg_streaming() {
    [ "$(pg_sql $PG_PRIMARY_PORT "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'")" -ge 1 ]
}

pg_start() {
    prepare_dirs
    if [ -f "$(pg_dir primary)/PG_VERSION" ] && [ -f "$(pg_dir standby)/standby.signal" ]; then
        pg_node start primary || true
        pg_node start standby || true
        pg_healthy && return 0
        log "the PostgreSQL pair is broken (promoted standby or killed run): rebuilding"
    fi
    pg_create
    pg_healthy
}

# ---- MariaDB ---------------------------------------------------------------------------

my_dir() { echo "$DIR/my-$1"; }
my_port() { if [ "$1" = primary ]; then echo $MY_PRIMARY_PORT; else echo $MY_REPLICA_PORT; fi; }
my_sql() {  # my_sql <port> <sql>
    mysql -uroot -h127.0.0.1 --protocol=tcp -P "$1" -N -B -e "$2"
}
my_up() { mysqladmin -uroot -h127.0.0.1 --protocol=tcp -P "$(my_port "$1")" ping >/dev/null 2>&1; }

my_node() {  # my_node start|stop primary|replica
    local action=$1 node=$2 data port id extra=""
    data="$(my_dir "$node")"; port="$(my_port "$node")"
    if [ "$action" = stop ]; then
        if [ -f "$RUN/my-$node.pid" ] && kill -0 "$(cat "$RUN/my-$node.pid")" 2>/dev/null; then
            local pid; pid="$(cat "$RUN/my-$node.pid")"
            kill "$pid" 2>/dev/null || true
            for _ in $(seq 1 200); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        fi
        return 0
    fi
    my_up "$node" && return 0
    if [ "$node" = primary ]; then id=1; else id=2; extra="--read-only"; fi
    # shellcheck disable=SC2086
    as_user mysql /usr/sbin/mariadbd --no-defaults --user=mysql --datadir="$data" \
        --port="$port" --bind-address=127.0.0.1 --socket="$RUN/my-$node.sock" \
        --pid-file="$RUN/my-$node.pid" --log-error="$data/server.log" \
        --server-id="$id" --log-bin="$data/binlog" --log-slave-updates --gtid-strict-mode=1 \
        --skip-name-resolve --innodb-buffer-pool-size=32M --innodb-log-file-size=16M \
        --innodb-flush-log-at-trx-commit=0 --sync-binlog=0 --max-connections=300 \
        --skip-slave-start $extra >/dev/null 2>&1 &
    wait_for "MariaDB $node" 30 my_up "$node"
}

my_create() {
    local primary replica
    primary="$(my_dir primary)"; replica="$(my_dir replica)"
    log "creating the MariaDB primary and replica"
    my_node stop replica; my_node stop primary
    rm -rf "$primary" "$replica"
    owned_dir mysql "$primary"
    as_user mysql mariadb-install-db --no-defaults --user=mysql --datadir="$primary" \
        --auth-root-authentication-method=normal --skip-test-db >/dev/null 2>&1
    cp -a "$primary" "$replica"  # same empty start: the replica replays everything by GTID
    my_node start primary
    my_node start replica
    my_sql $MY_PRIMARY_PORT "
        CREATE USER 'repl'@'127.0.0.1' IDENTIFIED BY '$PASSWORD';
        GRANT REPLICATION SLAVE ON *.* TO 'repl'@'127.0.0.1';
        CREATE DATABASE dbpool_test;
        CREATE USER 'dbpool_test'@'%' IDENTIFIED BY '$PASSWORD';
        GRANT ALL ON dbpool_test.* TO 'dbpool_test'@'%';
        GRANT SLAVE MONITOR ON *.* TO 'dbpool_test'@'%';"
    my_sql $MY_REPLICA_PORT "
        CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT=$MY_PRIMARY_PORT,
            MASTER_USER='repl', MASTER_PASSWORD='$PASSWORD', MASTER_USE_GTID=slave_pos,
            MASTER_CONNECT_RETRY=1;
        START SLAVE;"
}

my_healthy() {  # both up, the replica read-only and running both threads
    my_up primary && my_up replica || return 1
    [ "$(my_sql $MY_REPLICA_PORT 'SELECT @@read_only')" = 1 ] || return 1
    my_sql $MY_REPLICA_PORT "START SLAVE" >/dev/null 2>&1 || true  # after a killed lag test
    wait_for "MariaDB replication" 10 my_replicating
}

my_replicating() {
    local status
    status="$(mysql -uroot -h127.0.0.1 --protocol=tcp -P $MY_REPLICA_PORT -e "SHOW SLAVE STATUS\G")"
    [[ "$status" == *"Slave_IO_Running: Yes"* && "$status" == *"Slave_SQL_Running: Yes"* ]]
}

my_start() {
    prepare_dirs
    if [ -d "$(my_dir primary)/mysql" ] && [ -d "$(my_dir replica)/mysql" ]; then
        my_node start primary || true
        my_node start replica || true
        if my_up replica; then
            my_sql $MY_REPLICA_PORT "START SLAVE" >/dev/null 2>&1 || true
        fi
        my_healthy && return 0
        log "the MariaDB pair is broken: rebuilding"
    fi
    my_create
    my_healthy
}

# ---- commands --------------------------------------------------------------------------

node_cmd() {  # node start|stop <name>
    case "$2" in
        pg-primary) pg_node "$1" primary ;;
        pg-standby) pg_node "$1" standby ;;
        my-primary) my_node "$1" primary ;;
        my-replica)
            my_node "$1" replica
            if [ "$1" = start ]; then my_sql $MY_REPLICA_PORT "START SLAVE" >/dev/null 2>&1 || true; fi ;;
        *) log "unknown node '$2' (pg-primary, pg-standby, my-primary, my-replica)"; return 2 ;;
    esac
}

case "${1:-}" in
    start) pg_start & pg=$!; my_start & my=$!; wait $pg; wait $my; log "ready" ;;
    stop) pg_node stop standby; pg_node stop primary; my_node stop replica; my_node stop primary ;;
    node) node_cmd "$2" "$3" ;;
    pg-promote) as_user postgres "$PGBIN/pg_ctl" -D "$(pg_dir standby)" -w -t 20 promote >/dev/null ;;
    rebuild)
        prepare_dirs
        case "${2:-}" in
            pg) pg_create; pg_healthy ;;
            my) my_create; my_healthy ;;
            *) log "rebuild pg|my"; exit 2 ;;
        esac ;;
    *) sed -n '2,17p' "$0" >&2; exit 2 ;;
esac
