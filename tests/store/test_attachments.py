"""Feedback attachments: checked and sniffed from their bytes, images re-encoded without metadata, code and
text redacted, stored once per content, purged when no feedback names them, and kept in the backups."""

from __future__ import annotations

import base64
import io
import sys
import time
from pathlib import Path

import orjson
import pytest
from PIL import Image

from cl_plugin import CaptureHandler, ProductionInteraction, ProductionInteractionLogger
from cl_plugin.cli import main as cli_main
from cl_plugin.config import FeedbackConfig
from cl_plugin.errors import (
    AttachmentTooLargeError,
    InvalidRecordError,
    MissingDependencyError,
    UnknownInteractionError,
    UnsupportedAttachmentError,
)
from cl_plugin.learning.training_data import prepare_training_data
from cl_plugin.privacy import Sanitizer
from cl_plugin.records import Attachment
from cl_plugin.store import Batch, Store
from cl_plugin.store.backup import iter_backup
from cl_plugin.store.rows import row_from_interaction

API_KEY = "sk-proj-" + "Q7v2Lm9XzR4tYb8NcK3pW6sD1fG5hJ0a"
GPS_MAKE = "CanaryCam GPS-7"


def jpeg_with_gps(color: tuple[int, int, int] = (200, 30, 30), size: tuple[int, int] = (64, 48)) -> bytes:
    """A JPEG whose EXIF holds a camera make and GPS coordinates."""
    exif = Image.Exif()
    exif[0x010F] = GPS_MAKE
    gps = exif.get_ifd(0x8825)
    gps.update({1: "N", 2: (51.0, 30.0, 12.34), 3: "W", 4: (0.0, 7.0, 39.0)})
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, "JPEG", exif=exif.tobytes())
    return out.getvalue()


def png(size: tuple[int, int] = (32, 32), text: str | None = None) -> bytes:
    out = io.BytesIO()
    info = None
    if text is not None:
        from PIL import PngImagePlugin

        info = PngImagePlugin.PngInfo()
        info.add_text("Comment", text)
    Image.new("RGBA", size, (0, 128, 255, 200)).save(out, "PNG", pnginfo=info)
    return out.getvalue()


def webp() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (20, 10), (10, 200, 10)).save(out, "WEBP")
    return out.getvalue()


def add_interaction(store: Store, iid: str = "i1", timestamp: float | None = None) -> str:
    item = ProductionInteraction(
        interaction_id=iid,
        timestamp=time.time() if timestamp is None else timestamp,
        session_id="s1",
        user_query="How do I retry a request?",
        response="Call it again.",
    )
    store.write(Batch({"interactions": [row_from_interaction(item, Sanitizer())]}))
    return iid


def count(store: Store, table: str) -> int:
    with store.read_connection() as conn:
        return conn.exec_driver_sql(f"SELECT COUNT(*) FROM {table}").scalar_one()


def test_an_image_with_exif_gps_is_stored_with_no_metadata_at_all(store: Store) -> None:
    iid = add_interaction(store)
    original = jpeg_with_gps()
    assert Image.open(io.BytesIO(original)).getexif().get_ifd(0x8825)  # the fixture has GPS
    row = store.feedback.record(
        iid, thumbs="down", attachments=[Attachment("image", original, filename="/home/ann/IMG_0001.jpg")]
    )
    [meta] = row["attachments"]
    assert (meta["kind"], meta["media_type"], meta["filename"]) == ("image", "image/jpeg", "IMG_0001.jpg")
    stored = store.attachments.get(meta["sha256"])
    data = stored["content"]
    assert stored["size"] == len(data) == meta["size"]
    image = Image.open(io.BytesIO(data))
    assert dict(image.getexif()) == {}
    assert not image.info.get("exif") and not image.info.get("icc_profile")
    assert GPS_MAKE.encode() not in data and b"Exif" not in data
    assert b"\x88\x25" not in data and b"\x25\x88" not in data  # the GPS IFD tag, in either byte order
    assert image.size == (64, 48)


def test_png_text_chunks_are_dropped_and_the_type_comes_from_the_bytes_not_the_name(store: Store) -> None:
    iid = add_interaction(store)
    row = store.feedback.record(
        iid,
        comment="screenshot",
        attachments=[{"kind": "image", "content": png(text="ann.lee@example.com"), "filename": "shot.jpg"}],
    )
    [meta] = row["attachments"]
    assert meta["media_type"] == "image/png"
    data = store.attachments.get(meta["sha256"])["content"]
    assert b"ann.lee" not in data and b"tEXt" not in data and b"iTXt" not in data
    assert Image.open(io.BytesIO(data)).mode == "RGBA"


def test_webp_is_accepted(store: Store) -> None:
    iid = add_interaction(store)
    row = store.feedback.record(iid, score=3, attachments=[Attachment("image", webp())])
    assert row["attachments"][0]["media_type"] == "image/webp"


@pytest.mark.parametrize(
    ("attachment", "error", "message"),
    [
        (
            Attachment("image", b"def f():\n    return 1\n"),
            UnsupportedAttachmentError,
            "not a PNG, JPEG or WebP",
        ),
        (Attachment("image", b"GIF89a" + b"\0" * 40), UnsupportedAttachmentError, "not a PNG, JPEG or WebP"),
        (Attachment("image", jpeg_with_gps()[:200]), InvalidRecordError, "truncated or damaged"),
        (Attachment("text", "caf\u00e9".encode("latin-1")), InvalidRecordError, "not UTF-8"),
        (Attachment("image", png(size=(4097, 2))), AttachmentTooLargeError, "4097x2 pixels"),
        (Attachment("code", "x" * 200_001), AttachmentTooLargeError, "200,001 bytes"),
        (Attachment("video", b"...."), InvalidRecordError, "kind must be one of"),  # type: ignore[arg-type]
        ({"kind": "text", "content_base64": "not base64!"}, InvalidRecordError, "not valid base64"),
        (Attachment("code", "print(1)", language="py thon"), InvalidRecordError, "language"),
    ],
    ids=[
        "text-claiming-image",
        "gif",
        "truncated-jpeg",
        "latin1-text",
        "too-wide",
        "too-long-code",
        "unknown-kind",
        "bad-base64",
        "bad-language",
    ],
)
def test_a_bad_attachment_is_refused_naming_its_field_and_nothing_is_stored(
    store: Store, attachment: object, error: type[Exception], message: str
) -> None:
    iid = add_interaction(store)
    with pytest.raises(error, match=message) as caught:
        store.feedback.record(iid, score=4, attachments=[Attachment("code", "ok = 1"), attachment])
    assert caught.value.field.startswith("attachments[1]")
    assert (
        count(store, "feedback") == count(store, "attachments") == count(store, "feedback_attachments") == 0
    )


def test_limits_come_from_the_feedback_config(store: Store) -> None:
    iid = add_interaction(store)
    limits = FeedbackConfig(max_attachments=1, max_image_bytes=500)
    with pytest.raises(AttachmentTooLargeError, match="at most 1 are allowed") as caught:
        store.feedback.record(
            iid, score=1, attachments=[Attachment("code", "a"), Attachment("code", "b")], limits=limits
        )
    assert caught.value.field == "attachments"
    with pytest.raises(AttachmentTooLargeError, match=r"feedback\.max_image_bytes"):
        store.feedback.record(
            iid, score=1, attachments=[Attachment("image", jpeg_with_gps(size=(300, 300)))], limits=limits
        )
    assert count(store, "feedback") == 0


def test_code_and_text_are_redacted_like_every_other_text(store: Store) -> None:
    iid = add_interaction(store)
    code = f'client = OpenAI(api_key="{API_KEY}")\n# ask ann.lee@example.com\n'
    row = store.feedback.record(
        iid,
        correction="Pass the key from the environment.",
        attachments=[Attachment("code", code, language="Python"), Attachment("text", b"call (415) 555-0134")],
    )
    code_meta, text_meta = row["attachments"]
    stored = store.attachments.get(code_meta["sha256"])["content"].decode()
    assert API_KEY not in stored and "[API_KEY]" in stored and "ann.lee" not in stored
    assert code_meta["language"] == "python"
    assert "555-0134" not in store.attachments.get(text_meta["sha256"])["content"].decode()


def test_the_same_bytes_are_stored_once_and_listed_per_feedback(store: Store) -> None:
    iid = add_interaction(store)
    image = jpeg_with_gps()
    first = store.feedback.record(iid, thumbs="down", attachments=[Attachment("image", image)])
    second = store.feedback.record(iid, score=2, attachments=[{"kind": "image", "content": image}])
    assert first["attachments"][0]["sha256"] == second["attachments"][0]["sha256"]
    assert count(store, "attachments") == 1 and count(store, "feedback_attachments") == 2
    listed = store.attachments.for_interaction(iid)
    assert [a["feedback_id"] for a in listed] == [first["feedback_id"], second["feedback_id"]]
    assert {a["media_type"] for a in listed} == {"image/jpeg"} and "content" not in listed[0]
    assert store.attachments.get("0" * 64) is None


def test_attachments_alone_are_feedback_enough_but_an_unknown_interaction_is_refused(store: Store) -> None:
    iid = add_interaction(store)
    assert store.feedback.record(iid, attachments=[Attachment("text", "see log")])["attachments"]
    with pytest.raises(UnknownInteractionError):
        store.feedback.record("nope", attachments=[Attachment("text", "see log")])
    with pytest.raises(InvalidRecordError, match="or attachments"):
        store.feedback.record(iid, attachments=[])


def test_a_code_attachment_on_a_correction_becomes_part_of_its_retrieval_document(store: Store) -> None:
    iid = add_interaction(store)
    store.feedback.record(
        iid,
        correction="Answer: retry with backoff",
        attachments=[
            Attachment("code", "for attempt in range(5):\n    sleep(2 ** attempt)", language="python")
        ],
    )
    store.feedback.record(iid, thumbs="down", attachments=[Attachment("code", "not a correction")])
    [document] = store.get_interaction(iid)["corrections"]
    assert document.startswith("Answer: retry with backoff\n\n```python\nfor attempt in range(5):")
    assert "not a correction" not in document
    prepared = prepare_training_data(store.query_interactions(limit=None))
    [correction] = prepared.corrections
    assert "sleep(2 ** attempt)" in correction.answer


def test_purge_deletes_attachments_no_remaining_feedback_names(store: Store) -> None:
    now = time.time()
    old, new = add_interaction(store, "old", now - 100 * 86400), add_interaction(store, "new", now)
    shared, only_old = jpeg_with_gps(), png()
    store.feedback.record(
        old, score=1, attachments=[Attachment("image", shared), Attachment("image", only_old)]
    )
    store.feedback.record(new, score=5, attachments=[Attachment("image", shared)])
    deleted = store.retention.purge(now - 90 * 86400)
    assert deleted["attachments"] == 1 and deleted["feedback_attachments"] == 2
    [kept] = store.attachments.for_interaction(new)
    assert store.attachments.get(kept["sha256"]) is not None
    assert count(store, "attachments") == 1 and store.attachments.for_interaction(old) == []


def test_idempotency_key_stores_a_retry_once_and_refuses_it_for_other_feedback(store: Store) -> None:
    iid = add_interaction(store)
    first = store.feedback.record(
        iid, score=4, attachments=[Attachment("code", "x = 1")], idempotency_key="k-1"
    )
    again = store.feedback.record(
        iid, score=4, attachments=[Attachment("code", "x = 1")], idempotency_key="k-1"
    )
    assert again == first
    assert count(store, "feedback") == 1 and count(store, "feedback_requests") == 1
    with pytest.raises(InvalidRecordError, match="different feedback") as caught:
        store.feedback.record(iid, score=2, idempotency_key="k-1")
    assert caught.value.field == "idempotency_key"
    assert store.feedback.record(iid, score=2, idempotency_key="k-2")["feedback_id"] != first["feedback_id"]


def test_without_pillow_an_image_is_refused_with_the_install_command(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    iid, image = add_interaction(store), png()
    monkeypatch.setitem(sys.modules, "PIL", None)
    with pytest.raises(MissingDependencyError, match=r"pip install 'cl-plugin\[web\]'"):
        store.feedback.record(iid, score=3, attachments=[Attachment("image", image)])
    assert store.feedback.record(iid, score=3, attachments=[Attachment("code", "ok")])  # code needs no Pillow


def test_the_handler_queues_attachments_with_the_feedback(tmp_path: Path) -> None:
    handler = CaptureHandler("sqlite://", journal_dir=tmp_path / "journal", feedback={"max_attachments": 2})
    try:
        add_interaction(handler.store, "run-1")
        row = handler.record_feedback("run-1", score=2, attachments=[Attachment("image", jpeg_with_gps())])
        with pytest.raises(AttachmentTooLargeError):
            handler.record_feedback("run-1", score=2, attachments=[Attachment("code", "a")] * 3)
        assert handler.flush(timeout=30)
        [listed] = handler.store.attachments.for_interaction("run-1")
        assert listed["sha256"] == row["attachments"][0]["sha256"]
        assert b"Exif" not in handler.store.attachments.get(listed["sha256"])["content"]
    finally:
        handler.close()


def test_attachments_are_backed_up_sanitized_and_recoverable(tmp_path: Path) -> None:
    logger = ProductionInteractionLogger({"storage": str(tmp_path / "logs"), "flush_interval": 0.05})
    try:
        logger.log_interaction_sync(
            ProductionInteraction(
                interaction_id="i-1", timestamp=time.time(), session_id="s", user_query="q", response="r"
            )
        )
        row = logger.record_feedback(
            "i-1",
            correction="use the env var",
            attachments=[Attachment("image", jpeg_with_gps()), Attachment("code", f"key='{API_KEY}'")],
        )
        assert logger.flush()
    finally:
        assert logger.close()
    backups = tmp_path / "logs" / "backups"
    raw = b"".join(p.read_bytes() for p in backups.iterdir())
    assert API_KEY.encode() not in raw
    # A fresh database rebuilt from the backups alone holds the same attachments, byte for byte.
    fresh = Store.from_url(f"sqlite:///{tmp_path / 'restored.db'}").setup()
    tables = ("interactions", "feedback", "attachments", "feedback_attachments")
    fresh.write(Batch({t: list(iter_backup(backups, t)) for t in tables}))
    for meta in row["attachments"]:
        restored = fresh.attachments.get(meta["sha256"])
        assert restored["size"] == meta["size"] and restored["media_type"] == meta["media_type"]
    image = fresh.attachments.get(row["attachments"][0]["sha256"])["content"]
    assert base64.b64encode(image).decode() in {r["content"] for r in iter_backup(backups, "attachments")}
    assert dict(Image.open(io.BytesIO(image)).getexif()) == {}
    assert fresh.get_interaction("i-1")["corrections"][0].startswith(
        "use the env var\n\n```\nkey='[API_KEY]'"
    )
    fresh.close()


def test_the_jsonl_export_names_each_interactions_attachments_without_their_bytes(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    store = Store.from_url(url).setup()
    add_interaction(store, "with")
    add_interaction(store, "without")
    row = store.feedback.record("with", score=2, attachments=[Attachment("image", jpeg_with_gps())])
    store.close()
    out = tmp_path / "x.jsonl"
    assert cli_main(["export", "--store", url, "--out", str(out)]) == 0
    lines = {r["interaction_id"]: r for r in map(orjson.loads, out.read_bytes().splitlines())}
    [meta] = row["attachments"]
    assert lines["with"]["attachments"] == [{k: meta[k] for k in ("sha256", "kind", "media_type", "size")}]
    assert "attachments" not in lines["without"]
    content = Store.from_url(url).attachments.get(meta["sha256"])["content"]
    assert content not in out.read_bytes() and base64.b64encode(content) not in out.read_bytes()


def test_the_logger_takes_its_limits_from_the_feedback_keys_of_its_config(tmp_path: Path) -> None:
    logger = ProductionInteractionLogger({"storage": str(tmp_path), "max_attachments": 1})
    try:
        assert logger.feedback_limits.max_attachments == 1
        logger.log_interaction_sync(
            ProductionInteraction(
                interaction_id="i", timestamp=time.time(), session_id="s", user_query="q", response="r"
            )
        )
        with pytest.raises(AttachmentTooLargeError, match="at most 1"):
            logger.record_feedback(
                "i", score=3, attachments=[Attachment("code", "a"), Attachment("text", "b")]
            )
    finally:
        logger.close()


def test_a_jpeg_under_the_limit_is_kept_even_when_reencoding_at_full_quality_would_pass_it(
    store: Store,
) -> None:
    iid = add_interaction(store)
    noise = bytes((i * 2654435761 >> 7) & 0xFF for i in range(300 * 200 * 3))
    out = io.BytesIO()
    Image.frombytes("RGB", (300, 200), noise).save(out, "JPEG", quality=65)
    original = out.getvalue()
    limits = FeedbackConfig(max_image_bytes=len(original))
    row = store.feedback.record(iid, score=2, attachments=[Attachment("image", original)], limits=limits)
    assert row["attachments"][0]["size"] <= len(original)
