"""Compressed JSON backups: one gzip JSON Lines file per table and UTC day.

Every batch the writer stores is appended as its own gzip member (concatenated members form one valid gzip
stream, so ``zcat`` and :func:`gzip.open` read the files). A process killed mid-append leaves at most one
incomplete member at the end of a file; :func:`read_backup` returns every complete record before it and says
that the tail was cut. A restarted process appends its members behind such a torn one (and a damaged disk
can spoil one in the middle), so the reader skips a member that does not check out, resumes at the next
gzip header whose member is whole, and counts what it skipped. Backups hold sanitized rows only: they are
written after redaction, like the database.
"""

from __future__ import annotations

import calendar
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

__all__ = [
    "BackupReadResult",
    "BackupWriter",
    "backup_files",
    "encode_line",
    "iter_backup",
    "purge_backups",
    "read_backup",
]

_LAST_DAY = 2_932_896  # 9999-12-31
_GZIP_MAGIC = b"\x1f\x8b\x08"  # every member starts with it (ID1, ID2, CM=deflate)
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


#: Tables whose rows gzip cannot shrink (base64 of float vectors): their members are written as stored
#: blocks, which costs no compression time (at level 1 these vectors took 6x the time of all the rest).
STORED_TABLES = frozenset({"interaction_embeddings"})


class BackupWriter:
    """Appends rows to daily gzip JSON Lines files.

    Args:
        directory: folder of the backup files (created when missing).
        level: gzip compression level, 1 (fastest; about 4x smaller than the JSON) to 9 (smallest). Tables
            in :data:`STORED_TABLES` are stored uncompressed in the same gzip format.
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
            level = 0 if table in STORED_TABLES else self.level
            comp = zlib.compressobj(level, zlib.DEFLATED, 31)  # 31: gzip container
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
    """Records read from one backup file, and whether part of it could not be read.

    Attributes:
        records: every record of every intact member, in write order.
        truncated: some bytes did not form a complete, checked member (a cut tail, or damage).
        damaged: how many stretches of unreadable bytes were skipped.
    """

    records: list[dict[str, Any]]
    truncated: bool
    damaged: int = 0


def read_backup(path: str | os.PathLike[str]) -> BackupReadResult:
    """Read every complete record of a backup file.

    Args:
        path: a ``<table>-<day>.jsonl.gz`` file.

    Returns:
        The records, in write order, with ``truncated=True`` and the number of ``damaged`` stretches when
        some bytes do not form a complete member (a write interrupted by a crash, members appended after
        it by a restarted process, or a corrupted disk block); the records of intact members are all there.
    """
    data = Path(path).read_bytes()
    records: list[dict[str, Any]] = []
    damaged = 0
    pos = 0
    while pos < len(data):
        end = _read_member(data, pos, records)
        if end is None:
            damaged += 1
            end = _next_intact_member(data, pos + 1, records)
        pos = end
    return BackupReadResult(records, damaged > 0, damaged)


def _read_member(data: bytes, pos: int, records: list[dict[str, Any]]) -> int | None:
    """Append the records of the gzip member starting at ``pos``; its end, or None if it does not check out."""
    d = zlib.decompressobj(31)
    try:
        chunk = d.decompress(memoryview(data)[pos:])
    except zlib.error:
        return None
    if not d.eof:
        return None
    try:
        parsed = [orjson.loads(line) for line in chunk.split(b"\n") if line]
    except orjson.JSONDecodeError:
        return None
    records.extend(parsed)
    return len(data) - len(d.unused_data)


def _next_intact_member(data: bytes, pos: int, records: list[dict[str, Any]]) -> int:
    """Read the first intact member at or after ``pos`` (skipping damaged bytes); its end, or the file's end."""
    while (pos := data.find(_GZIP_MAGIC, pos)) != -1:
        end = _read_member(data, pos, records)
        if end is not None:
            return end
        pos += 1
    return len(data)


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


def purge_backups(directory: str | os.PathLike[str], older_than: float) -> list[Path]:
    """Delete the backup files whose whole UTC day ended before a unix time (retention).

    A file holds one table's rows of one day, so it goes once the newest row it can hold has expired: a day
    that ends after ``older_than`` keeps its file, as :meth:`~cl_plugin.store.retention.Retention.purge`
    keeps that day's newer rows.

    Args:
        directory: the backup folder (``<storage>/backups``); a missing folder has nothing to delete.
        older_than: unix time.

    Returns:
        The deleted files.
    """
    deleted = []
    for path in backup_files(directory):
        day = time.strptime(_NAME.match(path.name)["day"], "%Y-%m-%d")  # type: ignore[index]
        if (calendar.timegm(day) + 86400) <= older_than:
            path.unlink(missing_ok=True)
            deleted.append(path)
    return deleted
