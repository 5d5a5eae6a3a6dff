#!/usr/bin/env bash
# Bring up the local PostgreSQL and MariaDB the tests talk to, and create their roles and
# databases. Safe to run any number of times.
set -euo pipefail

wait_for() {  # wait_for <what> <command...>
    local what=$1; shift
    for _ in $(seq 1 60); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.5
    done
    echo "$what did not come up" >&2
    return 1
}

as_root() {  # run a command as root: directly, or through password-less sudo
    if [ "$(id -u)" -eq 0 ]; then "$@"
    elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then sudo -n "$@"
    else
        echo "need root (or password-less sudo) to: $*" >&2
        return 1
    fi
}

# A fresh machine: install the two servers (Debian/Ubuntu). Skipped when they are present.
if ! command -v pg_ctlcluster >/dev/null || ! command -v mariadbd >/dev/null; then
    if ! command -v apt-get >/dev/null; then
        echo "install PostgreSQL (>= 13) and MariaDB (>= 10.6) listening on 127.0.0.1" >&2
        exit 1
    fi
    echo "installing PostgreSQL and MariaDB"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
        postgresql postgresql-client mariadb-server mariadb-client
fi

if ! pg_isready -q -h 127.0.0.1 -p 5432; then
    echo "starting PostgreSQL"
    as_root pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -1)" main start || true
    wait_for PostgreSQL pg_isready -q -h 127.0.0.1 -p 5432
fi
if ! mysqladmin -uroot -h127.0.0.1 --protocol=tcp ping >/dev/null 2>&1; then
    echo "starting MariaDB"
    if [ -x /etc/init.d/mariadb ]; then
        as_root /etc/init.d/mariadb start >/dev/null || true
    else
        as_root install -d -o mysql -g mysql /run/mysqld
        as_root start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd -- --user=mysql
    fi
    wait_for MariaDB mysqladmin -uroot -h127.0.0.1 --protocol=tcp ping
fi

# The tests administer both servers over loopback TCP without a password (PostgreSQL
# `postgres`, MariaDB `root`). Fresh packages don't allow that: allow it, on loopback only.
if ! psql -h 127.0.0.1 -U postgres -d postgres -w -qAtc 'SELECT 1' >/dev/null 2>&1; then
    echo "trusting loopback connections in PostgreSQL's pg_hba.conf"
    hba="$(as_root su postgres -c "psql -qAtc 'SHOW hba_file'")"
    as_root sed -i '1i host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust' "$hba"
    as_root su postgres -c "psql -qAtc 'SELECT pg_reload_conf()'" >/dev/null
fi
if ! mysql -uroot -h127.0.0.1 --protocol=tcp -e 'SELECT 1' >/dev/null 2>&1; then
    echo "allowing MariaDB root over loopback TCP without a password"
    as_root mysql -uroot <<'SQL'
CREATE USER IF NOT EXISTS 'root'@'127.0.0.1' IDENTIFIED BY '';
GRANT ALL ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;
ALTER USER 'root'@'localhost' IDENTIFIED VIA unix_socket OR mysql_native_password USING PASSWORD('');
SQL
fi

psql_root() { psql -h 127.0.0.1 -U postgres -d postgres -v ON_ERROR_STOP=1 -qAt "$@"; }

psql_root <<'SQL'
DO $$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'dbpool_test') THEN
    CREATE ROLE dbpool_test LOGIN PASSWORD 'dbpool-test-pw';
  END IF;
END $$;
SQL
for db in dbpool_test dbpool_registry; do
    if [ "$(psql_root -c "SELECT 1 FROM pg_database WHERE datname = '$db'")" != "1" ]; then
        psql_root -c "CREATE DATABASE $db OWNER dbpool_test"
    fi
done
psql_root -c "GRANT ALL ON SCHEMA public TO dbpool_test" -d dbpool_test >/dev/null 2>&1 || true

mysql -uroot -h127.0.0.1 --protocol=tcp <<'SQL'
CREATE DATABASE IF NOT EXISTS dbpool_test;
CREATE USER IF NOT EXISTS 'dbpool_test'@'%' IDENTIFIED BY 'dbpool-test-pw';
CREATE USER IF NOT EXISTS 'dbpool_test'@'localhost' IDENTIFIED BY 'dbpool-test-pw';
GRANT ALL ON dbpool_test.* TO 'dbpool_test'@'%';
GRANT ALL ON dbpool_test.* TO 'dbpool_test'@'localhost';
SET GLOBAL wait_timeout = 28800;
SET GLOBAL max_connections = GREATEST(@@GLOBAL.max_connections, 500);
SQL
echo "databases ready"
