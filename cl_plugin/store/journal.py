"""The spill journal: where sanitized rows wait while the database cannot be reached.

Each writer appends to its own file (``spill-<pid>-<start>.jsonl``) and forces it to disk, so rows
acknowledged during an outage survive a crash. Replay claims a file by renaming it, writes its rows through
the store (whose writes are idempotent, so a replay cut short and repeated stores nothing twice) and deletes
it. Rows the database refuses outright (bad data, not an outage) go to ``rejected-<pid>.jsonl`` with the
error, so nothing disappears silently.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import orjson

from cl_plugin.privacy import repair_text

__all__ = ["Journal"]

log = logging.getLogger("cl_plugin.store")

# Spill files that open journals of this process are still appending to: never replayed from under them.
_ACTIVE: set[str] = set()


def _dump_line(obj: Any) -> bytes:
    """One JSON line; strings the encoder refuses (lone surrogates) are repaired rather than lost."""
    try:
        return orjson.dumps(obj)
    except TypeError:
        return orjson.dumps(_repair(obj))


def _repair(obj: Any) -> Any:
    if isinstance(obj, str):
        return repair_text(obj)
    if isinstance(obj, dict):
        return {_repair(k): _repair(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_repair(v) for v in obj]
    return obj


class Journal:
    """Spill and dead-letter files of one writer.

    Args:
        directory: folder for the journal files (created when missing).
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._spill = self.directory / f"spill-{os.getpid()}-{time.time_ns()}.jsonl"
        _ACTIVE.add(str(self._spill))
        self.spilled = 0
        self.rejected = 0

    def spill(self, rows: Iterable[tuple[str, dict[str, Any]]]) -> int:
        """Append ``(table, row)`` pairs durably. Returns how many were written."""
        lines = [_dump_line({"t": t, "r": r}) for t, r in rows]
        if not lines:
            return 0
        with open(self._spill, "ab") as f:
            f.write(b"\n".join(lines) + b"\n")
            f.flush()
            os.fsync(f.fileno())
        self.spilled += len(lines)
        return len(lines)

    def reject(self, table: str, row: dict[str, Any], error: BaseException) -> None:
        """Keep a row the database refused, with the reason."""
        line = _dump_line({"t": table, "r": row, "error": f"{type(error).__name__}: {error}"[:2000]})
        with open(self.directory / f"rejected-{os.getpid()}.jsonl", "ab") as f:
            f.write(line + b"\n")
        self.rejected += 1

    def release(self) -> None:
        """This journal appends no more: its spill file may now be replayed by any writer."""
        _ACTIVE.discard(str(self._spill))

    def has_pending(self) -> bool:
        """Whether spill files wait for replay."""
        return any(self.directory.glob("spill-*.jsonl")) or any(self.directory.glob("claimed-*.jsonl"))

    def pending(self) -> list[Path]:
        """Spill files waiting for replay, of this process and of processes that are gone."""
        for p in sorted(self.directory.glob("claimed-*.jsonl")):
            # A replay interrupted by a crash: its claimer is gone, so hand the file back.
            if not _pid_alive(_pid_of(p.name)):
                os.replace(p, p.with_name(p.name.split("__", 1)[1]))
        return [
            p
            for p in sorted(self.directory.glob("spill-*.jsonl"))
            if p == self._spill
            or (_pid_of(p.name) == os.getpid() and str(p) not in _ACTIVE)
            or not _pid_alive(_pid_of(p.name))
        ]

    def replay(
        self, write: Callable[[list[tuple[str, dict[str, Any]]]], None], *, batch_size: int = 1000
    ) -> int:
        """Write every pending spilled row and delete the replayed files.

        Args:
            write: stores a list of ``(table, row)`` pairs in one transaction (the writer's own path).
            batch_size: rows per call of ``write``.

        Returns:
            Rows replayed.

        Raises:
            Exception: whatever the store raises; the file being replayed is handed back for a later try.
        """
        total = 0
        for path in self.pending():
            claimed = path.with_name(f"claimed-{os.getpid()}__{path.name}")
            try:
                os.replace(path, claimed)
            except FileNotFoundError:  # another process claimed it first
                continue
            try:
                total += _replay_file(claimed, write, batch_size)
            except BaseException:
                os.replace(claimed, path)
                raise
            claimed.unlink()
            log.info("replayed spilled rows from %s", path.name)
        return total


def _replay_file(
    path: Path, write: Callable[[list[tuple[str, dict[str, Any]]]], None], batch_size: int
) -> int:
    total = 0
    rows: list[tuple[str, dict[str, Any]]] = []
    for line in path.read_bytes().splitlines():
        try:
            item = orjson.loads(line)
        except orjson.JSONDecodeError:  # a line a crash cut short: it was never acknowledged
            continue
        rows.append((item["t"], item["r"]))
        if len(rows) >= batch_size:
            write(rows)
            total += len(rows)
            rows = []
    if rows:
        write(rows)
        total += len(rows)
    return total


def _pid_of(name: str) -> int:
    stem = name.split("__", 1)[0]
    try:
        return int(stem.split("-")[1])
    except (IndexError, ValueError):
        return -1


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
