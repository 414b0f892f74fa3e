"""Ids that hold PII: every id field a record accepts is stored as a keyed hash when it holds PII (stable, so
one user keeps one id), never as given and never merged into a placeholder; ids without PII stay as given."""

from __future__ import annotations

import gzip
import logging
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from cl_plugin import DataQualityValidator, ProductionInteractionLogger
from cl_plugin.errors import InvalidRecordError
from cl_plugin.privacy import (
    REDACTED,
    Sanitizer,
    default_redactor,
    hash_identifier,
    id_hash_key,
    safe_identifier,
)
from cl_plugin.records import ProductionInteraction
from cl_plugin.store.rows import feedback_row, row_from_interaction

EMAIL = "jane.doe@example.com"
PHONE = "(415) 555-0134"
KEY = "test-key"


def interaction(**changes: object) -> ProductionInteraction:
    values: dict = {
        "interaction_id": "i-1",
        "timestamp": 1_700_000_000.0,
        "session_id": "s-1",
        "user_query": "q",
        "response": "r",
    }
    return ProductionInteraction(**{**values, **changes})


def redacting(**kwargs: object) -> Sanitizer:
    return Sanitizer(redact=default_redactor().redact, **kwargs)


def test_every_id_field_holding_pii_is_stored_as_its_keyed_hash(key_file: Path) -> None:
    ids = {"interaction_id": f"order {EMAIL}", "run_id": EMAIL, "session_id": PHONE, "user_id": EMAIL}
    row = row_from_interaction(interaction(**ids), redacting())

    key = key_file.read_text().strip()
    assert {name: row[name] for name in ids} == {name: hash_identifier(v, key) for name, v in ids.items()}
    assert row["user_id"] == row["run_id"]  # the same id, the same hash, whatever field holds it
    fb = feedback_row(f"order {EMAIL}", redacting(), score=4.0)
    assert fb["interaction_id"] == row["interaction_id"]  # feedback by the raw id finds the interaction


@pytest.mark.parametrize(
    "raw",
    [
        "user-555-123-4567",
        "cust_4111111111111111",
        "c-(415) 555-0134",
        "tenant:acme/user=jane.doe@example.com",
        "sk-proj-Abcdefghij0123456789klmnopqrstuv",
        "+44 20 7946 0958",
        "10.1.2.3",
    ],
)
def test_pii_glued_to_a_prefix_counts_in_an_id(raw: str, key_file: Path) -> None:
    assert redacting().key(raw) == safe_identifier(raw) == hash_identifier(raw, key_file.read_text().strip())


@pytest.mark.parametrize(
    "plain",
    [
        "user-42",
        "session_123",
        "s-1",
        "thread-1",
        "session-2024-01-01",
        "order-20240101123",
        # a stable test id: every xdist worker must collect the same test names
        pytest.param(str(uuid.uuid4()), id="uuid4"),
    ],
)
def test_ids_without_pii_are_kept_as_given(plain: str, key_file: Path) -> None:
    row = row_from_interaction(
        interaction(interaction_id=plain, session_id=plain, user_id=plain), redacting()
    )
    assert (row["interaction_id"], row["session_id"], row["user_id"]) == (plain, plain, plain)
    assert safe_identifier(plain) == plain
    assert not key_file.exists()  # no id needed the key, so none was generated


def test_the_configured_keys_come_first_and_no_redaction_keeps_ids(key_file: Path) -> None:
    by_pii_key = redacting(hash_pii_id=lambda v: hash_identifier(v, "a"), hash_id=lambda v: "unused")
    by_hash_key = redacting(hash_id=lambda v: hash_identifier(v, "b"))
    assert by_pii_key.key(EMAIL) == hash_identifier(EMAIL, "a") == safe_identifier(EMAIL, "a")
    assert by_hash_key.identifier(EMAIL, False) == hash_identifier(EMAIL, "b")
    assert Sanitizer().identifier(EMAIL, False) == EMAIL  # the privacy layer is off
    assert not key_file.exists()


def test_an_id_is_hashed_when_redaction_fails_and_replaced_when_hashing_fails(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(_: str) -> str:
        raise RuntimeError(f"could not scan {EMAIL}")

    assert Sanitizer(redact=broken, hash_pii_id=lambda v: hash_identifier(v, KEY)).key(
        EMAIL
    ) == hash_identifier(EMAIL, KEY)
    assert redacting(hash_pii_id=broken).key(EMAIL) == REDACTED
    assert EMAIL not in caplog.text


def test_the_generated_key_is_kept_owner_only_and_reused(key_file: Path) -> None:
    first = id_hash_key()
    assert first == key_file.read_text().strip() and len(first) == 64
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert id_hash_key() == first


@pytest.mark.slow
def test_processes_creating_the_key_at_once_agree_on_one(key_file: Path) -> None:
    code = "from cl_plugin.privacy import id_hash_key; print(id_hash_key())"
    env = {**os.environ, "CL_PLUGIN_HASH_KEY_FILE": str(key_file)}
    env.pop("CL_PLUGIN_HASH_KEY", None)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True
        )
        for _ in range(4)
    ]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert {out.strip() for out, _ in outputs} == {key_file.read_text().strip()}
    assert sum("generated a key" in err for _, err in outputs) == 1  # one process created it
    assert [p.name for p in key_file.parent.iterdir()] == [key_file.name]  # no temporary file left behind


def test_the_environment_key_wins_over_the_file(key_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CL_PLUGIN_HASH_KEY", KEY)
    assert id_hash_key() == KEY and safe_identifier(EMAIL) == hash_identifier(EMAIL, KEY)
    assert not key_file.exists()


@pytest.mark.parametrize("kind", ["directory", "empty file"])
def test_an_unusable_key_file_still_hashes_with_a_process_key_and_says_so(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / kind.replace(" ", "-")
    path.mkdir() if kind == "directory" else path.write_text("")
    monkeypatch.delenv("CL_PLUGIN_HASH_KEY", raising=False)
    monkeypatch.setenv("CL_PLUGIN_HASH_KEY_FILE", str(path))

    hashed = safe_identifier(EMAIL)

    assert hashed.startswith("h:") and hashed == safe_identifier(EMAIL)  # stable within the process
    assert "for this process only" in caplog.text and "CL_PLUGIN_HASH_KEY" in caplog.text
    assert EMAIL not in caplog.text


def test_the_validator_hashes_ids_holding_pii_like_the_writer(key_file: Path) -> None:
    record = interaction(interaction_id=f"order {EMAIL}", session_id=PHONE, user_id=EMAIL, run_id="r-1")
    out = DataQualityValidator().sanitize_interaction(record)
    assert (out.interaction_id, out.session_id, out.user_id, out.run_id) == (
        safe_identifier(f"order {EMAIL}"),
        safe_identifier(PHONE),
        safe_identifier(EMAIL),
        "r-1",
    )
    assert out.session_id.startswith("h:")
    keyed = DataQualityValidator(hash_key=KEY, anonymize_user_ids=False, hash_session_ids=False)
    assert keyed.sanitize_interaction(record).user_id == hash_identifier(EMAIL, KEY)
    kept = DataQualityValidator(redact_sensitive_fields=False).sanitize_interaction(record)
    assert kept.user_id == EMAIL  # the privacy layer is off


def test_the_logger_stores_hashed_ids_and_finds_them_by_the_raw_id(tmp_path: Path, key_file: Path) -> None:
    storage = tmp_path / "storage"
    raw_id = f"order {EMAIL}"
    logger = ProductionInteractionLogger({"storage": str(storage), "use_compression": True})
    logger.log_interaction_sync(interaction(interaction_id=raw_id, session_id=PHONE, user_id=EMAIL))
    logger.record_feedback(raw_id, score=5.0, comment="thanks")  # by the raw id
    with pytest.raises(InvalidRecordError) as bad:
        logger.record_feedback(raw_id, score=9.0)
    [row] = logger.query_interactions(session_id=safe_identifier(PHONE))
    logger.close()

    assert (row["interaction_id"], row["user_id"]) == (safe_identifier(raw_id), safe_identifier(EMAIL))
    assert row["user_feedback_score"] == 5.0
    assert EMAIL not in str(bad.value) and bad.value.interaction_id == safe_identifier(raw_id)
    for path in storage.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            data += gzip.decompress(data) if path.suffix == ".gz" else b""
            assert EMAIL.encode() not in data and b"555-0134" not in data, path


def test_no_raw_id_reaches_an_error_message_or_a_log_line(
    key_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="cl_plugin")
    s = redacting()
    for raw in (EMAIL, PHONE):
        s.identifier(raw, False)
    with pytest.raises(InvalidRecordError) as missing:
        feedback_row(EMAIL, s)
    with pytest.raises(InvalidRecordError) as nul:
        feedback_row(f"{EMAIL}\x00", s, score=1.0)
    messages = f"{missing.value} {nul.value} {caplog.text}"
    assert "score is missing" in messages and "interaction_id must be" in messages
    assert EMAIL not in messages and "555-0134" not in messages
