"""``DBPOOL_ALLOWED_HOSTS`` enforced where connections are made: every new connection
resolves the name, checks every address and connects to the checked one; a pool whose target
is no longer allowed answers 403 HOST_NOT_ALLOWED and is dropped."""

from __future__ import annotations

import ipaddress

import pytest
from sqlalchemy import text

from app.errors import HostNotAllowed
from app.pools.allowlist import IpAddress
from app.pools.managed_pool import ManagedPool
from app.settings import Settings
from tests.integration.test_pool_basics import pg_config
from tests.support import dbs
from tests.support.api import ADMIN, BASE, assert_error, connection_body, make_settings, running_app

pytestmark = pytest.mark.postgresql

# Only this test's resolver knows the name: the driver could not resolve it itself, so a
# working connection proves the driver was handed the checked address.
NAME = "db.rebind.test"


class Resolver:
    """A DNS that answers what the test says, and counts the questions."""

    def __init__(self, *answers: str) -> None:
        self.answers = [ipaddress.ip_address(a) for a in answers]
        self.asked = 0

    async def __call__(self, name: str) -> list[IpAddress]:
        assert name == NAME
        self.asked += 1
        return list(self.answers)


async def test_every_new_connection_is_checked_and_goes_to_the_checked_address() -> None:
    resolver = Resolver("127.0.0.1")
    refused: list[ManagedPool] = []
    settings = Settings(allowed_hosts="127.0.0.0/8")
    config = pg_config(host=NAME, options={"ssl": "disable"})
    pool = ManagedPool(config, settings, resolve=resolver, on_refused=refused.append)
    try:
        async with pool.connection() as conn:
            assert (await conn.execute(text("SELECT 1"))).scalar() == 1
        assert resolver.asked == 1 and await dbs.pg_count(config.pool_name) == 1
        # The name now also answers with an address outside the allowlist (DNS rebinding):
        # the pooled connection is not new and still serves; a new one is refused.
        resolver.answers.append(ipaddress.ip_address("10.9.9.9"))
        async with pool.connection() as conn:
            await conn.execute(text("SELECT 1"))
        assert await pool.trim_idle(0) == 1  # closed: the next connection is a new one
        with pytest.raises(HostNotAllowed) as caught:
            async with pool.connection():
                pass
        assert caught.value.details == {"host": NAME}
        assert refused == [pool], "the pool was not reported for dropping"
        assert await dbs.pg_count(config.pool_name) == 0
    finally:
        await pool.aclose(1.0)


async def test_a_tightened_allowlist_refuses_and_drops_the_pool(registry_url: str) -> None:
    loose = make_settings(registry_url, allowed_hosts="127.0.0.0/8")
    async with running_app(loose) as client:
        created = await client.post(
            BASE, json=connection_body(host="localhost", options={"ssl": "disable"}),
            headers=ADMIN,
        )
        assert created.status_code == 201, created.text
        cid = created.json()["data"]["id"]
        ok = await client.post(f"{BASE}/{cid}/query", json={"sql": "SELECT 1"}, headers=ADMIN)
        assert ok.status_code == 200, ok.text
    # The service restarts with a tighter allowlist: the registration is still there.
    tight = make_settings(registry_url, allowed_hosts="10.0.0.0/8",
                          encryption_keys=loose.encryption_keys)
    async with running_app(tight) as client:
        refused = await client.post(f"{BASE}/{cid}/query", json={"sql": "SELECT 1"},
                                    headers=ADMIN)
        assert_error(refused, 403, "HOST_NOT_ALLOWED")
        status = await client.get(f"{BASE}/{cid}/pool-status", headers=ADMIN)
        assert status.json()["data"] is None, "the refused pool was not dropped"
        assert await dbs.pg_count(f"dbpool:{cid}") == 0
        # Re-activating the registration builds a new pool, checked again.
        for active in (False, True):
            patched = await client.patch(f"{BASE}/{cid}", json={"isActive": active},
                                         headers=ADMIN)
            assert patched.status_code == 200, patched.text
        again = await client.post(f"{BASE}/{cid}/query", json={"sql": "SELECT 1"}, headers=ADMIN)
        assert_error(again, 403, "HOST_NOT_ALLOWED")
        assert await dbs.pg_count(f"dbpool:{cid}") == 0
