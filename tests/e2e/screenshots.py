"""``.venv/bin/python -m tests.e2e.screenshots docs``: the README's dashboard screenshots,
taken with the browser test's own set-up (a real ``dbpool serve``, PostgreSQL and MariaDB
pools, one with its circuit open, one whose credentials are refused) after about a minute of
varying load."""

from __future__ import annotations

import secrets
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from playwright.sync_api import expect, sync_playwright

from tests.e2e.test_dashboard import (
    ADMIN_KEY,
    CHROMIUM,
    QUERY_KEY,
    open_circuit,
    query,
    register,
)
from tests.support import dbs
from tests.support.server import DbpoolServer, free_port


def load(http: httpx.Client, targets: list[tuple[int, str]], callers: int, seconds: float) -> None:
    """``callers`` per target, each running its statement in a loop for ``seconds``."""
    stop = time.monotonic() + seconds

    def caller(cid: int, sql: str) -> None:
        while time.monotonic() < stop:
            query(http, cid, sql)

    with ThreadPoolExecutor(callers * len(targets)) as workers:
        for cid, sql in targets * callers:
            workers.submit(caller, cid, sql)


def shoot(out: Path, workdir: Path) -> None:
    user, password = f"dbp_shot_{secrets.token_hex(4)}", secrets.token_hex(12)
    dbs.create_mysql_user(user, password)
    server = DbpoolServer(workdir, env={
        "DBPOOL_API_KEY": QUERY_KEY, "DBPOOL_ADMIN_API_KEY": ADMIN_KEY,
        "DBPOOL_HISTORY_INTERVAL_SECONDS": "2"})
    try:
        server.start()
        with server.client() as http:
            pg = register(http, name="crm-postgres", dbType="postgresql", host=dbs.PG_HOST,
                          port=dbs.PG_PORT, database=dbs.PG_DATABASE, username=dbs.PG_USER,
                          password=dbs.PG_PASSWORD, maxConnections=8)
            my = register(http, name="orders-mariadb", dbType="mariadb", host=dbs.MY_HOST,
                          port=dbs.MY_PORT, database=dbs.MY_DATABASE, username=user,
                          password=password, maxConnections=6)
            dead = register(http, name="legacy-reporting", dbType="postgresql",
                            host="127.0.0.1", port=free_port(), database="reports",
                            username="nobody", password="unused-pw")
            open_circuit(http, dead)
            refused = register(http, name="billing-mariadb", dbType="mariadb",
                               host=dbs.MY_HOST, port=dbs.MY_PORT, database=dbs.MY_DATABASE,
                               username=user, password="wrong-" + password)
            open_circuit(http, refused, code="DB_AUTH_FAILED", state="auth_failed")
            query(http, my, "SELEC typo")
            targets = [(pg, "SELECT pg_sleep(0.05)"), (my, "SELECT SLEEP(0.05)")]
            for callers, seconds in ((2, 8), (5, 8), (10, 10), (6, 8), (3, 8)):
                load(http, targets, callers, seconds)
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM)
                page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
                page.goto(f"{server.base_url}/dashboard")
                page.fill("#key-input", QUERY_KEY)
                page.click("#key-form button[type=submit]")
                expect(page.locator("#pools tbody tr")).to_have_count(4)
                busy = threading.Thread(target=load, args=(http, targets, 9, 8))
                busy.start()
                time.sleep(5)
                page.screenshot(path=str(out / "dashboard.png"), full_page=True)
                page.set_viewport_size({"width": 390, "height": 844})
                time.sleep(2.5)
                page.screenshot(path=str(out / "dashboard-phone.png"), full_page=True)
                browser.close()
                busy.join()
    finally:
        server.stop()
        dbs.drop_mysql_user(user)


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        shoot(Path(sys.argv[1] if len(sys.argv) > 1 else "docs"), Path(tmp))
