"""What goes into one write and what it did: the store's write path and everything that hands it rows
(the writer thread, feedback, the journal's replay) share these two types."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["Batch", "WriteResult"]


@dataclass
class Batch:
    """Rows to write in one transaction, by table name. Rows are dicts keyed by column name."""

    tables: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def add(self, table: str, row: dict[str, Any]) -> None:
        self.tables.setdefault(table, []).append(row)

    def __len__(self) -> int:
        return sum(len(rows) for rows in self.tables.values())


@dataclass
class WriteResult:
    """What one batch did: rows inserted, identical repeats ignored, changed repeats updated (with history)."""

    inserted: int = 0
    unchanged: int = 0
    updated: int = 0
