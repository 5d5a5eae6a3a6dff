"""Share of py-spy samples by layer (a developer tool): ``python -m bench.layers
bench/out/profile-postgresql-point.txt``.

Reads py-spy's ``--format raw`` collapsed stacks (``frame;frame;... count``) and charges
each sample to the layer of its innermost Python frame (self time): the HTTP framework
(uvicorn, Starlette, FastAPI), pydantic, asyncio and uvloop, SQLAlchemy, the driver, our
own code by part, and the rest. ``--inclusive NAME`` adds the share of samples whose stack
passes through a frame containing ``NAME`` (e.g. ``RequestMiddleware.__call__``). Only stacks
through ``--within`` (default: any) are counted, e.g. the request tasks of ``bench.asgi``.
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

__all__ = ["LAYERS", "layer_of", "main", "shares"]

# (layer, substrings of the frame's file); the first match wins.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("bench (load, harness)", ("bench/",)),
    ("dbpool api (app/api)", ("app/api/",)),
    ("dbpool pools (app/pools)", ("app/pools/",)),
    ("dbpool sql analyser (app/sql)", ("app/sql/",)),
    ("dbpool other (app/)", ("app/",)),
    ("uvicorn + httptools", ("uvicorn/", "httptools/")),
    ("Starlette", ("starlette/",)),
    ("FastAPI", ("fastapi/",)),
    ("pydantic", ("pydantic/", "pydantic_core/")),
    ("SQLAlchemy", ("sqlalchemy/",)),
    ("driver (asyncpg, aiomysql, PyMySQL, asyncmy)",
     ("asyncpg/", "aiomysql/", "pymysql/", "asyncmy/")),
    ("prometheus-client", ("prometheus_client/",)),
    ("asyncio + uvloop", ("asyncio/", "uvloop/", "contextlib.py")),
    ("logging", ("logging/",)),
    ("typing, enum, dataclasses", ("typing.py", "enum.py", "dataclasses.py")),
)


def layer_of(frame: str) -> str:
    """The layer of one collapsed-stack frame, ``func (file:line)``."""
    where = frame.rsplit(" (", 1)[-1]
    for name, needles in LAYERS:
        if any(n in where for n in needles):
            return name
    return "other Python / C without a Python frame"


def shares(lines: list[str], within: str = "", inclusive: tuple[str, ...] = ()
           ) -> tuple[int, Counter[str], Counter[str]]:
    """(samples counted, samples by layer, samples through each ``inclusive`` name)."""
    by_layer: Counter[str] = Counter()
    through: Counter[str] = Counter()
    total = 0
    for line in lines:
        stack, _, count_text = line.rstrip().rpartition(" ")
        if not count_text.isdigit() or (within and within not in stack):
            continue
        count = int(count_text)
        total += count
        frames = [f for f in stack.split(";") if f.strip()]
        by_layer[layer_of(frames[-1]) if frames else layer_of("")] += count
        for name in inclusive:
            if name in stack:
                through[name] += count
    return total, by_layer, through


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("stacks", type=Path)
    parser.add_argument("--within", default="", help="count only stacks containing this")
    parser.add_argument("--inclusive", action="append", default=[])
    args = parser.parse_args(argv)
    total, by_layer, through = shares(args.stacks.read_text().splitlines(), args.within,
                                      tuple(args.inclusive))
    print(f"{total} samples{f' through {args.within!r}' if args.within else ''}")
    for name, count in by_layer.most_common():
        print(f"  {count / max(total, 1):6.1%}  {name}")
    for name in args.inclusive:
        print(f"  {through[name] / max(total, 1):6.1%}  inclusive: {name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
