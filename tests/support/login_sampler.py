"""``LoginSampler``: the MariaDB sessions of one login, sampled in a thread while a test runs."""

from __future__ import annotations

import threading
import time

from tests.support import dbs

__all__ = ["LoginSampler"]

SAMPLE_LIMIT_S = 60.0  # the sampler's own bound


class LoginSampler:
    """Counts the sessions of ``user`` from ``information_schema.PROCESSLIST`` on one admin
    connection, ``pause`` seconds apart (0: back to back); keeps the peak, what the server
    listed at that moment (id, command, statement) and every session id seen."""

    def __init__(self, user: str, pause: float = 0.0) -> None:
        self.user = user
        self.pause = pause
        self.peak = 0
        self.at_peak: list[tuple[object, ...]] = []
        self.ids: set[int] = set()
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        conn = dbs.my_admin()
        deadline = time.monotonic() + SAMPLE_LIMIT_S
        try:
            while not self._stop.is_set() and time.monotonic() < deadline:
                with conn.cursor() as cur:
                    cur.execute("SELECT ID, COMMAND, INFO FROM information_schema.PROCESSLIST "
                                "WHERE USER = %s", (self.user,))
                    rows = list(cur.fetchall())
                self.samples += 1
                if len(rows) > self.peak:
                    self.peak, self.at_peak = len(rows), rows
                self.ids.update(int(row[0]) for row in rows)
                if self.pause:
                    time.sleep(self.pause)
        finally:
            conn.close()

    def __enter__(self) -> LoginSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
