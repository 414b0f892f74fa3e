"""Compressed JSON Lines backups: round trip, daily files, torn tails, gzip compatibility, recoverability."""

from __future__ import annotations

import gzip
import time
from collections import Counter
from datetime import UTC, datetime

import orjson
import pytest
from cl_plugin.graphs.traffic import synthetic_interactions

from cl_plugin.capture.logger import ProductionInteractionLogger
from cl_plugin.store.backup import BackupWriter, backup_files, iter_backup, read_backup

MIDNIGHT = 1_700_006_400.0  # 2023-11-15 00:00:00 UTC
assert MIDNIGHT % 86400 == 0


def row(i: int, ts: float) -> dict:
    return {
        "interaction_id": f"id-{i}",
        "timestamp": ts,
        "user_query": f"query {i} – ünïcode ✓ \U0001f600",
        "response": 'line one\nline two\t"quoted"',
        "agent_confidence": None if i % 2 else 0.25 * (i % 4),
        "tokens_used": i * 7,
        "metadata": orjson.dumps({"i": i, "tags": ["a", "b"]}).decode(),
    }


def utc_day(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).date().isoformat()


def test_rows_round_trip_in_write_order(tmp_path) -> None:
    backup = BackupWriter(tmp_path)
    batches = [[row(i, MIDNIGHT + 60 * i) for i in range(start, start + 25)] for start in (0, 25, 50)]
    for batch in batches:
        assert backup.append("interactions", batch, time_key="timestamp") > 0
    [path] = backup_files(tmp_path)
    result = read_backup(path)
    assert result.truncated is False
    assert result.records == [r for batch in batches for r in batch]
    assert backup.bytes_written == path.stat().st_size


def test_one_file_per_table_and_utc_day(tmp_path, monkeypatch) -> None:
    # A local time zone far from UTC must not move rows to another day's file.
    monkeypatch.setenv("TZ", "Pacific/Kiritimati")  # UTC+14
    time.tzset()
    try:
        backup = BackupWriter(tmp_path)
        stamps = [
            MIDNIGHT - 1,
            MIDNIGHT,
            MIDNIGHT + 1,
            MIDNIGHT + 86399.999,
            MIDNIGHT + 86400,
            MIDNIGHT + 3 * 86400,
        ]
        rows = [row(i, ts) for i, ts in enumerate(stamps)]
        backup.append("interactions", rows, time_key="timestamp")
        backup.append("feedback", [{"feedback_id": "f1", "created_at": MIDNIGHT + 5}], time_key="created_at")
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()

    files = backup_files(tmp_path, "interactions")
    days = sorted({utc_day(ts) for ts in stamps})
    assert [p.name for p in files] == [f"interactions-{d}.jsonl.gz" for d in days]
    for path in files:
        day = path.name.removeprefix("interactions-").removesuffix(".jsonl.gz")
        assert read_backup(path).records == [r for r in rows if utc_day(r["timestamp"]) == day]
    assert [p.name for p in backup_files(tmp_path, "feedback")] == [f"feedback-{utc_day(MIDNIGHT)}.jsonl.gz"]
    assert len(backup_files(tmp_path)) == len(days) + 1
    assert [r["interaction_id"] for r in iter_backup(tmp_path, "interactions")] == [
        r["interaction_id"] for r in rows
    ]


def _three_members(tmp_path) -> tuple[bytes, list[list[dict]], list[int]]:
    backup = BackupWriter(tmp_path)
    batches = [[row(i, MIDNIGHT + i) for i in range(start, start + 10)] for start in (0, 10, 20)]
    sizes = [backup.append("interactions", batch, time_key="timestamp") for batch in batches]
    [path] = backup_files(tmp_path)
    return path.read_bytes(), batches, sizes


def test_a_file_cut_inside_its_last_member_yields_every_complete_member(tmp_path) -> None:
    data, batches, sizes = _three_members(tmp_path)
    complete = batches[0] + batches[1]
    cut_path = tmp_path / "interactions-cut.jsonl.gz"
    for keep in range(1, sizes[2]):  # every possible crash point inside the last member
        cut_path.write_bytes(data[: sizes[0] + sizes[1] + keep])
        result = read_backup(cut_path)
        assert result.truncated is True, keep
        assert result.records == complete, keep


def test_a_file_cut_inside_an_earlier_member_keeps_the_members_before_it(tmp_path) -> None:
    data, batches, sizes = _three_members(tmp_path)
    cut_path = tmp_path / "interactions-cut.jsonl.gz"
    cut_path.write_bytes(data[: sizes[0] + sizes[1] // 2])
    assert read_backup(cut_path).records == batches[0]
    assert read_backup(cut_path).truncated is True


def test_backups_are_plain_gzip_readable_by_gzip_open(tmp_path) -> None:
    _, batches, _ = _three_members(tmp_path)
    [path] = backup_files(tmp_path)
    with gzip.open(path, "rb") as f:
        lines = f.read().splitlines()
    assert [orjson.loads(line) for line in lines] == [r for batch in batches for r in batch]
    assert read_backup(path).records == [orjson.loads(line) for line in lines]


def test_every_logged_interaction_is_recoverable_from_the_backups_exactly_once(tmp_path) -> None:
    start = MIDNIGHT - 2500  # the stream crosses a UTC midnight, so it spans two daily files
    items = list(synthetic_interactions(5000, seed=3, start_time=start))
    logger = ProductionInteractionLogger(
        {"storage": str(tmp_path), "buffer_size": 256, "flush_interval": 0.05}
    )
    try:
        for item in items:
            logger.log_interaction_sync(item)
    finally:
        assert logger.close()

    files = backup_files(tmp_path / "backups", "interactions")
    assert [p.name for p in files] == [
        f"interactions-{utc_day(start)}.jsonl.gz",
        f"interactions-{utc_day(MIDNIGHT)}.jsonl.gz",
    ]
    results = [read_backup(p) for p in files]
    assert not any(r.truncated for r in results)
    counts = Counter(rec["interaction_id"] for r in results for rec in r.records)
    assert set(counts) == {i.interaction_id for i in items}
    assert set(counts.values()) == {1}
    by_id = {rec["interaction_id"]: rec for r in results for rec in r.records}
    for item in items[:50]:
        assert by_id[item.interaction_id]["timestamp"] == pytest.approx(item.timestamp)
        assert by_id[item.interaction_id]["latency_ms"] == item.latency_ms


def test_members_appended_after_a_torn_one_are_still_read_and_the_damage_reported(tmp_path) -> None:
    data, batches, sizes = _three_members(tmp_path)
    torn = data[: sizes[0] + sizes[1] // 2]  # a crash cut the second member; a restart appended the third
    path = tmp_path / "interactions-torn.jsonl.gz"
    path.write_bytes(torn + data[sizes[0] + sizes[1] :])
    result = read_backup(path)
    assert result.records == batches[0] + batches[2]
    assert result.truncated is True and result.damaged == 1


def test_a_corrupted_member_in_the_middle_is_skipped_and_reported(tmp_path) -> None:
    data, batches, sizes = _three_members(tmp_path)
    spoiled = bytearray(data)
    spoiled[sizes[0] + sizes[1] // 2] ^= 0xFF  # one flipped byte inside the second member
    path = tmp_path / "interactions-spoiled.jsonl.gz"
    path.write_bytes(bytes(spoiled))
    result = read_backup(path)
    assert result.records == batches[0] + batches[2]
    assert result.truncated is True and result.damaged == 1
    assert read_backup(backup_files(tmp_path)[0]).damaged == 0  # the intact original reads clean


def test_embedding_vectors_are_backed_up_as_stored_gzip_blocks_and_read_back(tmp_path) -> None:
    import base64
    import zlib

    import numpy as np

    vector = np.random.default_rng(0).standard_normal(384).astype("<f4")
    rows = [
        {
            "interaction_id": f"id-{i}",
            "dim": 384,
            "vector": base64.b64encode(vector.tobytes()).decode(),
            "created_at": MIDNIGHT + i,
        }
        for i in range(50)
    ]
    backup = BackupWriter(tmp_path)
    backup.append("interaction_embeddings", rows, time_key="created_at")
    [path] = backup_files(tmp_path)
    raw = path.read_bytes()
    # stored, not deflated: the member is as large as the JSON it holds, and gzip reads it as any other
    payload = zlib.decompress(raw, 31)
    assert len(raw) > len(payload)
    assert read_backup(path).records == rows
    back = np.frombuffer(base64.b64decode(read_backup(path).records[7]["vector"]), dtype="<f4")
    np.testing.assert_array_equal(back, vector)
