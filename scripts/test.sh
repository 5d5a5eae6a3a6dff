#!/usr/bin/env bash
# The one test command (README, CI): venv, databases, lint, types, the whole suite.
# Idempotent: starts PostgreSQL/MariaDB when they are down, creates what the tests need.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${DBPOOL_VENV:-.venv}"
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -e '.[test]'

bash scripts/test_databases.sh

echo "== ruff"
"$VENV/bin/ruff" check app tests bench
echo "== mypy"
"$VENV/bin/mypy"
echo "== pytest"
"$VENV/bin/python" -m pytest "$@"
