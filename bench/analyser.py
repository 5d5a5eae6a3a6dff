"""The statement analyser's cost (a developer tool): ``python -m bench.analyser``.

Prints µs per call for a handful of representative statements: ``analyse`` on a cache
hit (the steady state: workflow nodes send the same SQL again and again), ``analyse``
uncached (the first sight of a text), ``bind_named`` for the named statements, and, for
comparison, what the query path did before the analyser on every named request
(SQLAlchemy ``text(sql).compile()``). Best of ``--repeat`` runs of ``--number`` calls.
"""

from __future__ import annotations

import argparse
import timeit
from collections.abc import Callable

from sqlalchemy import text
from sqlalchemy.dialects import mysql, postgresql

from app.domain import DbType
from app.sql import analyse, bind_named
from app.sql.analyser import _analyse

__all__ = ["main"]

PG, MY = DbType.POSTGRESQL, DbType.MARIADB
STATEMENTS: list[tuple[str, DbType, str, dict[str, object] | None]] = [
    ("point, positional", PG, "SELECT * FROM bench_items WHERE id = $1", None),
    ("point, named", PG, "SELECT * FROM bench_items WHERE id = :id", {"id": 1}),
    ("insert, named", MY, "INSERT INTO t (a, b, c) VALUES (:a, :b, :c)",
     {"a": 1, "b": 2, "c": 3}),
    ("json + cast", PG, "SELECT '{\"a\":1}'::jsonb AS j, :g::int AS g -- :x", {"g": 1}),
    ("report, 0.9 kB", PG, "WITH recent AS (SELECT o.id, o.customer_id, o.total, "
     "o.created_at FROM orders o WHERE o.created_at > now() - interval '30 days' AND "
     "o.status = :status) SELECT c.name, count(*) AS n, sum(r.total) AS total, "
     "max(r.created_at) AS last FROM recent r JOIN customers c ON c.id = r.customer_id "
     "WHERE c.region = ANY(:regions) AND c.name NOT LIKE 'test%' /* internal */ "
     "GROUP BY c.name HAVING sum(r.total) > :floor ORDER BY total DESC LIMIT 50" * 2,
     {"status": "paid", "regions": ["eu"], "floor": 10}),
    ("mysql, comments", MY, "SELECT /*! SQL_NO_CACHE */ note, :who AS who FROM t "
     "WHERE note LIKE '50%' # :c\n AND id = :id", {"who": "x", "id": 1}),
]


def _best(fn: Callable[[], object], number: int, repeat: int) -> float:
    return min(timeit.repeat(fn, number=number, repeat=repeat)) / number * 1e6


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.analyser", description=__doc__)
    parser.add_argument("--number", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    n, r = args.number, args.repeat
    print(f"{'statement':<20} {'chars':>5} {'cached':>8} {'uncached':>9} {'bind':>7} "
          f"{'text().compile()':>17}   (µs per call)")
    for label, db_type, sql, params in STATEMENTS:
        family = "mysql" if db_type.is_mysql_family else "postgresql"
        analysis = analyse(sql, db_type)
        cached = _best(lambda: analyse(sql, db_type), n, r)  # noqa: B023
        uncached = _best(lambda: _analyse(sql, family), max(n // 20, 1), r)  # noqa: B023
        bind = compiled = "-"
        if params is not None:
            bind = f"{_best(lambda: bind_named(sql, analysis, params, db_type), n, r):7.2f}"  # noqa: B023
            dialect = postgresql.asyncpg.dialect() if family == "postgresql" else \
                mysql.aiomysql.dialect()
            compiled = f"{_best(lambda: text(sql).compile(dialect=dialect), n // 20, r):17.1f}"  # noqa: B023
        print(f"{label:<20} {len(sql):>5} {cached:8.2f} {uncached:9.1f} {bind:>7} {compiled:>17}")


if __name__ == "__main__":
    main()
