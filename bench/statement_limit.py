"""How punctually each server ends a statement at its session's own time limit.

``python -m bench.statement_limit [--sessions 12] [--rounds 3] [--limit 5] [--sleep 6]
[--mariadb-wait sleep|lock]``

``--sessions`` connections at once each set the limit (MariaDB ``max_statement_time``,
PostgreSQL ``statement_timeout``) and run a sleep longer than it, ``--rounds`` times on the
same session, as a pooled connection is reused (on MariaDB, ``--mariadb-wait lock`` waits
for a user lock the script holds, ``GET_LOCK``, instead of ``SLEEP``: its limit is on time,
while ``SLEEP``'s is up to 2 s late, which is why the soak's long MariaDB statements are lock
waits); the script prints, per server and round,
how many statements ended how long after they were sent, and the latest. The service never
takes that limit as proof a statement has ended (it kills it and waits until the server no
longer lists the session, ``app/pools/cancel.py``): this shows why.
Loopback only; bounded by ``sessions x rounds x sleep``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from collections import Counter

import aiomysql
import asyncpg

from bench.fixtures import MY, PG

__all__ = ["main"]


_LOCK = "dbpool_statement_limit"


async def _mariadb(limit: float, sleep: float, rounds: int, lock: bool) -> list[float]:
    conn = await aiomysql.connect(host=MY.host, port=MY.port, user="root", password="",
                                  db=MY.database, autocommit=True)
    ended = []
    try:
        cursor = await conn.cursor()
        for _ in range(rounds):
            await cursor.execute(f"SET SESSION max_statement_time = {limit:.3f}")
            started = time.monotonic()
            with contextlib.suppress(aiomysql.OperationalError):  # 1969: at the limit
                wait = f"GET_LOCK('{_LOCK}', {sleep:g})" if lock else f"SLEEP({sleep:g})"
                await cursor.execute(f"SELECT {wait}")
                await cursor.fetchall()
            ended.append(time.monotonic() - started)
    finally:
        conn.close()
    return ended


async def _postgresql(limit: float, sleep: float, rounds: int, lock: bool) -> list[float]:
    conn = await asyncpg.connect(host=PG.host, port=PG.port, user="postgres",
                                 database="postgres")
    ended = []
    try:
        for _ in range(rounds):
            await conn.execute(f"SET statement_timeout = {int(limit * 1000)}")
            started = time.monotonic()
            with contextlib.suppress(asyncpg.QueryCanceledError):  # at the limit
                await conn.execute(f"SELECT pg_sleep({sleep:g})")
            ended.append(time.monotonic() - started)
    finally:
        await conn.close()
    return ended


async def _measure(args: argparse.Namespace) -> None:
    if args.mariadb_wait == "sleep":
        await _each_server(args, lock=False)
        return
    holder = await aiomysql.connect(host=MY.host, port=MY.port, user="root", password="",
                                    db=MY.database, autocommit=True)
    try:
        cursor = await holder.cursor()
        await cursor.execute(f"SELECT GET_LOCK('{_LOCK}', 0)")  # what a lock wait waits for
        await _each_server(args, lock=True)
    finally:
        holder.close()


async def _each_server(args: argparse.Namespace, lock: bool) -> None:
    for name, one in (("MariaDB", _mariadb), ("PostgreSQL", _postgresql)):
        sessions = await asyncio.gather(*(one(args.limit, args.sleep, args.rounds, lock)
                                          for _ in range(args.sessions)))
        for index in range(args.rounds):
            ended = [rounds[index] for rounds in sessions]
            by_tenth = Counter(round(seconds, 1) for seconds in ended)
            late = sum(1 for seconds in ended if seconds > args.limit + 0.5)
            wait = "lock wait" if lock and name == "MariaDB" else "sleep"
            print(f"{name}, statement {index + 1} of each session: limit {args.limit:g} s, "
                  f"{wait} {args.sleep:g} s; ended after (s: count) "
                  f"{dict(sorted(by_tenth.items()))}; latest {max(ended):.2f} s; "
                  f"{late} of {len(ended)} more than 0.5 s past the limit")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--limit", type=float, default=5.0)
    parser.add_argument("--sleep", type=float, default=6.0)
    parser.add_argument("--mariadb-wait", choices=("sleep", "lock"), default="sleep")
    args = parser.parse_args()
    if not (1 <= args.sessions <= 50 and 1 <= args.rounds <= 10 and 0 < args.limit < args.sleep
            and args.sleep <= 30):
        parser.error("bounded: 1-50 sessions, 1-10 rounds, 0 < limit < sleep <= 30")
    asyncio.run(_measure(args))


if __name__ == "__main__":
    main()
