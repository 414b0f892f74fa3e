"""The cl-plugin command: every subcommand on a real store."""

from __future__ import annotations

import io
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from langsmith import utils as ls_utils

from cl_plugin import cli
from cl_plugin.cli import main
from cl_plugin.store import Store
from tests.conftest import SCHEMA_HEAD
from tests.langsmith_server import LangSmithServer

ROOT = Path(__file__).resolve().parents[1]


# Runs the demo in a process where only the runtime dependencies (``pip install -e .``, no extras) can be
# imported: every module of an installed distribution outside cl-plugin's runtime closure is refused.
RUNTIME_ONLY = r"""
import importlib.abc, importlib.metadata as md, sys
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

closure, todo = set(), ["cl-plugin"]
while todo:
    name = canonicalize_name(todo.pop())
    if name in closure:
        continue
    closure.add(name)
    for line in md.requires(name) or []:
        req = Requirement(line)
        if req.marker is None or req.marker.evaluate({"extra": ""}):
            todo.append(req.name)
blocked = {
    mod
    for mod, dists in md.packages_distributions().items()
    if not any(canonicalize_name(d) in closure for d in dists)
}

class RuntimeOnly(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        if fullname.split(".")[0] in blocked:
            raise ImportError(f"{fullname} is not a runtime dependency of cl-plugin")
        return None

sys.meta_path.insert(0, RuntimeOnly())
from cl_plugin.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_demo_runs_the_whole_loop_into_sqlite_with_the_runtime_dependencies_only(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", RUNTIME_ONLY, "demo", "--interactions", "300", "--storage", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    for phase in (
        "before the drift",
        "after the drift",
        "A/B test: production",
        "A/B test: candidate",
        "after the loop",
    ):
        assert phase in out
    assert "maintenance cycle 1: completed" in out and "maintenance cycle 2: completed" in out
    assert "HTML report:" in out and (tmp_path / "report.html").stat().st_size > 10_000
    with sqlite3.connect(tmp_path / "interactions.db") as conn:
        interactions = conn.execute("SELECT count(*) FROM interactions").fetchone()[0]
        runs = conn.execute("SELECT status FROM maintenance_runs").fetchall()
        tests = conn.execute("SELECT count(*) FROM ab_tests").fetchone()[0]
        versions = conn.execute("SELECT count(*) FROM model_versions WHERE model_name = 'router'").fetchone()[
            0
        ]
    assert interactions == 150 + 150 + 600 + 150 and runs == [("completed",), ("completed",)]
    assert tests >= 1 and versions >= 2
    # The report's headline failure rate reads like the printed table: within a few points of the share
    # of wrong answers, and its top pattern is an outcome, not a diagnostic.
    queries = wrong = 0.0
    for line in out.splitlines():
        cells = line.split()
        if len(cells) >= 6 and cells[-5].isdigit() and cells[-3].endswith("%"):
            queries += int(cells[-5])
            wrong += int(cells[-5]) * (1 - float(cells[-3][:-1]) / 100)
    assert queries == interactions
    page = (tmp_path / "report.html").read_text()
    headline = re.search(r'data-metric="failure_rate">.*?<div class="value">([\d.]+)%</div>', page)
    assert headline and abs(float(headline.group(1)) / 100 - wrong / queries) <= 0.04, (
        headline,
        wrong / queries,
    )
    failures = page[page.index('<section id="failures">') :]
    first = re.search(r"<tbody><tr><td>([^<]*)</td>", failures)
    assert first and "diagnostic" not in first.group(1) and "retrieval" not in first.group(1)


@pytest.fixture(scope="module")
def captured_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory whose ``cli.db`` holds 200 captured interactions of the example graph, with feedback;
    built once, only ever copied."""
    from cl_plugin.graphs.mcts_agents import build_mcts_agent_graph
    from cl_plugin.graphs.traffic import OPS_DRIFT, run_traffic

    from cl_plugin import CaptureHandler

    root = tmp_path_factory.mktemp("cli-captured")
    handler = CaptureHandler(f"sqlite:///{root / 'cli.db'}")
    run_traffic(build_mcts_agent_graph().compile(), handler, 200, seed=4, drift=OPS_DRIFT)
    handler.close()
    return root


@pytest.fixture
def captured(captured_template: Path, tmp_path: Path) -> str:
    """A private copy of the captured store (the tests run maintenance on it, purge it, ...)."""
    shutil.copytree(captured_template, tmp_path, dirs_exist_ok=True)
    return f"sqlite:///{tmp_path / 'cli.db'}"


def test_maintain_runs_a_cycle_and_prints_each_step(
    captured: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    args = ["maintain", "--store", captured, "--model-dir", str(tmp_path / "models")]
    assert main(args) == 0  # the defaults want 100 labels per decision point: 200 interactions give fewer
    out = capsys.readouterr().out
    assert (
        ": skipped (retraining skipped: " in out
        and "usable labeled samples" in out
        and "min_new_samples is 100" in out
    )
    config = tmp_path / "config.yaml"
    config.write_text(
        "continual_learning:\n  retraining:\n    min_new_samples: 20\n  maintenance:\n    min_interactions: 1\n"
    )
    assert main([*args, "--config", str(config)]) == 0  # a skipped run does not move the window
    out = capsys.readouterr().out
    assert ": completed" in out and "200 interactions" in out
    for step in ("validate", "drift_check", "analyze_failures", "select", "annotate", "retrain", "evaluate"):
        assert f"  {step}" in out


def test_a_paused_run_is_labeled_in_the_terminal_and_resumed(
    captured: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    checkpoints = str(tmp_path / "checkpoints.db")
    config = tmp_path / "config.yaml"
    config.write_text("continual_learning:\n  retraining:\n    min_new_samples: 20\n")
    base = ["--store", captured, "--model-dir", str(tmp_path / "models"), "--checkpoints", checkpoints]
    base += ["--config", str(config)]
    assert main(["maintain", *base, "--annotation", "human"]) == 0
    out = capsys.readouterr().out
    assert "is paused for labels" in out
    thread = out.split("--thread ")[1].split()[0]
    answers = io.StringIO("2\nHRM\nbanana\n3\ns\nq\n")  # the route point's options, as the menu shows
    args = cli.build_parser().parse_args(["annotate", "--store", captured, "--annotator", "ana"])
    assert cli._annotate(args, stdin=answers) == 0
    out = capsys.readouterr().out
    # the router's own decision (the agent) stands for the edge's route; "parallel" is a named alternative
    menu = "1 = HRM, 2 = TRM, 3 = MCTS, 4 = parallel"
    assert f"options at LangGraph/route_decision/route: {menu}" in out
    assert "answer 1 to 4, an option's name, s or q" in out and "labeled 3, skipped 1" in out
    store = Store.from_url(captured)
    labeled = store.queue.items("labeled")
    assert [i["label"]["option"] for i in labeled] == ["TRM", "HRM", "MCTS"] and {
        i["annotator"] for i in labeled
    } == {"ana"}
    assert main(["maintain", *base, "--annotation", "human", "--thread", thread, "--resume"]) == 0
    out = capsys.readouterr().out
    assert "3 labeled from human, 47 left" in out and ": completed" in out


def test_stats_report_export_and_purge(captured: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["stats", "--store", captured, "--window", "week"]) == 0
    stats = capsys.readouterr().out
    assert "interactions                 200" in stats and "CalibrationBin" not in stats
    outcomes = stats.index("outcomes (the answer failed):")
    assert outcomes < stats.index("estimated failure rate") < stats.index("diagnostics (may explain failures")
    points = stats[stats.index("decision points:") :].splitlines()
    [route] = [line for line in points if "/ route_decision / route " in line]
    assert route.split()[6] == "200" and points[points.index(route) + 1].startswith("      options: HRM 98")
    report = tmp_path / "r.html"
    assert main(["report", "--store", captured, "--out", str(report)]) == 0
    assert report.read_text().startswith("<!DOCTYPE html>")
    out = tmp_path / "x.jsonl"
    assert main(["export", "--store", captured, "--out", str(out)]) == 0
    lines = out.read_bytes().splitlines()
    assert len(lines) == 200 and {"interaction_id", "user_query"} <= set(orjson.loads(lines[0]))
    assert main(["purge", "--store", captured, "--older-than-days", "30"]) == 0
    assert "0 from interactions" in capsys.readouterr().out
    store = Store.from_url(captured)
    old = store.query_interactions(limit=1)[0]
    assert (
        store.retention.purge(time.time() + 1)["interactions"] == 200 and old
    )  # purge removes what is older


def test_stats_shows_outcomes_apart_from_the_diagnostics_that_may_explain_them(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """Right answers, rated well, all retrieved poorly: no answer failed, and every run shows the diagnostic."""
    from cl_plugin.privacy import Sanitizer
    from cl_plugin.records import ProductionInteraction
    from cl_plugin.store import Batch
    from cl_plugin.store.rows import row_from_interaction

    url = f"sqlite:///{tmp_path / 'good.db'}"
    now = time.time()
    items = [
        ProductionInteraction(
            interaction_id=f"i{i}",
            timestamp=now - 60 - i,
            session_id="s",
            user_query="what is 2 + 2?",
            user_feedback_score=5.0,
            thumbs_up_down="up",
            retrieval_quality=0.1,
            latency_ms=200.0,
            agent_confidence=0.9,
            error_occurred=False,
            hallucination_detected=False,
        )
        for i in range(20)
    ]
    Store.from_url(url).setup().write(
        Batch({"interactions": [row_from_interaction(i, Sanitizer()) for i in items]})
    )
    assert main(["stats", "--store", url]) == 0
    out = capsys.readouterr().out
    start = out.index("outcomes (the answer failed):\n")
    middle = out.index("diagnostics (may explain failures; not failures):\n")
    outcome, diagnostic = out[start:middle].splitlines()[1:], out[middle:].splitlines()[1:4]
    assert outcome[0].split()[:4] == ["estimated", "failure", "rate", "0.0%"]
    assert "0 bad of 20 rated" in outcome[0] and "lower bound" not in outcome[0]
    assert outcome[1].split() == ["any", "outcome", "failure", "0", "of", "20"]
    rows = {line[:28].strip(): line[28:].split() for line in outcome[2:7] + diagnostic}
    assert list(rows) == [
        "low rating", "thumbs down", "correction", "error", "hallucination",
        "poor retrieval", "slow", "low confidence",
    ]  # fmt: skip
    assert rows["low rating"] == ["0.0%", "0", "of", "20", "observable"]
    assert rows["correction"] == ["0.0%", "0", "of", "20", "observable"]
    assert rows["poor retrieval"] == ["100.0%", "20", "of", "20", "observable"]
    assert rows["slow"][0] == rows["low confidence"][0] == "0.0%"


@pytest.mark.parametrize("command", ["stats", "report", "export"])
def test_a_command_that_only_reads_a_database_nobody_set_up_says_how_and_migrates_nothing(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    extra = ["--out", str(tmp_path / "out")] if command != "stats" else []
    assert main([command, "--store", url, *extra]) == 2
    err = capsys.readouterr().err
    assert f"cl-plugin {command}: " in err and "no cl_plugin tables yet" in err
    assert f"cl-plugin migrate --store '{url}'" in err
    assert Store.from_url(url).schema_version() is None


def test_migrate_sets_up_a_database_once_and_then_says_it_is_current(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    url = f"sqlite:///{tmp_path / 'new.db'}"
    assert main(["migrate", "--store", url]) == 0
    assert f"migrated {url} from schema version (empty) to {SCHEMA_HEAD}" in capsys.readouterr().out
    assert main(["migrate", "--store", url]) == 0
    assert f"is at schema version {SCHEMA_HEAD} already" in capsys.readouterr().out
    assert main(["stats", "--store", url]) == 0


def test_a_missing_store_says_how_to_give_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(cli.STORE_ENV, raising=False)
    with pytest.raises(SystemExit, match="pass --store URL or set CL_PLUGIN_STORE"):
        main(["stats"])


def test_unknown_subcommand_exits_with_usage(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["nope"])
    assert exc.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


@pytest.fixture
def local_langsmith(monkeypatch: pytest.MonkeyPatch) -> Iterator[LangSmithServer]:
    """The local LangSmith look-alike as the environment's endpoint, with tracing off: the command builds its
    client from the environment, and must never reach a real or dead endpoint."""
    for name in ("TRACING", "TRACING_V2", "ENDPOINT", "API_KEY", "PROJECT", "RUNS_ENDPOINTS"):
        for prefix in ("LANGSMITH_", "LANGCHAIN_"):
            monkeypatch.delenv(prefix + name, raising=False)
    with LangSmithServer() as server:
        monkeypatch.setenv("LANGSMITH_ENDPOINT", server.url)
        monkeypatch.setenv("LANGSMITH_API_KEY", "fake")
        monkeypatch.setenv("LANGSMITH_TRACING", "false")
        ls_utils.get_env_var.cache_clear()  # the client caches what it read
        try:
            yield server
            # the client's batching thread asks for /info once; let it finish before the server stops
            server.wait_for(lambda: bool(server.requests_to("GET", "/info")))
        finally:
            ls_utils.get_env_var.cache_clear()


def test_export_to_langsmith_creates_the_dataset_and_its_examples_without_pii(
    tmp_path: Path, local_langsmith: LangSmithServer, capsys: pytest.CaptureFixture
) -> None:
    from cl_plugin.privacy import Sanitizer
    from cl_plugin.records import ProductionInteraction
    from cl_plugin.store import Batch
    from cl_plugin.store.rows import row_from_interaction

    email, card = "jane.doe@example.com", "4111 1111 1111 1111"
    url = f"sqlite:///{tmp_path / 'export.db'}"
    store = Store.from_url(url).setup()
    batch = Batch()
    for i in range(3):
        item = ProductionInteraction(
            interaction_id=f"i-{i}",
            timestamp=1_700_000_000.0 + i,
            session_id="s-1",
            user_query=f"question {i} from {email}",
            response=f"answer {i}, card {card}",
            agent_selected="HRM",
            corrections=[f"fixed answer, mail {email}"] if i == 2 else [],
        )
        # stored without redaction, so what keeps the PII out is the command's own redaction
        batch.add("interactions", row_from_interaction(item, Sanitizer()))
    store.write(batch)
    store.close()
    args = ["export", "--store", url, "--format", "langsmith", "--dataset", "cli-regressions"]

    assert main(args) == 0
    first = capsys.readouterr().out
    assert main(args) == 0  # a second export finds every example
    second = capsys.readouterr().out

    server = local_langsmith
    assert "exported to LangSmith dataset 'cli-regressions'" in first and "created=3, skipped=0" in first
    assert "created=0, skipped=3" in second
    [dataset] = server.datasets.values()
    assert dataset["name"] == "cli-regressions"
    examples = {e["metadata"]["interaction_id"]: e for e in server.examples.values()}
    assert sorted(examples) == ["i-0", "i-1", "i-2"]
    assert all(e["dataset_id"] == dataset["id"] for e in examples.values())
    assert examples["i-0"]["inputs"] == {"query": "question 0 from [EMAIL]"}
    assert examples["i-0"]["outputs"] == {"response": "answer 0, card [CREDIT_CARD]"}
    assert examples["i-2"]["outputs"] == {"response": "fixed answer, mail [EMAIL]"}
    body = server.all_bodies()
    assert (
        server.requests_to("POST", "/examples") and email.encode() not in body and card.encode() not in body
    )


@pytest.fixture
def shop(tmp_path: Path) -> str:
    """A store of a user's own graph (tests/test_point_metrics.py): 60 orders that decided at shop/pick."""
    from cl_plugin import CaptureHandler
    from tests.test_point_metrics import capture, script

    url = f"sqlite:///{tmp_path / 'shop.db'}"
    with CaptureHandler(url) as handler:
        capture(handler, script())
    return url


def test_stats_prints_each_decision_points_figures(shop: str, capsys: pytest.CaptureFixture) -> None:
    from cl_plugin import point_metrics

    assert main(["stats", "--store", shop]) == 0
    out = capsys.readouterr().out
    lines = out[out.index("decision points:") :].splitlines()
    assert lines[1].split()[-11:] == [
        "decisions", "interactions", "rated", "annotated", "accuracy", "ECE", "model", "fallback",
        "explored", "production", "candidate",
    ]  # fmt: skip
    route = next(m for m in point_metrics(Store.from_url(shop)) if m.key == ("shop", "pick", "route"))
    [row] = [line for line in lines if line.startswith("  shop / pick / route ")]
    pct = lambda r: f"{100 * r.rate:.1f}%"  # noqa: E731
    assert row.split()[5:] == [
        str(route.point.decisions), str(route.point.interactions), pct(route.rated), pct(route.annotated),
        pct(route.accuracy), "of", str(route.accuracy.n), f"{route.calibration.ece:.3f}",
        pct(route.served["model"]), pct(route.served["fallback"]), pct(route.served["exploration"]), "-", "-",
    ]  # fmt: skip
    options = lines[lines.index(row) + 1]
    assert options.startswith("      options: books ") and "gifts (declared, never chosen)" in options
    assert lines[lines.index(row) + 2].startswith("      fallback reasons: ")


def test_annotate_offers_the_points_options_and_labels_the_point(
    shop: str, capsys: pytest.CaptureFixture
) -> None:
    store = Store.from_url(shop)
    answers = io.StringIO("2\nbooks\ngifts\ncake\n1\ns\nq\n")
    args = cli.build_parser().parse_args(
        ["annotate", "--store", shop, "--annotator", "ana", "--point", "shop/pick/route"]
    )
    assert cli._annotate(args, stdin=answers) == 0
    out = capsys.readouterr().out
    assert "options at shop/pick/route: 1 = books, 2 = toys, 3 = gifts" in out
    assert "  option? " in out and "answer 1 to 3, an option's name, s or q" in out
    assert "labeled 4, skipped 1" in out and " chose " in out
    labels = [i["label"] for i in store.queue.items("labeled") if i["annotator"] == "ana"]
    assert sorted(labels, key=str) == sorted(
        ({"option": o, "point": "shop.pick.route"} for o in ("toys", "books", "gifts", "books")), key=str
    )


def test_annotate_keeps_the_agent_menu_for_items_without_a_decision_point(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from cl_plugin.privacy import Sanitizer
    from cl_plugin.records import ProductionInteraction
    from cl_plugin.store import Batch
    from cl_plugin.store.rows import row_from_interaction

    url = f"sqlite:///{tmp_path / 'logged.db'}"
    store = Store.from_url(url).setup()
    rows = [
        row_from_interaction(
            ProductionInteraction(
                interaction_id=f"i-{i}", timestamp=1_700_000_000.0 + i, session_id="s", user_query=f"q {i}",
                response="a", agent_selected=("desk", "billing")[i % 2],
            ),
            Sanitizer(),
        )
        for i in range(2)
    ]  # fmt: skip
    store.write(Batch({"interactions": rows}))
    store.queue.enqueue(
        {"interaction_id": f"i-{i}", "priority": 1.0, "strategy": "uncertainty", "selection_reason": "-"}
        for i in range(2)
    )
    args = cli.build_parser().parse_args(["annotate", "--store", url])
    assert cli._annotate(args, stdin=io.StringIO("2\nbilling\n")) == 0
    out = capsys.readouterr().out
    assert "agents: 1 = billing, 2 = desk" in out and "  agent? " in out
    assert [i["label"] for i in store.queue.items("labeled")] == [
        {"agent": "desk"},
        {"agent": "billing"},
    ]
    args = cli.build_parser().parse_args(["annotate", "--store", url, "--point", "shop/pick"])
    assert cli._annotate(args, stdin=io.StringIO("")) == 0
    assert "no pending items with a decision at shop/pick/route" in capsys.readouterr().out
