"""The HTML report: every section, numbers equal to the store's metrics, no PII, empty stores, and what a
real browser renders."""

from __future__ import annotations

import html
import os
import random
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cl_plugin.graphs.failures import iter_planted_failures
from cl_plugin.graphs.mcts_agents import build_mcts_agent_graph
from cl_plugin.graphs.tasks import BEST_AGENT
from cl_plugin.graphs.traffic import OPS_DRIFT, production_queries, run_traffic

from cl_plugin import CaptureHandler, store_metrics
from cl_plugin.abtest import ABTestFramework
from cl_plugin.analysis import FailurePatternAnalyzer
from cl_plugin.drift import DriftDetector
from cl_plugin.errors import ConfigError, StoreSchemaError
from cl_plugin.learning.registry import ModelRegistry
from cl_plugin.learning.router import MetaRouter
from cl_plugin.privacy import Sanitizer, default_redactor
from cl_plugin.records import ProductionInteraction
from cl_plugin.report import MIN_LABELED, SECTIONS, build_report
from cl_plugin.report.html import number
from cl_plugin.store import Batch, Store
from cl_plugin.store.rows import row_from_interaction
from tests.conftest import IN_CI

CANARY = "report.canary.7731@example.org"
CARD = "4111 1111 1111 1111"
N_TRAFFIC, N_HISTORY, N_LABELED = 300, 1500, 60


def _history(store: Store, end: float) -> None:
    """Half a day of support traffic with planted failure themes, stored redacted as the writer would."""
    sanitize = Sanitizer(redact=default_redactor().redact)
    rows = iter_planted_failures(N_HISTORY, seed=2, start_time=end - N_HISTORY * 30)
    store.write(
        Batch({"interactions": [row_from_interaction(ProductionInteraction(**r), sanitize) for r, _ in rows]})
    )


@pytest.fixture(scope="module")
def rich(tmp_path_factory: pytest.TempPathFactory) -> tuple[Store, Path]:
    """A store with history, graph traffic that drifts, labels, model versions, a drift alarm and an A/B
    test; PII canaries sit in a query, a selection reason, a model's notes and an A/B test's name."""
    tmp = tmp_path_factory.mktemp("report")
    store = Store.from_url(f"sqlite:///{tmp / 'store.db'}").setup()
    _history(store, time.time())
    handler = CaptureHandler(store)
    graph = build_mcts_agent_graph().compile()
    traffic = run_traffic(graph, handler, N_TRAFFIC, seed=3, drift=OPS_DRIFT)
    graph.invoke({"query": f"Is MCTS a tree search? Mail {CANARY}, card {CARD}"}, {"callbacks": [handler]})
    handler.flush()
    tasks = {
        iid: q.task
        for iid, q in zip(
            traffic.interaction_ids, production_queries(N_TRAFFIC, seed=3, drift=OPS_DRIFT), strict=True
        )
    }
    store.queue.enqueue(
        {
            "interaction_id": iid,
            "priority": 1 - i / N_TRAFFIC,
            "strategy": "uncertainty",
            "selection_reason": f"router unsure; ask {CANARY}",
        }
        for i, iid in enumerate(traffic.interaction_ids[:100])
    )
    for item in store.queue.items()[:N_LABELED]:
        label = {"agent": BEST_AGENT[tasks[item["interaction_id"]].family]}
        store.queue.update(item["item_id"], status="labeled", label=label, annotator="ops")
    registry = ModelRegistry(store, tmp / "artifacts")
    router = MetaRouter().fit(["square root of 2", "order jobs B and C"], ["TRM", "HRM"])
    registry.register("router", router, metrics={"accuracy": 0.912}, notes=f"owner {CANARY}")
    registry.promote("router", 1, reason="first model")
    registry.register("router", router, metrics={"accuracy": 0.947}, parent=1)
    registry.set_alias("router", "candidate", 2, reason="retrained on ops wording")
    rng = random.Random(0)
    detector = DriftDetector({"window_size": 200}, store=store, name="router_confidence")
    detector.set_reference_distribution([{"confidence": rng.gauss(0, 1)} for _ in range(1000)])
    for i in range(800):
        detector.add_sample(
            {"confidence": rng.gauss(0.8 if i > 300 else 0, 1)}, timestamp=time.time() - 900 + i
        )
    with ABTestFramework({"traffic_split": 0.5, "min_samples": 100}, store=store) as ab:
        test_id = ab.create_test(f"router v2 ({CANARY})", model_a="production", model_b="candidate")
        for i in range(600):
            group = ab.assign_group(test_id, f"user-{i}")
            ab.record_result(test_id, group, metric=float(rng.random() < (0.7 if group == "B" else 0.6)))
    path = build_report(store, tmp / "out" / "report.html")
    handler.close()
    return store, path


def _section(page: str, key: str) -> str:
    start = page.index(f'<section id="{key}">')
    return page[start : page.index("</section>", start)]


def _tile(page: str, key: str) -> str:
    found = re.search(rf'data-metric="{key}">.*?<div class="value">(.*?)</div>', page)
    assert found, key
    return html.unescape(found.group(1))


def test_the_report_has_every_section_and_needs_no_network(rich: tuple[Store, Path]) -> None:
    page = rich[1].read_text()
    for key, heading in SECTIONS.items():
        assert f'<section id="{key}"><h2>{html.escape(heading)}</h2>' in page
        assert "No data" not in _section(page, key), key
    assert page.count("<svg") == 5  # quality, latency, agent mix, calibration, A/B
    assert not re.search(r"<script|<link|<img|<iframe|src=|url\((?!#)", page)
    assert "sqlite:///" in page and "Generated" in page


def test_the_summary_leads_with_the_outcome_failure_rate_and_labels_diagnostics(
    rich: tuple[Store, Path],
) -> None:
    store, path = rich
    page, m = path.read_text(), store_metrics(store)
    outcome = m["failures"].outcome
    # the example graph's runs carry their error flag, so the rows' and the database's estimates agree
    assert _tile(page, "failure_rate") == number(outcome.rate, 2, percent=True) != "n/a"
    assert _tile(page, "failures") == number(outcome.failures)
    summary = _section(page, "summary")
    outcomes, diagnostics = (
        summary.index("outcome: the answer failed"),
        summary.index("diagnostic: not a failure"),
    )
    assert (
        outcomes
        < summary.index("<td>low rating</td>")
        < diagnostics
        < summary.index("<td>poor retrieval</td>")
    )
    assert "<td>correction</td>" in summary and "<td>low confidence</td>" in summary
    assert "Failure rate (outcomes)" in summary and html.escape(outcome.describe()) in summary
    failures = _section(page, "failures")
    assert "show an outcome failure" in failures and "Diagnostics: what goes with the failures" in failures


def test_the_summary_figures_are_the_store_metrics(rich: tuple[Store, Path]) -> None:
    store, path = rich
    page, m = path.read_text(), store_metrics(store)
    assert _tile(page, "interactions") == f"{N_HISTORY + N_TRAFFIC + 1:,}" == number(m["interactions"])
    assert _tile(page, "mean_score") == number(m["satisfaction"].mean_score)
    assert _tile(page, "thumbs_up_rate") == number(m["satisfaction"].thumbs_up_rate, 2, percent=True)
    assert _tile(page, "latency_p95") == f"{number(m['latency'].p95_ms, 0)} ms"
    summary = _section(page, "summary")
    for signal in ("low_rating", "error", "poor_retrieval", "slow"):
        rate = getattr(m["failures"], signal)
        cells = (
            f'<td>{signal.replace("_", " ")}</td><td class="num">{number(rate.rate, 2, percent=True)}</td>'
        )
        assert cells + f'<td class="num">{number(rate.count)}</td>' in summary


def test_the_failure_table_lists_the_patterns_the_analyzer_finds(rich: tuple[Store, Path]) -> None:
    store, path = rich
    section = _section(path.read_text(), "failures")
    patterns = FailurePatternAnalyzer().analyze_stream(store.iter_interactions()).patterns
    assert len(patterns) >= 3
    redact = default_redactor().safe_redact
    for p in patterns:
        assert html.escape(redact(p.description)) in section
        assert html.escape(redact(p.suggested_fix)) in section
        example = store.get_interaction(p.example_ids[0])["user_query"]
        assert html.escape(redact(example)) in section


def test_labels_models_drift_and_ab_tests_are_listed(rich: tuple[Store, Path]) -> None:
    store, path = rich
    page = path.read_text()
    assert f"{N_LABELED} labeled, {100 - N_LABELED} pending" in _section(page, "queue")
    assert f"{N_LABELED} labeled route decisions" in _section(page, "calibration")
    models = _section(page, "models")
    assert "<td>v2</td><td>candidate</td><td>accuracy 0.947</td>" in models
    assert "<td>v1</td><td>production</td><td>accuracy 0.912</td>" in models
    assert "retrained on ops wording" in models
    [event] = store.drift.events()
    assert f"<td>{event['detector']}</td><td>{event['method']}</td>" in _section(page, "drift")
    [test] = store.ab.list()
    with ABTestFramework(store=store) as ab:
        status = ab.get_test_status(test["test_id"])
    tests = _section(page, "abtests")
    assert html.escape(status["recommendation"]) in tests and html.escape(status["reason"]) in tests
    assert f"<td>{number(status['effect'], 3)}</td>" in tests.replace(' class="num"', "")


def test_no_pii_reaches_the_report(rich: tuple[Store, Path]) -> None:
    page = rich[1].read_text()
    assert CANARY not in page and CARD not in page
    assert not re.search(r"[\w.+-]+@example\.(com|org)", page)
    assert "[EMAIL]" in page


def test_an_empty_store_says_no_data_in_every_section(tmp_path: Path) -> None:
    path = build_report(Store.from_url("sqlite://").setup(), tmp_path / "empty.html")
    page = path.read_text()
    for key in SECTIONS:
        assert '<p class="empty">No data' in _section(page, key), key
    assert "<svg" not in page
    assert "not enough labeled data" in _section(page, "calibration")


def test_unlabeled_traffic_is_not_enough_for_a_reliability_diagram(tmp_path: Path) -> None:
    store = Store.from_url("sqlite://").setup()
    _history(store, time.time())
    page = build_report(store, tmp_path / "r.html").read_text()
    assert (
        f"0 route decisions with probabilities have a known right agent (metadata best_agent or a labeled "
        f"annotation), {MIN_LABELED} needed" in page
    )
    assert "No data" not in _section(page, "failures") + _section(page, "quality")


def test_a_window_covers_only_its_interactions(tmp_path: Path) -> None:
    store = Store.from_url("sqlite://").setup()
    end = time.time()
    _history(store, end)
    page = build_report(store, tmp_path / "r.html", window="hour", end_time=end).read_text()
    expected = store.count_interactions(start_time=end - 3600, end_time=end)
    assert 0 < expected < N_HISTORY
    assert _tile(page, "interactions") == number(expected)


def test_a_store_url_is_opened_for_the_report(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    Store.from_url(url).setup().close()
    path = build_report(url, tmp_path / "r.html")
    assert "No data" in path.read_text()


def test_a_report_on_a_database_nobody_set_up_says_how_to_set_it_up_and_changes_nothing(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    with pytest.raises(StoreSchemaError, match=r"cl-plugin migrate .*setup\(\)"):
        build_report(url, tmp_path / "r.html")
    assert Store.from_url(url).schema_version() is None  # a report only reads: nothing was migrated
    assert not (tmp_path / "r.html").exists()


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [({"window": "month"}, "window"), ({"bucket": -5}, "bucket"), ({"max_rows": 0}, "max_rows")],
)
def test_bad_arguments_name_the_key(tmp_path: Path, kwargs: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=key) as err:
        build_report(Store.from_url("sqlite://").setup(), tmp_path / "r.html", **kwargs)
    assert err.value.key == key


@pytest.mark.slow
def test_importing_the_report_does_not_load_matplotlib() -> None:
    code = "import sys, cl_plugin, cl_plugin.report; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# -- in a real browser ------------------------------------------------------------------------------------


def _chromium() -> str:
    """The headless browser, or a skip (a failure in CI) when it is not installed."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    reason = "Chromium is not installed (Debian: apt-get install -y chromium)"
    if IN_CI:
        pytest.fail(f"CI needs the browser: {reason}")
    pytest.skip(reason)


def _browse(path: Path, *args: str) -> str:
    cmd = [
        _chromium(),
        "--headless",
        "--disable-gpu",
        "--no-sandbox",
        f"--user-data-dir={path.parent / 'profile'}",
        *args,
        path.as_uri(),
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180, check=True).stdout


@pytest.mark.slow
def test_chromium_renders_a_full_page_that_is_not_blank(rich: tuple[Store, Path]) -> None:
    from PIL import Image  # a dependency of matplotlib

    path = rich[1]
    shot = path.parent / "report.png"
    _browse(path, f"--screenshot={shot}", "--window-size=1280,4000", "--hide-scrollbars")
    with Image.open(shot) as image:
        image.verify()
    with Image.open(shot) as image:
        assert image.size == (1280, 4000)
        pixels = image.convert("L").resize((128, 400)).tobytes()
    colours, dark = len(set(pixels)), sum(v < 128 for v in pixels) / len(pixels)
    assert colours > 50 and 0.02 < dark < 0.5  # text, plots and the header, on a white page


@pytest.mark.slow
def test_chromium_sees_every_section_heading(rich: tuple[Store, Path]) -> None:
    dom = _browse(rich[1], "--dump-dom")
    for key, heading in SECTIONS.items():
        assert re.search(rf'<section id="{key}"><h2>{re.escape(html.escape(heading))}</h2>', dom), key
    assert dom.count("<svg") == 5
    assert os.path.getsize(rich[1]) < 1_000_000


# -- decision points --------------------------------------------------------------------------------------

HOSTILE = '<img src=x onerror="alert(1)">'


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> tuple[Store, Path]:
    """A user's own graph (tests/test_point_metrics.py) with ratings, labels and router versions, and one
    decision whose option is markup."""
    from cl_plugin import PointRef, record_decision
    from tests.test_point_metrics import capture, script

    tmp = tmp_path_factory.mktemp("shop")
    store = Store.from_url(f"sqlite:///{tmp / 'shop.db'}").setup()
    with CaptureHandler(store) as handler:
        capture(handler, script())
        from langgraph.graph import END, START, StateGraph

        def odd(state: dict) -> dict:
            record_decision("route", HOSTILE)
            return {}

        g = StateGraph(dict)
        g.add_node("odd", odd)
        g.add_edge(START, "odd")
        g.add_edge("odd", END)
        g.compile(name="shop").invoke({}, {"callbacks": [handler]})
        assert handler.flush()
    registry = ModelRegistry(store, tmp / "artifacts")
    name = PointRef("shop", "pick", "route").model_name
    registry.register(name, MetaRouter().fit(["a novel", "a teddy bear"], ["books", "toys"]))
    registry.promote(name, 1)
    return store, build_report(store, tmp / "report.html")


def test_the_decision_points_section_has_a_row_per_point_with_its_figures(shop: tuple[Store, Path]) -> None:
    from cl_plugin import point_metrics

    store, path = shop
    section = _section(path.read_text(), "points").replace(' class="num"', "")
    rows = section.split("<tr>")[2:]
    found = point_metrics(store, ModelRegistry(store, path.parent / "artifacts"))
    assert len(rows) == len(found) == 3
    route = next(m for m in found if m.key == ("shop", "pick", "route"))
    [row] = [r for r in rows if r.startswith("<td>shop / pick / route</td>")]
    assert (
        f"<td>{number(route.point.decisions)}</td><td>{number(route.point.interactions)}</td>"
        f"<td>{number(route.rated.rate, 2, percent=True)}</td><td>{number(route.annotated.rate, 2, percent=True)}</td>"
        f"<td>{number(route.accuracy.rate, 2, percent=True)} of {route.accuracy.n}</td>"
        f"<td>{number(route.calibration.ece, 3)} ({route.calibration.n})</td>"
    ) in row
    served = ", ".join(
        f"{how} {number(route.served[how].rate, 2, percent=True)}"
        for how in ("model", "fallback", "exploration")
    )
    assert f"<td>{served}</td>" in row and "gifts (declared)" in row
    assert row.endswith("<td>v1</td><td>-</td></tr>")
    assert "<td>n/a</td><td>n/a</td><td>n/a</td>" in next(r for r in rows if "/ tone</td>" in r)


def test_every_value_of_the_decision_points_section_is_escaped(shop: tuple[Store, Path]) -> None:
    section = _section(shop[1].read_text(), "points")
    assert "<img" not in section and html.escape(HOSTILE) in section


@pytest.mark.slow
def test_chromium_shows_a_markup_option_as_text(shop: tuple[Store, Path]) -> None:
    dom = _browse(shop[1], "--dump-dom")
    section = _section(dom, "points")
    assert "<img" not in section and "&lt;img src=x" in section
