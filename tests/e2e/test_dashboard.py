"""``/dashboard`` in a real browser (Debian's Chromium, driven by Playwright) against a real
``dbpool serve`` with live PostgreSQL and MariaDB pools and one pool whose circuit is open.

Screenshots (desktop and phone width) are saved in the test's tmp directory.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.e2e.conftest import StartServer
from tests.support import dbs
from tests.support.server import free_port

REFRESH_S = 2.2  # the page refreshes every 2 s
CHROMIUM = "/usr/bin/chromium"  # scripts/test.sh installs Debian's package when missing
API = "/api/external-db-connections"
QUERY_KEY, ADMIN_KEY = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
FIELDS = ("connectionName", "dbType", "state", "openConnections", "waitingRequests",
          "queryErrors", "acquireTimeouts", "recreations")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    yield page
    context.close()


def register(http: httpx.Client, **fields: Any) -> int:
    body = {"name": f"dash-{secrets.token_hex(4)}", "maxConnections": 4,
            "connectionTimeout": 2} | fields
    response = http.post(API, json=body, headers=ADMIN)
    assert response.status_code == 201, response.text
    return int(response.json()["data"]["id"])


def query(http: httpx.Client, cid: int, sql: str) -> httpx.Response:
    return http.post(f"{API}/{cid}/query", json={"sql": sql}, headers=ADMIN)


def drive_load(http: httpx.Client, ids: list[int]) -> None:
    """A little concurrent load on each pool, and one failing statement each."""
    def burst(cid: int) -> None:
        for _ in range(10):
            assert query(http, cid, "SELECT 1").status_code == 200
    with ThreadPoolExecutor(8) as workers:
        list(workers.map(burst, ids * 4))
    for cid in ids:
        assert query(http, cid, "SELEC broken").json()["error"]["code"] == "QUERY_ERROR"


@contextmanager
def steady_load(http: httpx.Client, targets: list[tuple[int, str]]) -> Iterator[None]:
    """Six callers per pool (more than its 4 connections, so some wait) until the block ends;
    bounded to 30 s whatever happens."""
    stop = threading.Event()

    def caller(cid: int, sql: str) -> None:
        deadline = time.monotonic() + 30
        while not stop.is_set() and time.monotonic() < deadline:
            assert query(http, cid, sql).status_code == 200

    with ThreadPoolExecutor(6 * len(targets)) as workers:
        futures = [workers.submit(caller, cid, sql) for cid, sql in targets for _ in range(6)]
        try:
            yield
        finally:
            stop.set()
        for future in futures:
            future.result()


def open_circuit(http: httpx.Client, cid: int, *, code: str = "DB_UNAVAILABLE",
                 state: str = "circuit_open") -> None:
    for _ in range(3):  # the breaker opens after 3 consecutive connect failures
        assert query(http, cid, "SELECT 1").json()["error"]["code"] == code
    status = http.get(f"{API}/{cid}/pool-status", headers=ADMIN).json()["data"]
    assert status["state"] == state, status


def table_rows(page: Page, fields: tuple[str, ...] = FIELDS) -> dict[int, dict[str, str]]:
    """Every row of the pools table: ``data-field`` -> ``data-value`` (plus the bar's parts),
    only ``fields`` and the bar's."""
    rows: dict[int, dict[str, str]] = page.eval_on_selector_all(
        "#pools tbody tr",
        """rows => Object.fromEntries(rows.map(r => [r.dataset.connectionId, Object.fromEntries(
            [...r.cells].flatMap(c => [[c.dataset.field, c.dataset.value],
              ...(c.dataset.active ? [["activeConnections", c.dataset.active],
                                      ["idleConnections", c.dataset.idle],
                                      ["maxConnections", c.dataset.max]] : [])]))]))""",
    )
    keep = {*fields, "activeConnections", "idleConnections", "maxConnections"}
    return {int(k): {f: v for f, v in row.items() if f in keep} for k, row in rows.items()}


def expected_rows(http: httpx.Client) -> dict[int, dict[str, str]]:
    pools = http.get(f"{API}/pool-status", headers=ADMIN).json()["data"]["pools"]
    out = {}
    for p in pools:
        flat = p | p["stats"]
        row = {f: str(flat[f]) for f in FIELDS}
        for f in ("activeConnections", "idleConnections", "maxConnections"):
            row[f] = str(flat[f])
        out[p["connectionId"]] = row
    return out


def eventually(check: Callable[[], Any], within: float = 8.0) -> Any:
    deadline = time.monotonic() + within
    while True:
        try:
            return check()
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.25)


def chart_state(page: Page) -> tuple[str, int]:
    d = page.get_attribute("#chart-connections path.active", "d") or ""
    return d, int(page.get_attribute("#chart-connections", "data-points") or 0)


@pytest.mark.postgresql
@pytest.mark.mariadb
def test_dashboard_shows_the_pools_as_the_json_status_does(
    start_server: StartServer, page: Page, tmp_path: Path
) -> None:
    my_user, my_password = f"dbp_dash_{secrets.token_hex(4)}", secrets.token_hex(12)
    dbs.create_mysql_user(my_user, my_password)
    try:
        server = start_server(env={"DBPOOL_API_KEY": QUERY_KEY, "DBPOOL_ADMIN_API_KEY": ADMIN_KEY,
                                   "DBPOOL_HISTORY_INTERVAL_SECONDS": "1"})
        with server.client() as http:
            pg = register(http, dbType="postgresql", host=dbs.PG_HOST, port=dbs.PG_PORT,
                          database=dbs.PG_DATABASE, username=dbs.PG_USER,
                          password=dbs.PG_PASSWORD)
            my = register(http, dbType="mariadb", host=dbs.MY_HOST, port=dbs.MY_PORT,
                          database=dbs.MY_DATABASE, username=my_user, password=my_password)
            dead = register(http, dbType="postgresql", host="127.0.0.1", port=free_port(),
                            database="nothing", username="nobody", password="unused-pw")
            refused = register(http, dbType="mariadb", host=dbs.MY_HOST, port=dbs.MY_PORT,
                               database=dbs.MY_DATABASE, username=my_user,
                               password="not-" + my_password)
            drive_load(http, [pg, my])
            open_circuit(http, dead)
            open_circuit(http, refused, code="DB_AUTH_FAILED", state="auth_failed")

            # No key yet: the page asks for one; a wrong one shows the error state.
            page.goto(f"{server.base_url}/dashboard")
            expect(page.locator("#key-panel")).to_be_visible()
            assert "key" not in page.url.lower()
            page.fill("#key-input", "not-the-key-" + secrets.token_hex(8))
            page.click("#key-form button[type=submit]")
            expect(page.locator("#error-panel")).to_be_visible()
            expect(page.locator("#error-panel")).to_contain_text("refused (401)")
            expect(page.locator("#status")).to_have_text("Key refused (401)")
            page.screenshot(path=str(tmp_path / "dashboard-wrong-key.png"))

            # The right key: the table holds the same figures as the JSON status.
            page.fill("#key-input", QUERY_KEY)
            page.click("#key-form button[type=submit]")
            expect(page.locator("#pools tbody tr")).to_have_count(4)
            expect(page.locator("#status")).to_have_text("4 pools · 0 active · 2 not ok")
            assert QUERY_KEY not in page.url
            assert page.evaluate("sessionStorage.getItem('dbpool.apiKey')") == QUERY_KEY

            def same_figures() -> None:
                assert table_rows(page) == expected_rows(http)
            eventually(same_figures)
            shown = table_rows(page, (*FIELDS, "idleSeconds", "lastUsedAt"))
            assert shown[pg]["lastUsedAt"].endswith("Z")
            assert int(shown[pg]["idleSeconds"]) < 60
            assert shown[pg]["queryErrors"] == shown[my]["queryErrors"] == "1"
            assert shown[dead]["state"] == "circuit_open"
            badge = page.locator(f"tr[data-connection-id='{dead}'] .state")
            expect(badge).to_have_text("circuit open")
            dead_state = page.locator(f"tr[data-connection-id='{dead}'] td[data-field=state]")
            expect(dead_state).to_contain_text("next try in")
            assert badge.evaluate("e => getComputedStyle(e).color") == "rgb(207, 34, 46)"
            ok = page.locator(f"tr[data-connection-id='{pg}'] .state")
            assert ok.evaluate("e => getComputedStyle(e).color") == "rgb(26, 127, 55)"
            auth = page.locator(f"tr[data-connection-id='{refused}'] .state")
            expect(auth).to_have_text("auth failed")
            assert auth.evaluate("e => getComputedStyle(e).color") == "rgb(130, 80, 223)"

            # Under load the chart moves: more points and a new shape at each refresh.
            page.select_option("#chart-pool", str(pg))
            expect(page.locator("#chart-title")).to_contain_text("History: ")
            before = chart_state(page)
            load = [(pg, "SELECT pg_sleep(0.05)"), (my, "SELECT SLEEP(0.05)")]
            with steady_load(http, load):
                def moved() -> None:
                    after = chart_state(page)
                    assert after[0] != before[0] and after[1] >= before[1] + 3, (before, after)
                eventually(moved)
                page.screenshot(path=str(tmp_path / "dashboard-desktop.png"), full_page=True)
                page.set_viewport_size({"width": 390, "height": 844})
                expect(page.locator("#pools tbody tr").first).to_be_visible()
                time.sleep(REFRESH_S)  # one refresh draws the charts at the new width
                page.screenshot(path=str(tmp_path / "dashboard-phone.png"), full_page=True)
                # No horizontal scrolling at phone width.
                assert page.evaluate("document.documentElement.scrollWidth") <= 390
            history = http.get(f"{API}/pool-status/history", params={"connectionId": pg},
                               headers=ADMIN).json()["data"]
            samples = history["pools"][0]["samples"]
            assert len(samples["at"]) >= 3
            assert max(q or 0 for q in samples["queriesPerSecond"]) > 10
            assert max(p or 0 for p in samples["waitP99Ms"]) > 1, "nobody waited for a connection"

        # The API goes away: the page says so and keeps the last figures.
        server.stop()
        expect(page.locator("#error-panel")).to_contain_text("Cannot reach the dbpool API")
        expect(page.locator("#status")).to_have_text("API unreachable")
        expect(page.locator("#pools tbody tr")).to_have_count(4)

        def closed() -> None:
            assert dbs.my_count(my_user) == 0, "MariaDB sessions outlived the server"
        eventually(closed)
    finally:
        dbs.drop_mysql_user(my_user)
    for shot in ("dashboard-wrong-key.png", "dashboard-desktop.png", "dashboard-phone.png"):
        assert (tmp_path / shot).stat().st_size > 5000


def test_without_auth_the_page_needs_no_key_and_explains_the_empty_state(
    start_server: StartServer, page: Page
) -> None:
    server = start_server()
    page.goto(f"{server.base_url}/dashboard")
    expect(page.locator("#empty-panel")).to_be_visible()
    expect(page.locator("#key-panel")).to_be_hidden()
    expect(page.locator("#curl-register")).to_contain_text(
        f"curl -X POST {server.base_url}{API} ")
    expect(page.locator("#status")).to_contain_text("0 pools")
    response = page.request.get(f"{server.base_url}/dashboard/dashboard.js")
    assert response.ok and "javascript" in response.headers["content-type"]
    assert "script-src 'self'" in response.headers["content-security-policy"]
    assert page.request.get(f"{server.base_url}/dashboard/nothing.js").status == 404
