#!/usr/bin/env bash
# The one test command (README, CI): venv, databases, lint, types, the whole suite.
# Idempotent: starts PostgreSQL/MariaDB when they are down, creates what the tests need.
# Extra arguments go to pytest (e.g. `bash scripts/test.sh tests/unit -x`).
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${DBPOOL_VENV:-.venv}"
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -e '.[test]'

bash scripts/test_databases.sh

# The dashboard's browser test drives Debian's Chromium (Playwright comes with the test extra;
# it never downloads a browser of its own).
if [ ! -x /usr/bin/chromium ]; then
    echo "== installing chromium"
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
fi

echo "== ruff"
"$VENV/bin/ruff" check app tests bench alembic
echo "== mypy"
"$VENV/bin/mypy"

echo "== pytest"
log="$(mktemp -t dbpool-pytest.XXXXXX)"
trap 'rm -f "$log"' EXIT
# -ra: the short summary lists skips (and why) along with failures and errors; a skip also
# fails the run (tests/conftest.py).
set +e
"$VENV/bin/python" -m pytest -ra "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e

summary="$(grep -E '(passed|failed|error|skipped|deselected|no tests ran).* in [0-9.]+s' "$log" \
    | tail -n 1 | sed -E 's/^=+ //; s/ =+$//')"
echo "== pytest summary: ${summary:-none printed} (exit $status)"
if [ "$status" -eq 5 ]; then
    echo "FAILED: pytest collected no tests" >&2
    exit 1
fi

# The whole suite also runs the query and session-hygiene tests with every driver adapter
# forced onto its public-API path (app/pools/drivers: what runs when a driver release drops
# a private attribute).
if [ "$#" -eq 0 ] && [ "$status" -eq 0 ]; then
    echo "== pytest, drivers on their public-API path (DBPOOL_DRIVER_FALLBACK=1)"
    set +e
    DBPOOL_DRIVER_FALLBACK=1 "$VENV/bin/python" -m pytest -q \
        tests/integration/test_query_api.py tests/integration/test_pool_session.py \
        tests/integration/test_sql_lanes.py tests/integration/test_query_encoding.py \
        tests/faults/test_query_timeouts.py
    status=$?
    set -e
    echo "== pytest (public-API path) exit $status"
fi
exit "$status"
