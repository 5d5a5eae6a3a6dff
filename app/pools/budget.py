"""What one response may hold: ``DBPOOL_MAX_RESPONSE_BYTES`` of encoded rows and, across a
``/transaction``'s results, ``DBPOOL_MAX_TRANSACTION_ROWS`` rows.

The encoder charges each slice of encoded rows (``encoding.encode_rows``); past either cap it
raises ``ResultTooLarge``, so neither the rest of the encoded rows nor the response body is
ever built.
"""

from __future__ import annotations

from typing import Any

from pydantic_core import to_json

from app.errors import ResultTooLarge

__all__ = ["ResultBudget"]


class ResultBudget:
    """What one response may still hold: encoded bytes and, across a transaction, rows.

    With ``keep_json`` the JSON measured is kept (``rows_json``), so a single-result
    response is serialized once, not measured and then serialized again.
    """

    __slots__ = ("_fragments", "bytes_left", "max_bytes", "max_rows", "rows_left")

    def __init__(self, max_bytes: int, max_rows: int | None = None, *,
                 keep_json: bool = False) -> None:
        self.max_bytes = self.bytes_left = max_bytes
        self.max_rows = max_rows
        self.rows_left = max_rows
        self._fragments: list[bytes] | None = [] if keep_json else None

    def rows_json(self) -> bytes:
        """The JSON array of every row charged so far, in order (``keep_json`` only)."""
        assert self._fragments is not None, "ResultBudget(keep_json=True) keeps the JSON"
        return b"[" + b",".join(self._fragments) + b"]"

    def charge(self, encoded: list[Any]) -> None:
        """Count ``encoded`` rows against the budget; ``ResultTooLarge`` once it is spent."""
        if self.rows_left is not None:
            self.rows_left -= len(encoded)
            if self.rows_left < 0:
                raise ResultTooLarge(
                    f"the results hold more than {self.max_rows} rows in all "
                    "(DBPOOL_MAX_TRANSACTION_ROWS): select fewer rows, or split the work",
                    details={"maxRows": self.max_rows},
                )
        data = to_json(encoded)
        self.bytes_left -= len(data)
        if self._fragments is not None and encoded:
            self._fragments.append(data[1:-1])  # the rows without the array's brackets
        if self.bytes_left < 0:
            raise ResultTooLarge(
                f"the response would be larger than {self.max_bytes} bytes "
                "(DBPOOL_MAX_RESPONSE_BYTES): select fewer rows or columns, lower maxRows, "
                "or page with LIMIT/OFFSET",
                details={"maxBytes": self.max_bytes},
            )
