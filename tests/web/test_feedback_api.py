"""The feedback endpoint: JSON and multipart posts, every refusal with its status and field and nothing
stored, idempotency keys, feedback tokens, body limits, and 1,000 concurrent posts over loopback."""

from __future__ import annotations

import asyncio
import base64
import io
import time
from collections.abc import Iterator

import httpx
import pytest
from PIL import Image
from starlette.testclient import TestClient

from cl_plugin import ProductionInteraction
from cl_plugin.privacy import Sanitizer
from cl_plugin.privacy.tokens import mint_feedback_token
from cl_plugin.store import Batch, Store
from cl_plugin.store.rows import row_from_interaction
from cl_plugin.web.feedback import feedback_app
from tests.web.server import serve

KEY = "endpoint-test-key"
API_KEY = "sk-proj-" + "Z8k1Qw7Er4Ty2Ui9Op3As6Df0Gh5Jk2L"
URL = "/api/feedback"


def jpeg_with_gps() -> bytes:
    exif = Image.Exif()
    exif[0x010F] = "CanaryCam"
    exif.get_ifd(0x8825).update({1: "N", 2: (51.0, 30.0, 12.0)})
    out = io.BytesIO()
    Image.new("RGB", (40, 30), (9, 90, 200)).save(out, "JPEG", exif=exif.tobytes())
    return out.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def add_interactions(store: Store, *ids: str) -> None:
    rows = [
        row_from_interaction(
            ProductionInteraction(
                interaction_id=i, timestamp=time.time(), session_id="s", user_query="q", response="r"
            ),
            Sanitizer(),
        )
        for i in ids
    ]
    store.write(Batch({"interactions": rows}))


def count(store: Store, table: str) -> int:
    with store.read_connection() as conn:
        return conn.exec_driver_sql(f"SELECT COUNT(*) FROM {table}").scalar_one()


@pytest.fixture
def client(store: Store) -> Iterator[TestClient]:
    add_interactions(store, "i1", "i2")
    with TestClient(feedback_app(store, key=KEY)) as c:
        yield c


def test_a_json_post_stores_the_feedback_and_its_sanitized_attachments(
    client: TestClient, store: Store
) -> None:
    res = client.post(
        URL,
        json={
            "interaction_id": "i1",
            "score": 2,
            "thumbs": "down",
            "correction": "Read the key from the environment.",
            "comment": "it leaked my key",
            "attachments": [
                {"kind": "image", "filename": "screen.jpg", "content_base64": b64(jpeg_with_gps())},
                {
                    "kind": "code",
                    "filename": "client.py",
                    "content_base64": b64(f"key = '{API_KEY}'".encode()),
                },
            ],
        },
    )
    assert res.status_code == 201, res.text
    body = res.json()
    assert body["interaction_id"] == "i1" and len(body["attachments"]) == 2
    image, code = body["attachments"]
    assert (image["kind"], image["media_type"], code["media_type"]) == (
        "image",
        "image/jpeg",
        "text/plain; charset=utf-8",
    )
    assert b"Exif" not in store.attachments.get(image["sha256"])["content"]
    assert store.attachments.get(code["sha256"])["content"] == b"key = '[API_KEY]'"
    got = store.get_interaction("i1")
    assert (got["user_feedback_score"], got["thumbs_up_down"]) == (2.0, "down")
    assert "[API_KEY]" in got["corrections"][0] and API_KEY not in got["corrections"][0]


def test_a_multipart_post_takes_file_parts(client: TestClient, store: Store) -> None:
    res = client.post(
        URL,
        data={"run_id": "i2", "score": "4", "language": "python", "value": '{"tags": ["ui"]}'},
        files=[
            ("attachments", ("photo.png", jpeg_with_gps(), "image/png")),  # the bytes say JPEG
            ("code", ("fix.py", b"print('ok')\n", "text/x-python")),
            ("attachments", ("notes.txt", b"plain notes", "text/plain")),
        ],
    )
    assert res.status_code == 201, res.text
    kinds = [(a["kind"], a["media_type"], a["language"]) for a in res.json()["attachments"]]
    assert kinds == [
        ("image", "image/jpeg", None),
        ("code", "text/plain; charset=utf-8", "python"),
        ("text", "text/plain; charset=utf-8", None),
    ]
    [row] = store.feedback.history("i2")
    assert row["score"] == 4.0 and row["value"] == {"tags": ["ui"]}


BAD_POSTS = {
    "not-json": ({"content": b"{nope", "headers": {"content-type": "application/json"}}, 400, "body"),
    "json-array": ({"json": [1, 2]}, 400, "body"),
    "unknown-field": ({"json": {"interaction_id": "i1", "score": 3, "stars": 5}}, 400, "stars"),
    "wrong-content-type": (
        {"content": b"score=3", "headers": {"content-type": "text/plain"}},
        415,
        "Content-Type",
    ),
    "unknown-interaction": ({"json": {"interaction_id": "nope", "score": 3}}, 404, "interaction_id"),
    "no-interaction": ({"json": {"score": 3}}, 422, "interaction_id"),
    "score-out-of-range": ({"json": {"interaction_id": "i1", "score": 9}}, 422, "score"),
    "score-not-a-number": ({"json": {"interaction_id": "i1", "score": "high"}}, 422, "score"),
    "form-score-not-a-number": (
        {
            "data": {"interaction_id": "i1", "score": "high"},
            "files": [("code", ("a.py", b"x", "text/plain"))],
        },
        422,
        "score",
    ),
    "text-posing-as-image": (
        {
            "json": {
                "interaction_id": "i1",
                "score": 3,
                "attachments": [{"kind": "image", "content_base64": b64(b"<svg/>")}],
            }
        },
        415,
        "attachments[0].content",
    ),
    "latin1-text": (
        {
            "json": {
                "interaction_id": "i1",
                "score": 3,
                "attachments": [{"kind": "text", "content_base64": b64("é".encode("latin-1"))}],
            }
        },
        422,
        "attachments[0].content",
    ),
    "truncated-image": (
        {
            "json": {
                "interaction_id": "i1",
                "score": 3,
                "attachments": [{"kind": "image", "content_base64": b64(jpeg_with_gps()[:150])}],
            }
        },
        422,
        "attachments[0].content",
    ),
    "too-many-attachments": (
        {
            "json": {
                "interaction_id": "i1",
                "attachments": [{"kind": "text", "content_base64": b64(b"x")}] * 6,
            }
        },
        413,
        "attachments",
    ),
    "bad-base64": (
        {"json": {"interaction_id": "i1", "attachments": [{"kind": "text", "content_base64": "%%%"}]}},
        422,
        "attachments[0].content_base64",
    ),
    "unknown-file-part": (
        {"data": {"interaction_id": "i1"}, "files": [("video", ("a.mp4", b"x", "video/mp4"))]},
        400,
        "video",
    ),
    "two-ids": ({"json": {"interaction_id": "i1", "run_id": "i2", "score": 3}}, 400, "run_id"),
    "bad-auth-scheme": (
        {"json": {"interaction_id": "i1", "score": 3}, "headers": {"authorization": "Basic eDp5"}},
        401,
        "Authorization",
    ),
}


@pytest.mark.parametrize("case", BAD_POSTS, ids=list(BAD_POSTS))
def test_a_bad_post_is_refused_with_its_status_and_field_and_nothing_is_stored(
    client: TestClient, store: Store, case: str
) -> None:
    kwargs, status, field = BAD_POSTS[case]
    res = client.post(URL, **kwargs)
    assert res.status_code == status, res.text
    body = res.json()
    assert body["field"] == field and body["error"]
    assert count(store, "feedback") == count(store, "attachments") == count(store, "feedback_requests") == 0


def test_an_oversized_body_is_refused_before_it_is_read(store: Store) -> None:
    add_interactions(store, "i1")
    app = feedback_app(store, key=KEY, max_body_bytes=10_000)
    big = {"interaction_id": "i1", "attachments": [{"kind": "text", "content_base64": b64(b"x" * 20_000)}]}
    with TestClient(app) as c:
        res = c.post(URL, json=big)
        assert (
            res.status_code == 413
            and res.json()["field"] == "body"
            and "at most 10,000" in res.json()["error"]
        )
    # Without a length header (chunked), the read stops at the limit.
    received = 0

    def chunks() -> Iterator[bytes]:
        nonlocal received
        yield b'{"interaction_id": "i1", "comment": "'
        for _ in range(1000):
            received += 1
            yield b"y" * 1000
        yield b'"}'

    with serve(app) as base, httpx.Client(base_url=base) as c:
        res = c.post(URL, content=chunks(), headers={"content-type": "application/json"})
    assert res.status_code == 413 and res.json()["field"] == "body"
    assert count(store, "feedback") == 0


def test_an_idempotency_key_stores_a_retry_once_and_answers_it_the_same(
    client: TestClient, store: Store
) -> None:
    post = {
        "interaction_id": "i1",
        "score": 5,
        "attachments": [{"kind": "code", "content_base64": b64(b"ok()")}],
    }
    first = client.post(URL, json=post, headers={"Idempotency-Key": "req-42"})
    again = client.post(URL, json=post, headers={"Idempotency-Key": "req-42"})
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    assert count(store, "feedback") == 1
    other = client.post(URL, json={**post, "score": 1}, headers={"Idempotency-Key": "req-42"})
    assert other.status_code == 422 and other.json()["field"] == "Idempotency-Key"
    assert count(store, "feedback") == 1


def test_tokens_scope_a_post_to_their_interaction(store: Store) -> None:
    add_interactions(store, "i1", "i2")
    token = mint_feedback_token(KEY, "i1", ttl=60)
    with TestClient(feedback_app(store, key=KEY, require_token=True)) as c:
        missing = c.post(URL, json={"interaction_id": "i1", "score": 3})
        assert missing.status_code == 401 and missing.json()["field"] == "token"
        ok = c.post(URL, json={"score": 3}, headers={"Authorization": f"Bearer {token}"})
        assert ok.status_code == 201 and ok.json()["interaction_id"] == "i1"
        in_field = c.post(URL, json={"interaction_id": "i1", "thumbs": "up", "token": token})
        assert in_field.status_code == 201
        other = c.post(
            URL, json={"interaction_id": "i2", "score": 3}, headers={"Authorization": f"Bearer {token}"}
        )
        assert other.status_code == 403 and other.json()["field"] == "token"
        forged = mint_feedback_token("another-key", "i1", ttl=60)
        res = c.post(URL, json={"score": 3}, headers={"Authorization": f"Bearer {forged}"})
        assert res.status_code == 401 and "signature" in res.json()["error"]
        expired = mint_feedback_token(KEY, "i1", ttl=60, now=time.time() - 120)
        res = c.post(URL, json={"score": 3}, headers={"Authorization": f"Bearer {expired}"})
        assert res.status_code == 401 and "expired" in res.json()["error"]
    assert [r["score"] for r in store.feedback.history("i1")] == [3.0, None]
    assert store.feedback.history("i2") == []


def test_an_id_holding_pii_is_found_under_its_hash(store: Store) -> None:
    email = "ann.lee@example.com"
    with TestClient(feedback_app(store, key=KEY)) as c:
        from cl_plugin.privacy import safe_identifier

        add_interactions(store, safe_identifier(email, KEY))
        res = c.post(URL, json={"interaction_id": email, "score": 4})
        assert res.status_code == 201 and email not in res.text


def post_many(base: str, n: int, ids: list[str], *, connections: int = 64) -> list[httpx.Response]:
    async def run() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
        async with httpx.AsyncClient(base_url=base, limits=limits, timeout=120) as c:
            return await asyncio.gather(
                *(
                    c.post(
                        URL,
                        json={
                            "interaction_id": ids[k % len(ids)],
                            "score": 1 + k % 5,
                            "comment": f"post {k}",
                        },
                    )
                    for k in range(n)
                )
            )

    return asyncio.run(run())


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_a_thousand_concurrent_posts_over_loopback_are_each_stored_exactly_once(
    backend: str, request: pytest.FixtureRequest, tmp_path
) -> None:
    url = f"sqlite:///{tmp_path / 'fb.db'}" if backend == "sqlite" else request.getfixturevalue("pg_url")
    store = Store.from_url(url).setup()
    ids = [f"i{k}" for k in range(50)]
    add_interactions(store, *ids)
    try:
        with serve(feedback_app(store, key=KEY)) as base:
            responses = post_many(base, 1000, ids)
        assert [r.status_code for r in responses] == [201] * 1000
        sent = sorted(r.json()["feedback_id"] for r in responses)
        with store.read_connection() as conn:
            stored = sorted(conn.exec_driver_sql("SELECT feedback_id FROM feedback").scalars())
            comments = sorted(conn.exec_driver_sql("SELECT comment FROM feedback").scalars())
        assert stored == sent and len(set(sent)) == 1000
        assert comments == sorted(f"post {k}" for k in range(1000))
    finally:
        store.close()


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_concurrent_retries_under_one_idempotency_key_store_one_row_and_get_one_answer(
    backend: str, request: pytest.FixtureRequest, tmp_path
) -> None:
    url = f"sqlite:///{tmp_path / 'fb.db'}" if backend == "sqlite" else request.getfixturevalue("pg_url")
    store = Store.from_url(url).setup()
    add_interactions(store, "i1")
    post = {
        "interaction_id": "i1",
        "score": 2,
        "attachments": [{"kind": "code", "content_base64": b64(b"x")}],
    }

    async def retries(base: str) -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=base, timeout=60) as c:
            return await asyncio.gather(
                *(c.post(URL, json=post, headers={"Idempotency-Key": "same"}) for _ in range(20))
            )

    try:
        with serve(feedback_app(store, key=KEY)) as base:
            responses = asyncio.run(retries(base))
        assert {r.status_code for r in responses} == {201}
        assert len({r.text for r in responses}) == 1
        assert count(store, "feedback") == count(store, "feedback_requests") == 1
    finally:
        store.close()
