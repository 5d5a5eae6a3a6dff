"""SQLAlchemy's pool reports a discarded broken connection at ERROR with a traceback; the
service's log names it in one WARNING line (a client or a network going away is traffic)."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest

from app.logs import configure_logging


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    saved, level = root.handlers[:], root.level
    configure_logging("INFO", "text")
    stream = io.StringIO()
    root.handlers[0].setStream(stream)  # type: ignore[attr-defined]
    yield stream
    root.handlers[:], root.level = saved, level


def _error_with_traceback(logger: logging.Logger, msg: str, *args: object) -> None:
    try:
        raise ConnectionResetError("Connection lost")
    except ConnectionResetError:
        logger.error(msg, *args, exc_info=True)


@pytest.mark.parametrize("msg", [
    "Exception during reset or similar",
    "Exception terminating connection %r",
    "Exception closing connection %r",
])
def test_a_discarded_connection_is_one_warning_line(captured: io.StringIO, msg: str) -> None:
    pool_logger = logging.getLogger("app.pools.queue_pool.TrimmableQueuePool.dbpool:7")
    _error_with_traceback(pool_logger, msg, *(["<conn>"] if "%r" in msg else []))
    out = captured.getvalue()
    assert out.count("\n") == 1 and "Traceback" not in out
    assert " WARNING " in out and "connection discarded" in out
    assert "ConnectionResetError" in out and " ERROR " not in out


def test_other_errors_keep_their_level_and_traceback(captured: io.StringIO) -> None:
    _error_with_traceback(logging.getLogger("app.pools.managed_pool"), "something broke")
    _error_with_traceback(logging.getLogger("sqlalchemy.pool.impl"), "Unexpected failure")
    out = captured.getvalue()
    assert out.count(" ERROR ") == 2 and out.count("Traceback") == 2
