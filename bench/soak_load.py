"""One soak client process: a mixed load on every soak connection until ``end_at``.

Each of ``concurrency`` tasks loops, picking an operation by weight: point and 100-row
reads, writes with unique keys, two-insert transactions (both or neither), statements past
their timeout, clients that hang up mid-statement, unknown and inactive ids, pool-status and
registry reads. Every response is recorded (wall-clock start and end, target, operation,
status, error code, whether it was a well-formed envelope) and every write with its outcome,
so the controller can check afterwards what the databases hold. Bounded: no operation starts
after ``end_at``, and each is limited by ``REQUEST_TIMEOUT_S``.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

__all__ = ["REQUEST_TIMEOUT_S", "Recorder", "client_main", "envelope_ok", "outcome_code"]

API = "/api/external-db-connections"
REQUEST_TIMEOUT_S = 30.0
HANG_UP_AFTER_S = 0.3  # a disconnecting client waits this long after sending, then closes
WAIT_PAST_TIMEOUT = 3  # seconds a "past its timeout" statement waits (timeout: 1 s)
WAIT_DISCONNECTED = 6  # seconds a statement whose client hangs up would wait (timeout: 10 s)

WEIGHTS = {
    "point": 26,
    "rows100": 10,
    "write": 20,
    "txn": 14,
    "slow": 4,
    "hangup": 4,
    "unknown": 4,
    "inactive": 4,
    "status": 6,
    "registry": 4,
}


def envelope_ok(status: int, body: bytes) -> bool:
    """A well-formed ``/api`` envelope for this status (success or error shape)."""
    try:
        doc = json.loads(body)
    except ValueError:
        return False
    if not isinstance(doc, dict) or not isinstance(doc.get("success"), bool):
        return False
    if 200 <= status < 300:
        return doc["success"] is True and "data" in doc and isinstance(doc.get("message"), str)
    error = doc.get("error")
    return (
        doc["success"] is False
        and isinstance(error, dict)
        and isinstance(error.get("code"), str)
        and isinstance(error.get("message"), str)
        and isinstance(error.get("details"), dict)
        and "requestId" in doc
    )


def outcome_code(status: int, body: bytes) -> str:
    """``OK`` for 2xx, else the envelope's error code (or ``HTTP_<status>``)."""
    if 200 <= status < 300:
        return "OK"
    try:
        return str(json.loads(body)["error"]["code"])
    except (ValueError, KeyError, TypeError):
        return f"HTTP_{status}"


@dataclass
class Recorder:
    """What one process saw; serialised as plain lists to keep the files small."""

    requests: list[list[Any]] = field(default_factory=list)
    writes: list[list[Any]] = field(default_factory=list)
    hangups: list[list[Any]] = field(default_factory=list)
    wrong_results: int = 0

    async def call(
        self,
        http: httpx.AsyncClient,
        method: str,
        path: str,
        target: str,
        op: str,
        body: dict[str, Any] | None = None,
    ) -> tuple[int, Any]:
        """One request, recorded; ``(status, parsed body or None)``. Status 0: no response."""
        started = time.time()
        try:
            response = await http.request(method, path, json=body)
        except httpx.HTTPError as exc:
            self.requests.append([started, time.time(), target, op, 0, type(exc).__name__, True])
            return 0, None
        raw = response.content
        code = outcome_code(response.status_code, raw)
        ok = envelope_ok(response.status_code, raw)
        self.requests.append([started, time.time(), target, op, response.status_code, code, ok])
        try:
            return response.status_code, json.loads(raw)
        except ValueError:
            return response.status_code, None

    def dump(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "writes": self.writes,
            "hangups": self.hangups,
            "wrong_results": self.wrong_results,
        }


def _wait_sql(engine: str, seconds: int, lock: str, marker: str = "") -> str:
    """A statement that waits ``seconds``: PostgreSQL sleeps; MariaDB waits for ``lock``,
    which the controller holds for the whole run (a MariaDB ``SLEEP`` is a poor stand-in
    for a long statement: a kill or a time limit reaching one can be up to 2 s late, which
    would measure the server, not the service; ``python -m bench.statement_limit``)."""
    comment = f" /* {marker} */" if marker else ""
    if engine == "postgresql":
        return f"SELECT pg_sleep({seconds}){comment}"
    return f"SELECT GET_LOCK('{lock}', {seconds}){comment}"


class Worker:
    """One task's loop; ``plan`` is the dict ``soak.py`` hands every process."""

    def __init__(self, plan: dict[str, Any], index: int, recorder: Recorder) -> None:
        self.plan = plan
        self.name = f"p{plan['proc']}t{index}"
        self.rng = random.Random(f"{plan['seed']}-{self.name}")
        self.rec = recorder
        self.seq = 0
        self.items = plan["items"]
        self.writes = plan["writes"]

    async def run(self, http: httpx.AsyncClient) -> None:
        ops, weights = zip(*WEIGHTS.items(), strict=True)
        while time.time() < self.plan["end_at"]:
            op = self.rng.choices(ops, weights)[0]
            target = self.rng.choice(self.plan["targets"])
            await getattr(self, f"_{op}")(http, target)

    def _key(self) -> str:
        self.seq += 1
        return f"{self.name}-{self.seq}"

    def _query_path(self, target: dict[str, Any]) -> str:
        return f"{API}/{target['id']}/query"

    async def _point(self, http: httpx.AsyncClient, target: dict[str, Any]) -> None:
        wanted = self.rng.randint(1, self.plan["items_count"])
        sql = f"SELECT id, name, price FROM {self.items} WHERE id = :id"
        status, doc = await self.rec.call(
            http, "POST", self._query_path(target), target["name"], "point",
            {"sql": sql, "params": {"id": wanted}},
        )  # fmt: skip
        if status == 200 and [r.get("id") for r in doc["data"]["rows"]] != [wanted]:
            self.rec.wrong_results += 1

    async def _rows100(self, http: httpx.AsyncClient, target: dict[str, Any]) -> None:
        first = self.rng.randint(1, self.plan["items_count"] - 99)
        sql = f"SELECT id, name, price FROM {self.items} WHERE id >= :id ORDER BY id LIMIT 100"
        status, doc = await self.rec.call(
            http, "POST", self._query_path(target), target["name"], "rows100",
            {"sql": sql, "params": {"id": first}},
        )  # fmt: skip
        if status == 200 and [r["id"] for r in doc["data"]["rows"]] != list(
            range(first, first + 100)
        ):
            self.rec.wrong_results += 1

    async def _write(self, http: httpx.AsyncClient, target: dict[str, Any]) -> None:
        key = self._key()
        sql = f"INSERT INTO {self.writes} (k, grp, part) VALUES (:k, :g, 0)"
        status, _ = await self.rec.call(
            http, "POST", self._query_path(target), target["name"], "write",
            {"sql": sql, "params": {"k": key, "g": key}},
        )  # fmt: skip
        self.rec.writes.append([target["name"], key, "single", status])

    async def _txn(self, http: httpx.AsyncClient, target: dict[str, Any]) -> None:
        group = self._key()
        sql = f"INSERT INTO {self.writes} (k, grp, part) VALUES (:k, :g, :p)"
        statements = [
            {"sql": sql, "params": {"k": f"{group}/{part}", "g": group, "p": part}}
            for part in (1, 2)
        ]
        status, _ = await self.rec.call(
            http, "POST", f"{API}/{target['id']}/transaction", target["name"], "txn",
            {"statements": statements},
        )  # fmt: skip
        self.rec.writes.append([target["name"], group, "txn", status])

    async def _slow(self, http: httpx.AsyncClient, target: dict[str, Any]) -> None:
        sql = _wait_sql(target["engine"], WAIT_PAST_TIMEOUT, self.plan["lock"])
        body = {"sql": sql, "timeoutSeconds": 1}
        await self.rec.call(http, "POST", self._query_path(target), target["name"], "slow", body)

    async def _hangup(self, http: httpx.AsyncClient, target: dict[str, Any]) -> None:
        """Send a long statement on a raw socket and close it before the answer."""
        marker = f"soak-dc-{self._key()}"
        body = json.dumps(
            {"sql": _wait_sql(target["engine"], WAIT_DISCONNECTED, self.plan["lock"], marker),
             "timeoutSeconds": 10}
        ).encode()
        host, port = self.plan["host"], self.plan["port"]
        head = (
            f"POST {self._query_path(target)} HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Authorization: Bearer {self.plan['token']}\r\nX-Request-ID: {marker}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 5)
        except (OSError, TimeoutError):
            return
        writer.write(head + body)
        await asyncio.sleep(HANG_UP_AFTER_S)
        writer.close()
        self.rec.hangups.append([target["name"], marker, time.time()])

    async def _unknown(self, http: httpx.AsyncClient, target: dict[str, Any]) -> None:
        body = {"sql": "SELECT 1"}
        await self.rec.call(
            http, "POST", f"{API}/{self.plan['unknown_id']}/query", "unknown", "unknown", body
        )

    async def _inactive(self, http: httpx.AsyncClient, target: dict[str, Any]) -> None:
        body = {"sql": "SELECT 1"}
        await self.rec.call(
            http, "POST", f"{API}/{self.plan['inactive_id']}/query", "inactive", "inactive", body
        )

    async def _status(self, http: httpx.AsyncClient, target: dict[str, Any]) -> None:
        await self.rec.call(http, "GET", f"{API}/pool-status", "service", "status")

    async def _registry(self, http: httpx.AsyncClient, target: dict[str, Any]) -> None:
        await self.rec.call(http, "GET", f"{API}/{target['id']}", target["name"], "registry")


async def _run(plan: dict[str, Any]) -> Recorder:
    recorder = Recorder()
    headers = {"Authorization": f"Bearer {plan['token']}"}
    limits = httpx.Limits(max_connections=plan["concurrency"])
    async with httpx.AsyncClient(
        base_url=plan["url"], headers=headers, timeout=REQUEST_TIMEOUT_S, limits=limits
    ) as http:
        workers = [Worker(plan, i, recorder) for i in range(plan["concurrency"])]
        await asyncio.gather(*(w.run(http) for w in workers))
    return recorder


def client_main(plan: dict[str, Any], out_path: str) -> None:
    """Process entry point: run until ``plan['end_at']``, then write the records as JSON."""
    recorder = asyncio.run(_run(plan))
    with open(out_path, "w") as out:
        json.dump(recorder.dump(), out)
