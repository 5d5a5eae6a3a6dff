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

if ! pg_isready -q -h 127.0.0.1 -p 5432; then
    echo "starting PostgreSQL"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
    wait_for PostgreSQL pg_isready -q -h 127.0.0.1 -p 5432
fi
if ! mysqladmin -uroot -h127.0.0.1 --protocol=tcp ping >/dev/null 2>&1; then
    echo "starting MariaDB"
    start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd
    wait_for MariaDB mysqladmin -uroot -h127.0.0.1 --protocol=tcp ping
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
