"""The dashboard's routes with Starlette's test client, over a store of a user's own graph (the bookshop of
tests/web/shop.py), on SQLite and PostgreSQL."""

from __future__ import annotations

import html
import json
import re
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pytest
from starlette.testclient import TestClient

from cl_plugin.abtest import ABTestFramework
from cl_plugin.cli import main
from cl_plugin.errors import ConfigError
from cl_plugin.store import Store
from cl_plugin.web import check_bind, create_app
from cl_plugin.web.overview import Overview, View
from cl_plugin.web.security import MAX_BODY
from tests.web.shop import EMAIL, HOSTILE, QUESTIONS, capture, maintenance_config, paused_run, visit

PAGES = ("/", "/interactions", "/ab", "/maintenance", "/annotate")


@pytest.fixture(params=["sqlite", "postgresql"])
def shop(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Store, list[str]]]:
    """A store holding the bookshop's six captured runs (one hostile query, one with an e-mail address,
    one that raised), every other one rated."""
    url = (
        f"sqlite:///{tmp_path / 'shop.db'}"
        if request.param == "sqlite"
        else request.getfixturevalue("pg_url")
    )
    ids = capture(url)
    store = Store.from_url(url)
    yield store, ids
    store.close()


@pytest.fixture
def client(shop: tuple[Store, list[str]]) -> Iterator[TestClient]:
    with TestClient(create_app(shop[0])) as c:
        yield c


def _text(page: str) -> str:
    """A page's visible text."""
    page = re.sub(r"<(script|style)\b.*?</\1>", " ", page, flags=re.S)
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", page)))


def _csrf(page: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', page).group(1)


def test_every_page_renders_and_the_overview_counts_the_interactions(
    client: TestClient, shop: tuple[Store, list[str]]
) -> None:
    for path in PAGES:
        response = client.get(path)
        assert response.status_code == 200, (path, response.text[:500])
        assert '<script src="/static/live.js"></script>' in response.text
    overview = client.get("/").text
    assert re.search(r'id="interaction-count">6<', overview)
    for heading in (
        "Satisfaction and failures over time",
        "Latency",
        "Agent mix and drift",
        "Failure patterns",
    ):
        assert f"<h2>{heading}</h2>" in overview
    assert "bookshop/triage/route" in overview  # the decision point, in the filter
    live = client.get("/api/overview?window=all").json()
    assert live["count"] == 6 and "<h2>Latency</h2>" in live["html"]
    again = client.get(f"/api/overview?window=all&have={live['version']}").json()
    assert again["count"] == 6 and "html" not in again  # nothing new: only the count


def test_the_overview_filters_by_window_graph_and_point_in_the_url(client: TestClient) -> None:
    assert re.search(r'id="interaction-count">6<', client.get("/?window=hour&graph=bookshop").text)
    other = client.get("/?window=day&graph=warehouse").text
    assert (
        re.search(r'id="interaction-count">0<', other) and "No data: no interactions in this window" in other
    )
    point = client.get("/?point=bookshop/triage/route").text
    points = point[point.index('<section id="points">') : point.index('<section id="failures">')]
    assert "bookshop / triage / route" in points
    assert client.get("/?window=fortnight").status_code == 400
    assert client.get("/?point=a/b/c/d/e").status_code == 400


def test_the_interactions_page_filters_and_pages(client: TestClient, shop: tuple[Store, list[str]]) -> None:
    def found(query: str) -> list[str]:
        page = client.get(f"/interactions?{query}")
        assert page.status_code == 200, page.text[:500]
        return re.findall(r'<a href="/interactions/([0-9a-f-]{36})">', page.text)

    _store, ids = shop
    assert sorted(found("")) == sorted(ids)
    comics = [iid for iid, q in zip(ids, QUESTIONS, strict=True) if "comic" in q]
    assert sorted(found("agent=comics")) == sorted(comics)
    assert found("signal=error") == [ids[5]]  # the Asterix question raised in the comics node
    rated = [iid for i, iid in enumerate(ids) if i % 2 == 0]
    assert sorted(found("min_rating=1")) == sorted(rated)
    assert sorted(found("signal=unrated")) == sorted(set(ids) - set(rated))
    assert found("session=reader-2") == [ids[2]]
    assert found("graph=warehouse") == [] and sorted(found("window=hour&graph=bookshop")) == sorted(ids)
    assert client.get("/interactions?signal=bored").status_code == 400
    assert client.get("/interactions?min_rating=lots").status_code == 400
    assert 'rel="next"' not in client.get("/interactions").text


def test_the_interactions_page_pages_fifty_at_a_time(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'many.db'}"
    capture(url, tuple(f"a novel about the number {i}" for i in range(55)), rate=False)
    with closing(Store.from_url(url)) as store, TestClient(create_app(store)) as client:
        first = client.get("/interactions").text
        assert len(re.findall(r'<a href="/interactions/', first)) == 50 and 'rel="next"' in first
        second = client.get("/interactions?page=2").text
        assert len(re.findall(r'<a href="/interactions/', second)) == 5 and 'rel="prev"' in second


def test_a_session_holding_pii_is_found_by_its_id_and_shown_only_hashed(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'visits.db'}"
    ids = capture(url, session=visit)
    with closing(Store.from_url(url)) as store, TestClient(create_app(store)) as client:
        page = client.get(f"/interactions?session={quote(visit(0))}")  # the id as the application knows it
        found = re.findall(r'<a href="/interactions/([0-9a-f-]{36})">', page.text)
        assert sorted(found) == sorted(ids[0::2]) and EMAIL not in page.text
        assert re.search(r'name="session" value="h:[0-9a-f]{32}"', page.text)  # echoed as stored
        assert EMAIL not in client.get(f"/interactions/{ids[0]}").text


def test_an_interaction_shows_its_node_runs_decisions_and_feedback(
    client: TestClient, shop: tuple[Store, list[str]]
) -> None:
    _store, ids = shop
    page = client.get(f"/interactions/{ids[0]}").text
    runs = re.findall(r'<tr class="node-run" data-status="(\w+)"><td>(\w+)</td><td>(\w+)</td>', page)
    assert [(node, kind) for _, node, kind in runs if kind == "node"] == [
        ("triage", "node"),
        ("novels", "node"),
    ]
    decisions = page[page.index('<section id="decisions">') : page.index('<section id="feedback">')]
    assert "<td>triage</td><td>route</td><td>novels</td>" in decisions
    assert "<strong>novels</strong>" in decisions and "<li>comics</li>" in decisions
    feedback = _text(page[page.index('<section id="feedback">') :])
    assert "user_feedback" in feedback and "thanks [EMAIL]" in feedback
    failed = client.get(f"/interactions/{ids[5]}").text
    assert 'data-status="error"' in failed and "the comics catalogue timed out" in failed
    assert "not in an A/B test" in failed
    assert client.get("/interactions/no-such-id").status_code == 404


def test_a_hostile_query_is_shown_as_text_on_every_page(
    client: TestClient, shop: tuple[Store, list[str]]
) -> None:
    _store, ids = shop
    escaped = html.escape(HOSTILE, quote=True)
    for path in (*PAGES, *(f"/interactions/{iid}" for iid in ids), "/interactions?window=all"):
        page = client.get(path).text
        assert HOSTILE not in page and "<img" not in page, path
    assert escaped in client.get(f"/interactions/{ids[3]}").text
    assert escaped in client.get("/interactions").text
    assert HOSTILE not in json.dumps(client.get("/api/overview").json()["html"])


def test_an_email_address_never_reaches_a_page(client: TestClient, shop: tuple[Store, list[str]]) -> None:
    _store, ids = shop
    paths = (
        *PAGES,
        *(f"/interactions/{iid}" for iid in ids),
        "/api/overview",
        "/interactions?signal=unrated",
    )
    for path in paths:
        assert EMAIL not in client.get(path).text, path
    assert "[EMAIL]" in client.get(f"/interactions/{ids[4]}").text


def test_every_response_carries_the_security_headers_and_no_inline_script(client: TestClient) -> None:
    for path in (*PAGES, "/static/live.js", "/style.css", "/api/overview"):
        response = client.get(path)
        csp = response.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp.split("script-src")[1].split(";")[0]
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["referrer-policy"] == "no-referrer"
        if path in PAGES:
            assert re.findall(r"<script[^>]*>", response.text) == ['<script src="/static/live.js">']


def test_a_post_without_its_csrf_token_is_refused(client: TestClient) -> None:
    page = client.get("/annotate")  # sets the CSRF cookie
    assert page.status_code == 200 and client.cookies.get("cl_plugin_csrf")
    assert client.post("/annotate/any-item", data={"choice": "novels"}).status_code == 403
    assert client.post("/annotate/any-item", data={"choice": "novels", "csrf": "forged"}).status_code == 403
    assert client.post("/maintenance/resume", data={"thread": "t"}).status_code == 403
    with TestClient(client.app) as fresh:  # no cookie: a form from elsewhere
        assert fresh.post("/annotate/any-item", data={"csrf": "x", "choice": "novels"}).status_code == 403


def test_a_body_larger_than_the_bound_is_refused(client: TestClient) -> None:
    client.get("/annotate")
    response = client.post("/annotate/x", content=b"a" * (MAX_BODY + 1))
    assert response.status_code == 413


def test_binding_off_loopback_needs_a_token(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    check_bind("127.0.0.1", None)
    check_bind("::1", None)
    check_bind("localhost", None)
    with pytest.raises(ConfigError, match=r"pass --token or set CL_PLUGIN_SERVE_TOKEN"):
        check_bind("0.0.0.0", None)
    check_bind("0.0.0.0", "s3cret")
    monkeypatch.delenv("CL_PLUGIN_SERVE_TOKEN", raising=False)
    assert main(["serve", "--store", "sqlite://", "--host", "0.0.0.0"]) == 2
    err = capsys.readouterr().err
    assert "cl-plugin serve: serving on 0.0.0.0" in err and "--token" in err


def test_with_a_token_every_request_needs_it(shop: tuple[Store, list[str]]) -> None:
    app = create_app(shop[0], token="s3cret")
    with TestClient(app) as client:
        for path in (*PAGES, "/api/overview", "/static/live.js"):
            assert client.get(path).status_code == 401, path
        assert client.get("/", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert client.get("/", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        entered = client.get("/interactions?token=s3cret&agent=comics", follow_redirects=False)
        assert entered.status_code == 303 and entered.headers["location"] == "/interactions?agent=comics"
        assert client.get("/").status_code == 200  # the cookie from the visit with the token
    with TestClient(app) as other:
        assert other.get("/?token=wrong").status_code == 401


def test_the_ab_page_shows_each_running_test_with_its_interval_and_sample_ratio(
    client: TestClient, shop: tuple[Store, list[str]]
) -> None:
    rng = np.random.default_rng(3)
    with ABTestFramework({"min_samples": 50}, store=shop[0]) as ab:
        test_id = ab.create_test("triage v2", model_a="production", model_b="candidate")
        for i in range(300):
            group = ab.assign_group(test_id, f"reader-{i}")
            ab.record_result(test_id, group, metric=float(rng.random() < (0.8 if group == "B" else 0.5)))
    with ABTestFramework(store=shop[0]) as ab:
        status = ab.get_test_status(test_id)
    page = client.get("/ab").text
    running = _text(page[page.index('<section id="running">') : page.index('<section id="all">')])
    low, high = status["confidence_interval"]
    assert "triage v2" in running and f"{low:.3f} to {high:.3f}" in running
    assert (
        status["recommendation"] in running
        and ("mismatch" if status["sample_ratio"]["alert"] else "ok") in running
    )
    assert "<svg" in page  # the report's effect plot


def test_labels_from_the_page_resume_the_paused_run(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shop.db'}"
    capture(url)
    config, checkpoints = maintenance_config(tmp_path), str(tmp_path / "checkpoints.db")
    with closing(Store.from_url(url)) as store:
        paused = paused_run(store, checkpoints, config)
        with TestClient(create_app(store, config=config, checkpoints=checkpoints)) as client:
            runs = _text(client.get("/maintenance").text)
            assert f"Run {paused['run_id'][:12]} : paused for labels" in runs and "2 still pending" in runs
            page = client.get("/annotate").text
            assert 'id="resume"' not in page and "1 novels, 2 comics; s skip" in _text(page)
            for choice in ("comics", "comics"):  # two labels of one option: a router is trained, then gated
                page = client.get("/annotate").text
                item = re.search(r'data-item="([^"]+)"', page).group(1)
                posted = client.post(
                    f"/annotate/{item}", data={"csrf": _csrf(page), "choice": choice}, follow_redirects=False
                )
                assert posted.status_code == 303
            labeled = store.queue.items("labeled")
            assert [i["label"]["option"] for i in labeled] == ["comics", "comics"]
            assert {i["annotator"] for i in labeled} == {"web"}
            page = client.get("/annotate").text
            assert 'id="resume"' in page and "No data: the annotation queue has no pending item" in page
            thread = re.search(r'name="thread" value="([^"]+)"', page).group(1)
            done = client.post("/maintenance/resume", data={"csrf": _csrf(page), "thread": thread})
            assert (
                done.status_code == 200
                and f"Maintenance run {paused['run_id'][:12]} completed at" in _text(done.text)
            )
            assert store.runs.get(paused["run_id"])["steps"]["annotate"]["labeled"] == 2
            assert "paused for labels" not in client.get("/maintenance").text
            again = client.post("/maintenance/resume", data={"csrf": _csrf(page), "thread": thread})
            assert again.status_code == 404


def test_a_label_that_is_not_an_option_is_refused(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shop.db'}"
    capture(url)
    with closing(Store.from_url(url)) as store:
        paused_run(store, str(tmp_path / "c.db"), maintenance_config(tmp_path))
        with TestClient(create_app(store)) as client:
            page = client.get("/annotate").text
            item = re.search(r'data-item="([^"]+)"', page).group(1)
            bad = client.post(f"/annotate/{item}", data={"csrf": _csrf(page), "choice": "cookbooks"})
            assert bad.status_code == 400 and store.queue.items("labeled") == []
            skip = client.post(f"/annotate/{item}", data={"csrf": _csrf(page), "choice": "skip"})
            assert skip.status_code == 200 and len(store.queue.items("skipped")) == 1


def test_the_overview_serves_kept_sections_and_reads_them_again_when_traffic_lands(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shop.db'}"
    capture(url)
    with closing(Store.from_url(url)) as store:
        overview = Overview(store, min_interval=0.0)
        first = overview.sections(View())
        assert overview.sections(View()) is first  # nothing new: the kept sections, not read again
        capture(url, QUESTIONS[:2])
        assert overview.sections(View()) is first  # served at once; the read runs in the background
        deadline = time.monotonic() + 30
        while (latest := overview.sections(View())) is first and time.monotonic() < deadline:
            time.sleep(0.05)
        assert latest.fingerprint[0] == 8 and '<td class="num">8</td>' in latest.sections["latency"]


def test_a_views_first_request_bounded_in_time_shows_the_figures_are_being_read(
    shop: tuple[Store, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    from cl_plugin.web import overview as module

    slow, release = module.Overview._build, threading.Event()

    def held(self: Overview, view: View) -> object:
        release.wait(30)
        return slow(self, view)

    monkeypatch.setattr(module.Overview, "_build", held)
    with TestClient(create_app(shop[0], first_read=0.1)) as client:
        page = client.get("/").text
        assert 'id="reading"' in page and re.search(r'id="interaction-count">6<', page)
        assert 'data-version=""' in page
        assert client.get("/api/overview?have=").json() == {"count": 6, "version": "", "built_at": None}
        release.set()
        deadline = time.monotonic() + 30
        while (
            "html" not in (live := client.get("/api/overview?have=").json()) and time.monotonic() < deadline
        ):
            time.sleep(0.05)
        assert "<h2>Failure patterns</h2>" in live["html"] and live["version"]


def test_the_dashboard_serves_the_feedback_endpoint_outside_its_own_checks(
    shop: tuple[Store, list[str]],
) -> None:
    from cl_plugin.privacy.tokens import mint_feedback_token

    store, ids = shop
    # On a loopback bind with no access token, a post naming its interaction is stored, with no CSRF token.
    with TestClient(create_app(store)) as client:
        response = client.post("/api/feedback", json={"interaction_id": ids[0], "score": 5})
        assert response.status_code == 201, response.text
    assert [f["score"] for f in store.feedback.history(ids[0])][-1] == 5
    # Behind an access token, a front end posts with the interaction's feedback token and no access token;
    # without one it is refused, and so is the dashboard itself.
    with TestClient(create_app(store, token="t0ken")) as client:
        assert client.get("/").status_code == 401
        refused = client.post("/api/feedback", json={"interaction_id": ids[1], "score": 1})
        assert refused.status_code == 401 and refused.json()["field"]
        token = mint_feedback_token(None, ids[1])
        accepted = client.post(
            "/api/feedback",
            json={"interaction_id": ids[1], "score": 1},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert accepted.status_code == 201, accepted.text
    assert [f["score"] for f in store.feedback.history(ids[1])] == [1]


def test_an_interaction_shows_its_feedback_attachments_as_stored(
    shop: tuple[Store, list[str]], client: TestClient
) -> None:
    import io

    from PIL import Image

    from cl_plugin.records import Attachment

    store, ids = shop
    key = "sk-" + "Z9x8Y7w6V5u4T3s2R1q0" * 2
    picture = io.BytesIO()
    Image.new("RGB", (24, 16), (200, 30, 30)).save(picture, format="PNG")
    store.feedback.record(
        ids[0],
        comment="the snippet that works",
        attachments=[
            Attachment(kind="code", content=f"client = Client(api_key='{key}')\n", language="python"),
            Attachment(kind="image", content=picture.getvalue(), filename="screen.png"),
        ],
    )
    page = client.get(f"/interactions/{ids[0]}").text
    [section] = re.findall(r'<section id="attachments">.*?</section>', page, re.S)
    assert "client = Client(api_key=" in html.unescape(section) and "[API_KEY]" in section
    assert key not in page
    [src] = re.findall(r'<img src="(/attachments/[0-9a-f]{64})"', section)
    served = client.get(src)
    assert served.status_code == 200 and served.headers["content-type"] == "image/png"
    assert served.content == store.attachments.get(src.rsplit("/", 1)[1])["content"]
    with Image.open(io.BytesIO(served.content)) as image:
        assert image.size == (24, 16)
    assert client.get("/attachments/" + "0" * 64).status_code == 404
    assert client.get("/attachments/not-a-digest").status_code == 404
