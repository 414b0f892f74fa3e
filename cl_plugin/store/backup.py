"""Compressed JSON backups: one gzip JSON Lines file per table and UTC day.

Every batch the writer stores is appended as its own gzip member (concatenated members form one valid gzip
stream, so ``zcat`` and :func:`gzip.open` read the files). A process killed mid-append leaves at most one
incomplete member at the end of a file; :func:`read_backup` returns every complete record before it and says
that the tail was cut. Backups hold sanitized rows only: they are written after redaction, like the
database.
"""

from __future__ import annotations

import math
import os
import re
import time
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

__all__ = ["BackupReadResult", "BackupWriter", "backup_files", "encode_line", "iter_backup", "read_backup"]

_LAST_DAY = 2_932_896  # 9999-12-31
_NAME = re.compile(r"^(?P<table>[a-z_]+)-(?P<day>\d{4}-\d{2}-\d{2})\.jsonl\.gz$")
_JSON_TEXT_COLUMNS = (
    "metadata",
    "corrections",
    "inputs",
    "outputs",
    "alternatives",
    "features",
    "statistics",
)


class BackupWriter:
    """Appends rows to daily gzip JSON Lines files.

    Args:
        directory: folder of the backup files (created when missing).
        level: gzip compression level, 1 (fastest; about 4x smaller than the JSON) to 9 (smallest).
    """

    def __init__(self, directory: str | os.PathLike[str], *, level: int = 1) -> None:
        if not 1 <= level <= 9:
            raise ValueError(f"level must be between 1 and 9 (got {level})")
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.level = level
        self.bytes_written = 0

    def path_for(self, table: str, timestamp: float) -> Path:
        """The file that holds ``table`` rows of the UTC day of ``timestamp``."""
        day = time.strftime("%Y-%m-%d", time.gmtime(timestamp))
        return self.directory / f"{table}-{day}.jsonl.gz"

    def append(
        self, table: str, rows: Iterable[dict[str, Any]], *, time_key: str, fsync: bool = False
    ) -> int:
        """Append rows as one gzip member per day file.

        Args:
            table: table name, used as the file prefix.
            rows: stored rows, exactly as the database holds them (JSON columns stay JSON text).
            time_key: the column holding each row's unix time (it picks the day file).
            fsync: force the bytes to disk before returning.

        Returns:
            Bytes written.
        """
        return self.append_lines(table, [encode_line(row, time_key) for row in rows], fsync=fsync)

    def append_lines(self, table: str, lines: Iterable[tuple[int, bytes]], *, fsync: bool = False) -> int:
        """Append lines made by :func:`encode_line`, as one gzip member per day file. Returns bytes written."""
        by_day: dict[int, list[bytes]] = {}
        for day, line in lines:
            by_day.setdefault(day, []).append(line)
        written = 0
        for day, day_lines in by_day.items():
            path = self.path_for(table, day * 86400)
            day_lines.append(b"")
            comp = zlib.compressobj(self.level, zlib.DEFLATED, 31)  # 31: gzip container
            member = comp.compress(b"\n".join(day_lines)) + comp.flush()
            with open(path, "ab") as f:
                f.write(member)
                f.flush()
                if fsync:
                    os.fsync(f.fileno())
            written += len(member)
        self.bytes_written += written
        return written


def encode_line(row: dict[str, Any], time_key: str) -> tuple[int, bytes]:
    """A row's UTC day number and JSON line (done where the row is made, while it is still in cache).

    A time with no calendar day (NaN, negative, past 9999) is filed under the nearest day that has one,
    so one odd row never costs the rest of its batch their backup.
    """
    ts = row[time_key]
    day = int(ts // 86400) if isinstance(ts, int | float) and math.isfinite(ts) else 0
    return min(max(day, 0), _LAST_DAY), orjson.dumps(row)


@dataclass
class BackupReadResult:
    """Records read from one backup file, and whether its last member was cut short."""

    records: list[dict[str, Any]]
    truncated: bool


def read_backup(path: str | os.PathLike[str]) -> BackupReadResult:
    """Read every complete record of a backup file.

    Args:
        path: a ``<table>-<day>.jsonl.gz`` file.

    Returns:
        The records, in write order, and ``truncated=True`` when the file ends inside a member (a write
        interrupted by a crash); the records of complete members are all there.
    """
    data = Path(path).read_bytes()
    return BackupReadResult(*_read_members(data))


def _read_members(data: bytes) -> tuple[list[dict[str, Any]], bool]:
    records: list[dict[str, Any]] = []
    while data:
        d = zlib.decompressobj(31)
        try:
            chunk = d.decompress(data)
        except zlib.error:
            return records, True
        if not d.eof:
            return records, True
        records.extend(orjson.loads(line) for line in chunk.split(b"\n") if line)
        data = d.unused_data
    return records, False


def backup_files(directory: str | os.PathLike[str], table: str | None = None) -> list[Path]:
    """Backup files in a folder, oldest day first, optionally of one table."""
    root = Path(directory)
    if not root.is_dir():
        return []
    out = []
    for p in root.iterdir():
        m = _NAME.match(p.name)
        if m and (table is None or m["table"] == table):
            out.append((m["day"], m["table"], p))
    return [p for _, _, p in sorted(out)]


def iter_backup(directory: str | os.PathLike[str], table: str) -> Iterator[dict[str, Any]]:
    """Every complete record of one table's backups, oldest day first, one file in memory at a time."""
    for path in backup_files(directory, table):
        yield from read_backup(path).records
