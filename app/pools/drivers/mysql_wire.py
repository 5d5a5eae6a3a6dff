"""The MySQL client protocol spoken directly, on aiomysql's and asyncmy's private I/O.

Used only by the fast path of the MySQL adapters (``app.pools.drivers.mysql``): session
set-up and reset pipelined in ONE write, their OK packets read in order, in one round trip.
The drivers' public API has no command for ``COM_RESET_CONNECTION`` or ``COM_SET_OPTION``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

__all__ = ["COM_INIT_DB", "COM_QUERY", "COM_RESET_CONNECTION", "COM_SET_OPTION", "Pipeline",
           "send_pipelined"]

COM_INIT_DB = 0x02
COM_QUERY = 0x03
COM_SET_OPTION = 0x1B
COM_RESET_CONNECTION = 0x1F
_OK = 0x00
_EOF = 0xFE


@dataclass(frozen=True, slots=True)
class Pipeline:
    """Commands sent in one write (``rest`` already framed), their OK packets read in order;
    ``commands`` as given (the public path runs the ``COM_QUERY`` ones as SQL)."""

    commands: tuple[tuple[int, bytes], ...]
    first: tuple[int, bytes]
    rest: bytes
    whole: bytes

    @classmethod
    def of(cls, commands: list[tuple[int, bytes]]) -> Pipeline:
        first, *rest = commands
        tail = b"".join(_packet(c, payload) for c, payload in rest)
        return cls(tuple(commands), first, tail, _packet(*first) + tail)

    @property
    def sql(self) -> list[str]:
        """The plain SQL statements among the commands."""
        return [payload.decode() for command, payload in self.commands if command == COM_QUERY]


def _settled(raw: Any) -> bool:
    """The driver has nothing left to read from its last statement (else its own send
    must settle that first). Unknown internals count as unsettled."""
    result = getattr(raw, "_result", False)
    if result is None:
        return True
    return (
        result is not False
        and not getattr(result, "unbuffered_active", True)
        and not getattr(result, "has_next", True)
        and getattr(raw, "_writer", None) is not None
    )


async def send_pipelined(raw: Any, pipeline: Pipeline) -> None:
    """Send every command in one write, then read each one's OK packet: one round trip.

    The server reads commands one after another from the socket, so their answers come back
    in order. Commands after a failing one are still answered, but the connection is then
    out of step and the caller's error makes SQLAlchemy discard it.
    """
    if _settled(raw):
        raw._result = None  # what the driver's own send does first
        raw._write_bytes(pipeline.whole)  # one write, one system call
    else:
        # The driver's own send: it settles an unfinished result before writing.
        await raw._execute_command(*pipeline.first)
        if pipeline.rest:
            raw._write_bytes(pipeline.rest)
    for _ in range(len(pipeline.commands)):
        await _read_ok(raw)


async def _read_ok(raw: Any) -> None:
    """Read one answer that must be an OK packet (an EOF packet for ``COM_SET_OPTION``),
    and keep the driver's status flags.

    Leaner than the driver's own reader (no packet objects), which the reset pays three
    times on every return; the next command resets the driver's sequence counter.
    """
    header = await raw._read_bytes(4)
    body = await raw._read_bytes(header[0] | header[1] << 8 | header[2] << 16)
    if body[:1] == bytes([_EOF]) and len(body) < 9:  # EOF: warnings (2 bytes), status
        raw.server_status = body[3] | body[4] << 8
        return
    if not body or body[0] != _OK:
        errno = int.from_bytes(body[1:3], "little") if body[:1] == b"\xff" else 0
        raise ConnectionError(f"session reset refused by the server (errno {errno})")
    at = _skip_lenenc(body, _skip_lenenc(body, 1))  # affected rows, last insert id
    raw.server_status = body[at] | body[at + 1] << 8


def _skip_lenenc(data: bytes, at: int) -> int:
    """The offset after the length-encoded integer at ``at``."""
    first = data[at]
    return at + {0xFC: 3, 0xFD: 4, 0xFE: 9}.get(first, 1)


def _packet(command: int, payload: bytes) -> bytes:
    """One client command packet: 3-byte length, sequence id 0, command byte, payload."""
    return struct.pack("<I", len(payload) + 1)[:3] + b"\x00" + bytes([command]) + payload
