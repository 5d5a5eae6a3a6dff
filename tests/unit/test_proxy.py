"""The fault proxy itself: against a tiny echo server and against the real PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest

from tests.support import dbs
from tests.support.proxy import ProxyState, TcpProxy

WAIT = 3.0  # generous bound on anything that should happen "at once"


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(1024):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        writer.close()


@pytest.fixture
async def echo_proxy() -> AsyncIterator[TcpProxy]:
    server = await asyncio.start_server(_echo, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with TcpProxy("127.0.0.1", port) as proxy:
        yield proxy
    server.close()
    await asyncio.wait_for(server.wait_closed(), WAIT)


async def _connect(proxy: TcpProxy) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.wait_for(asyncio.open_connection("127.0.0.1", proxy.port), WAIT)


async def _roundtrip(proxy: TcpProxy, payload: bytes = b"ping") -> bytes:
    reader, writer = await _connect(proxy)
    try:
        writer.write(payload)
        await writer.drain()
        return await asyncio.wait_for(reader.readexactly(len(payload)), WAIT)
    finally:
        writer.close()


async def _until(predicate: object, what: str) -> None:
    """Poll a condition the proxy's own tasks make true, for at most WAIT seconds."""
    assert callable(predicate)
    for _ in range(int(WAIT / 0.01)):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


async def test_forwards_both_ways_and_counts(echo_proxy: TcpProxy) -> None:
    assert await _roundtrip(echo_proxy, b"hello") == b"hello"
    assert await _roundtrip(echo_proxy, b"x" * 200_000) == b"x" * 200_000
    assert echo_proxy.accepted == 2
    await _until(lambda: echo_proxy.open_connections == 0, "links to close")
    assert "state=open" in repr(echo_proxy)


async def test_cut_resets_open_connections_and_refuses_new_ones(echo_proxy: TcpProxy) -> None:
    reader, writer = await _connect(echo_proxy)
    writer.write(b"a")
    assert await asyncio.wait_for(reader.readexactly(1), WAIT) == b"a"
    assert echo_proxy.open_connections == 1

    echo_proxy.cut()
    with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
        await asyncio.wait_for(reader.readexactly(1), WAIT)
    writer.close()
    with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
        await _roundtrip(echo_proxy)
    assert echo_proxy.dropped == 1
    assert echo_proxy.open_connections == 0

    echo_proxy.restore()
    assert await _roundtrip(echo_proxy) == b"ping"


async def test_stall_holds_bytes_until_restore(echo_proxy: TcpProxy) -> None:
    echo_proxy.stall()
    reader, writer = await _connect(echo_proxy)  # accepted even while stalled
    writer.write(b"held")
    await writer.drain()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(reader.readexactly(4), 0.3)
    assert echo_proxy.state is ProxyState.STALLED
    assert echo_proxy.open_connections == 1

    echo_proxy.restore()
    assert await asyncio.wait_for(reader.readexactly(4), WAIT) == b"held"
    writer.close()


async def test_delay_adds_latency_each_way_in_order(echo_proxy: TcpProxy) -> None:
    delay = 0.2
    echo_proxy.delay(delay)
    assert echo_proxy.state is ProxyState.DELAYED
    assert "latency=0.2s" in repr(echo_proxy)
    reader, writer = await _connect(echo_proxy)
    loop = asyncio.get_running_loop()
    started = loop.time()
    writer.write(b"first")
    await writer.drain()
    writer.write(b"second")
    await writer.drain()
    got = await asyncio.wait_for(reader.readexactly(len(b"firstsecond")), WAIT)
    assert got == b"firstsecond"
    # Held once on the way in and once on the way back (a lower bound: no speed asserted).
    assert loop.time() - started >= 2 * delay
    echo_proxy.restore()
    assert echo_proxy.state is ProxyState.OPEN and echo_proxy.latency == 0.0
    writer.write(b"again")
    assert await asyncio.wait_for(reader.readexactly(5), WAIT) == b"again"
    writer.close()


async def test_delay_refuses_negative_seconds(echo_proxy: TcpProxy) -> None:
    with pytest.raises(ValueError, match=">= 0"):
        echo_proxy.delay(-1)
    assert echo_proxy.state is ProxyState.OPEN


async def test_cut_during_delay_resets_and_clears_the_latency(echo_proxy: TcpProxy) -> None:
    echo_proxy.delay(5.0)
    reader, writer = await _connect(echo_proxy)
    writer.write(b"x")
    await writer.drain()
    await _until(lambda: echo_proxy.open_connections == 1, "the link to open")
    echo_proxy.cut()
    assert echo_proxy.latency == 0.0
    with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
        await asyncio.wait_for(reader.readexactly(1), WAIT)
    writer.close()
    await _until(lambda: echo_proxy.open_connections == 0, "the link to close")
    echo_proxy.restore()
    assert await _roundtrip(echo_proxy) == b"ping"


async def test_cut_during_stall_releases_the_held_connection(echo_proxy: TcpProxy) -> None:
    echo_proxy.stall()
    reader, writer = await _connect(echo_proxy)
    writer.write(b"x")
    await writer.drain()
    await _until(lambda: echo_proxy.open_connections == 1, "the link to open")
    echo_proxy.cut()
    with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
        await asyncio.wait_for(reader.readexactly(1), WAIT)
    writer.close()
    await _until(lambda: echo_proxy.open_connections == 0, "the link to close")


async def test_aclose_resets_clients_and_stops_listening() -> None:
    server = await asyncio.start_server(_echo, "127.0.0.1", 0)
    proxy = TcpProxy("127.0.0.1", server.sockets[0].getsockname()[1])
    await proxy.start()
    port = proxy.port
    reader, writer = await _connect(proxy)
    await proxy.aclose()
    with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
        await asyncio.wait_for(reader.readexactly(1), WAIT)
    writer.close()
    with pytest.raises(OSError):
        await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), WAIT)
    server.close()
    await server.wait_closed()


async def test_unreachable_target_resets_the_client() -> None:
    placeholder = await asyncio.start_server(_echo, "127.0.0.1", 0)
    dead_port = placeholder.sockets[0].getsockname()[1]
    placeholder.close()
    await placeholder.wait_closed()
    async with TcpProxy("127.0.0.1", dead_port) as proxy:
        reader, writer = await _connect(proxy)
        with pytest.raises(ConnectionError):
            await asyncio.wait_for(reader.read(1), WAIT)
        writer.close()


@pytest.mark.postgresql
async def test_real_postgresql_through_the_proxy() -> None:
    async with TcpProxy(dbs.PG_HOST, dbs.PG_PORT) as proxy:

        async def connect(timeout: float = WAIT) -> asyncpg.Connection:
            return await asyncpg.connect(
                host="127.0.0.1",
                port=proxy.port,
                user=dbs.PG_USER,
                password=dbs.PG_PASSWORD,
                database=dbs.PG_DATABASE,
                timeout=timeout,
            )

        conn = await connect()
        assert await conn.fetchval("SELECT 1") == 1
        proxy.delay(0.05)
        assert await conn.fetchval("SELECT 2") == 2  # slower, still correct
        proxy.restore()

        proxy.cut()
        with pytest.raises((OSError, asyncpg.PostgresConnectionError)):
            await asyncio.wait_for(conn.fetchval("SELECT 1"), WAIT)
        conn.terminate()
        with pytest.raises((OSError, asyncpg.PostgresConnectionError)):
            await connect()

        proxy.stall()
        with pytest.raises(TimeoutError):
            await connect(timeout=0.5)

        proxy.restore()
        conn = await connect()
        try:
            assert await conn.fetchval("SELECT 1") == 1
        finally:
            await conn.close()
