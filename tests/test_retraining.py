"""IncrementalRetrainingPipeline: scheduling, every step's report, honest metrics, skips and failures."""

from __future__ import annotations

import datetime as dt
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cl_plugin.graphs.maintenance import register_starting_models
from cl_plugin.graphs.mcts_agents import starting_model_set
from cl_plugin.graphs.tasks import BEST_AGENT, sample_tasks
from sklearn.metrics import f1_score

from cl_plugin import IncrementalRetrainingPipeline
from cl_plugin.analysis.metrics import expected_calibration_error
from cl_plugin.errors import ConfigError
from cl_plugin.learning.labels import RoutingLabel
from cl_plugin.learning.modelset import ModelSet
from cl_plugin.learning.rag import RagIndex
from cl_plugin.learning.registry import ModelRegistry
from cl_plugin.learning.router import MetaRouter
from cl_plugin.learning.training_data import prepare_training_data
from cl_plugin.store import Store

AGENTS = ("HRM", "TRM", "MCTS")


def rows(
    n: int, *, seed: int, noise: float = 0.0, phrasing: str = "classic", sessions: int = 60
) -> list[dict]:
    """Interaction rows whose metadata names the best agent; ``noise`` of them name a random one instead."""
    rng = random.Random(seed)
    out = []
    for i, task in enumerate(sample_tasks(n, seed=seed, phrasing=phrasing)):
        best = BEST_AGENT[task.family] if rng.random() >= noise else rng.choice(AGENTS)
        out.append(
            {
                "interaction_id": f"{seed}-{i}",
                "timestamp": 1_700_000_000.0 + i,
                "session_id": f"s{seed}-{rng.randrange(sessions)}",
                "user_query": task.query,
                "response": f"Answer: {task.answer}",
                "agent_selected": "HRM",
                "retrieval_quality": round(rng.random(), 3),
                "metadata": {"best_agent": best},
            }
        )
    return out


@pytest.fixture(scope="module")
def production(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example graph's starting model set, saved as ``v1``."""
    return starting_model_set().save(tmp_path_factory.mktemp("models") / "v1")


def pipeline(**kwargs: Any) -> IncrementalRetrainingPipeline:
    return IncrementalRetrainingPipeline({"min_new_samples": 20, **kwargs.pop("config", {})}, **kwargs)


# -- scheduling -------------------------------------------------------------------------------------------


def test_should_retrain_needs_both_the_schedule_and_enough_samples() -> None:
    now = 1_800_000_000.0
    weekly = IncrementalRetrainingPipeline({"schedule": "weekly", "min_new_samples": 100}, clock=lambda: now)
    day = 86_400.0
    assert weekly.should_retrain(None, 100) is True  # never retrained
    assert weekly.should_retrain(None, 99) is False
    assert weekly.should_retrain(now - 6 * day, 500) is False
    assert weekly.should_retrain(now - 7 * day, 100) is True
    assert weekly.should_retrain(dt.datetime.fromtimestamp(now - 8 * day, dt.UTC), 100) is True
    assert weekly.should_retrain(dt.datetime.fromtimestamp(now - 8 * day, dt.UTC).replace(tzinfo=None), 100)
    daily = IncrementalRetrainingPipeline({"schedule": "daily"}, clock=lambda: now)
    monthly = IncrementalRetrainingPipeline({"schedule": "monthly"}, clock=lambda: now)
    assert daily.should_retrain(now - 2 * day, 100) and not monthly.should_retrain(now - 29 * day, 100)
    assert monthly.next_retrain_time(now) == now + 30 * day


@pytest.mark.parametrize(
    ("args", "field"),
    [
        ((None, -1), "num_new_samples"),
        ((None, 2.5), "num_new_samples"),
        (("yesterday", 5), "last_retrain_time"),
    ],
)
def test_should_retrain_names_the_bad_argument(args: tuple, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        IncrementalRetrainingPipeline().should_retrain(*args)


def test_a_misspelt_key_or_router_parameter_is_refused_by_name() -> None:
    with pytest.raises(ConfigError, match="min_new_sample"):
        IncrementalRetrainingPipeline({"min_new_sample": 10})
    with pytest.raises(ConfigError, match="schedule"):
        IncrementalRetrainingPipeline({"schedule": "hourly"})
    with pytest.raises(TypeError, match="temperature"):
        IncrementalRetrainingPipeline(router_params={"temperature": 2.0})
    with pytest.raises(ValueError, match="replay_ratio"):
        IncrementalRetrainingPipeline(replay_ratio=-1)


# -- every step reports numbers it computed ----------------------------------------------------------------


def recompute(result: dict, data: list[dict], production: Path | None, split: float = 0.2) -> dict:
    """The held-out metrics of the saved candidate and of production, computed here independently."""
    prepared = prepare_training_data(data, validation_split=split, seed=0)
    held = prepared.validation
    contexts = [label.context for label in held]
    truth = np.array([label.agent for label in held])
    out = {}
    for name, path in (("candidate", Path(result["output_path"])), ("production", production)):
        if path is None:
            continue
        router = ModelSet.load(path).router
        proba = router.predict_proba([label.query for label in held], contexts=contexts)
        predicted = router.classes_[proba.argmax(axis=1)]
        out[name] = {
            "n": len(held),
            "accuracy": float(np.mean(predicted == truth)),
            "macro_f1": float(f1_score(truth, predicted, average="macro", zero_division=0)),
            "ece": expected_calibration_error(proba.max(axis=1), predicted == truth).ece,
        }
    return out


def test_reported_metrics_are_the_held_out_metrics_of_the_saved_models(
    tmp_path: Path, production: Path
) -> None:
    data = rows(400, seed=2, phrasing="ops")
    result = pipeline().retrain_sync(data, production, tmp_path / "v2")
    assert result["status"] == "completed", result
    expected = recompute(result, data, production)
    for name in ("candidate", "production"):
        for key, value in expected[name].items():
            assert result["metrics"][name][key] == pytest.approx(value), (name, key)
    # on the ops wording the stale router is measurably worse, and the gate says so
    assert expected["production"]["accuracy"] < expected["candidate"]["accuracy"] - 0.1
    gate = result["steps"]["evaluation"]["gate"]
    assert gate["passed"] and gate["accuracy_gain"] == pytest.approx(
        expected["candidate"]["accuracy"] - expected["production"]["accuracy"]
    )


def test_different_data_gives_different_correct_metrics(tmp_path: Path, production: Path) -> None:
    clean, noisy = rows(400, seed=3), rows(400, seed=3, noise=0.4)
    a = pipeline().retrain_sync(clean, production, tmp_path / "clean")
    b = pipeline().retrain_sync(noisy, production, tmp_path / "noisy")
    assert a["status"] == b["status"] == "completed"
    assert a["metrics"]["candidate"]["accuracy"] > b["metrics"]["candidate"]["accuracy"] + 0.15
    for result, data in ((a, clean), (b, noisy)):
        expected = recompute(result, data, production)["candidate"]
        assert result["metrics"]["candidate"]["accuracy"] == pytest.approx(expected["accuracy"])
        assert result["metrics"]["candidate"]["macro_f1"] == pytest.approx(expected["macro_f1"])


def test_data_preparation_counts_every_item(tmp_path: Path, production: Path) -> None:
    data: list[Any] = rows(200, seed=4)
    data += [dict(data[0], interaction_id="dup")]  # the same query again
    data += [{"interaction_id": "empty", "user_query": "  "}, {"interaction_id": "x"}, 42]
    data += [RoutingLabel("ready", "order jobs B and C if C needs B", "HRM", 1.0, "annotation")]
    result = pipeline().retrain_sync(data, production, tmp_path / "v2")
    report = result["steps"]["data_preparation"]
    assert report["received"] == 205
    assert report["rejected"] == {"missing_query": 2, "unsupported_item": 1}
    assert report["labels_by_source"] == {"direct": 1, "metadata": 201}
    assert report["duplicates_merged"] == 1
    assert report["labels"] == 201 == report["train_samples"] + report["validation_samples"]
    router_step = result["steps"]["router_update"]
    assert router_step["new_samples"] == report["train_samples"]
    assert router_step["replayed_samples"] == 60  # the whole seed set: fewer old labels than new ones


def test_too_few_samples_is_skipped_with_the_reason_and_writes_nothing(
    tmp_path: Path, production: Path
) -> None:
    result = IncrementalRetrainingPipeline({"min_new_samples": 100}).retrain_sync(
        rows(50, seed=5), production, tmp_path / "v2"
    )
    assert result["status"] == "skipped"
    usable = result["steps"]["data_preparation"]["labels"]
    assert 45 <= usable <= 50  # a repeated query counts once
    assert (
        result["reason"] == f"only {usable} usable labeled samples after preparation; min_new_samples is 100"
    )
    assert "router_update" not in result["steps"] and not (tmp_path / "v2").exists()


def test_a_single_session_cannot_be_evaluated_so_it_is_skipped(tmp_path: Path, production: Path) -> None:
    result = pipeline().retrain_sync(rows(100, seed=6, sessions=1), production, tmp_path / "v2")
    assert result["status"] == "skipped" and "no held-out session" in result["reason"]


def test_a_failure_is_reported_with_its_step_and_error(tmp_path: Path, production: Path) -> None:
    not_a_model = tmp_path / "notes"
    not_a_model.mkdir()
    result = pipeline().retrain_sync(rows(100, seed=7), not_a_model, tmp_path / "v2")
    assert result["status"] == "failed" and result["failed_step"] == "load_production"
    assert "is not a saved model set" in result["error"]
    bad = pipeline().retrain_sync("not a list", production, tmp_path / "v2")
    assert bad["status"] == "failed" and bad["failed_step"] == "data_preparation"
    assert "new_data must be an iterable" in bad["error"]


def test_a_tampered_production_model_fails_the_run_instead_of_loading(
    tmp_path: Path, production: Path
) -> None:
    import shutil

    copy = Path(shutil.copytree(production, tmp_path / "v1"))
    artifact = copy / "router.skops"
    data = bytearray(artifact.read_bytes())
    data[len(data) // 2] ^= 0xFF
    artifact.write_bytes(bytes(data))
    result = pipeline().retrain_sync(rows(100, seed=8), copy, tmp_path / "v2")
    assert result["status"] == "failed" and result["error"].startswith("ArtifactIntegrityError")


# -- retrieval ------------------------------------------------------------------------------------------


def test_corrections_become_documents_and_retrieval_is_judged_on_held_out_sessions(
    tmp_path: Path, production: Path
) -> None:
    data = rows(300, seed=9)
    # every refinement question was corrected by its user; each question is asked in two sessions
    twins = []
    for row in data:
        if "root" in row["user_query"] or "x^3" in row["user_query"]:
            row["corrections"] = [row["response"]]
            twins.append(
                dict(row, interaction_id=row["interaction_id"] + "-twin", session_id=row["session_id"] + "b")
            )
    result = pipeline().retrain_sync(data + twins, production, tmp_path / "v2")
    assert result["status"] == "completed", result
    rag_step = result["steps"]["rag_update"]
    assert rag_step["corrections_added"] > 0
    assert rag_step["documents_after"] == rag_step["documents_before"] + rag_step["corrections_added"]
    retrieval = result["metrics"]["retrieval"]
    assert retrieval["status"] == "completed" and retrieval["queries"] > 0
    # the production index states no refinement answer; the candidate finds the twin's correction
    assert retrieval["production"]["ndcg_at_3"] == 0.0
    assert retrieval["candidate"]["ndcg_at_3"] > 0.5
    saved = ModelSet.load(tmp_path / "v2").rag
    assert isinstance(saved, RagIndex) and len(saved.documents()) == rag_step["documents_after"]
    # held-out corrections stayed out of the candidate, so the evaluation is honest
    held = {c.interaction_id for c in prepare_training_data(data + twins, seed=0).corrections if c.validation}
    assert not {d["metadata"].get("interaction_id") for d in saved.documents()} & held


def test_no_pii_from_training_data_reaches_the_saved_models(tmp_path: Path, production: Path) -> None:
    data = rows(120, seed=10)
    for row in data[:40]:
        row["user_query"] += " Mail me at jane.doe@example.com or call 415-555-0132."
        row["corrections"] = ["Answer: 12 (card 4111 1111 1111 1111)"]
    result = pipeline().retrain_sync(data, production, tmp_path / "v2")
    assert result["status"] == "completed", result
    secrets = ("jane.doe@example.com", "415-555-0132", "4111 1111 1111 1111")
    blob = b"".join(p.read_bytes() for p in (tmp_path / "v2").iterdir())
    assert not [s for s in secrets if s.encode() in blob]
    saved = ModelSet.load(tmp_path / "v2")
    texts = [label.query for label in saved.replay.sample()] + [d["text"] for d in saved.rag.documents()]
    texts += [str(term) for term in saved.router.word_vectorizer_.get_feature_names_out()]
    assert not [t for t in texts if "jane" in t or "555" in t or "4111" in t or "example.com" in t]


# -- registry and A/B ------------------------------------------------------------------------------------


class RecordingABTests:
    """Stands in for an A/B framework: keeps the tests it is asked to create."""

    def __init__(self) -> None:
        self.created: list[dict[str, Any]] = []

    def create_test(self, name: str, model_a: Any, model_b: Any, metric_fn: Any = None) -> str:
        self.created.append({"name": name, "model_a": model_a, "model_b": model_b})
        return f"test-{len(self.created)}"


def test_with_a_registry_production_is_read_by_alias_and_the_candidate_registered(tmp_path: Path) -> None:
    registry = ModelRegistry(Store.from_url("sqlite://").setup(), tmp_path / "artifacts")
    register_starting_models(registry)
    tests = RecordingABTests()
    result = pipeline(registry=registry, ab_tests=tests).retrain_sync(
        rows(300, seed=11, phrasing="ops"), "models/production", tmp_path / "candidate"
    )
    assert result["status"] == "completed", result
    assert result["steps"]["load_production"]["source"] == "registry"
    versions = result["candidate"]["versions"]
    assert versions == {"replay": 2, "rag_index": 2, "router": 2}
    candidate = registry.get_alias("router", "candidate")
    assert candidate.version == 2 and candidate.parent == 1
    assert candidate.metrics["candidate"] == result["metrics"]["candidate"]
    assert registry.get_alias("router", "production").version == 1  # nothing was promoted
    assert tests.created == [{"name": "router: v1 vs v2", "model_a": "v1", "model_b": "v2"}]
    assert result["steps"]["ab_test"] == {
        "status": "created",
        "test_id": "test-1",
        "model_a": "v1",
        "model_b": "v2",
    }
    # the candidate set loads back whole, by alias or by version
    again = ModelSet.from_registry(
        registry,
        names={"router": "router", "rag_index": "rag_index", "replay": "router-replay"},
        alias="candidate",
    )
    assert (
        again.info["versions"] == versions
        and len(again.replay) == result["steps"]["router_update"]["replay_kept"]
    )


def test_a_candidate_that_fails_the_gate_gets_no_ab_test(tmp_path: Path, production: Path) -> None:
    tests = RecordingABTests()
    result = pipeline(ab_tests=tests, min_improvement=0.5).retrain_sync(
        rows(300, seed=12), production, tmp_path / "v2"
    )
    assert result["status"] == "completed"
    assert result["steps"]["evaluation"]["gate"]["passed"] is False
    assert (
        result["steps"]["ab_test"]["status"] == "skipped" and "gate" in result["steps"]["ab_test"]["reason"]
    )
    assert tests.created == []
    off = pipeline(config={"enable_ab_test": False}, ab_tests=tests).retrain_sync(
        rows(300, seed=12), production, tmp_path / "v3"
    )
    assert off["steps"]["ab_test"] == {"status": "skipped", "reason": "enable_ab_test is false"}


def test_the_replay_keeps_old_agents_in_training(tmp_path: Path, production: Path) -> None:
    # the new traffic is refinement only: without replay the router would know a single agent
    only_trm = [r for r in rows(400, seed=13) if r["metadata"]["best_agent"] == "TRM"]
    result = pipeline().retrain_sync(only_trm, production, tmp_path / "v2")
    assert result["status"] == "completed", result
    assert result["steps"]["router_update"]["classes"] == ["HRM", "MCTS", "TRM"]
    router: MetaRouter = ModelSet.load(tmp_path / "v2").router
    old = sample_tasks(200, seed=14)
    assert router.score([t.query for t in old], [BEST_AGENT[t.family] for t in old]) > 0.9
    no_replay = pipeline(replay_ratio=0.0).retrain_sync(only_trm, production, tmp_path / "v3")
    assert no_replay["status"] == "skipped" and "only ['TRM']" in no_replay["reason"]


def test_without_production_the_recorded_policy_is_the_incumbent(tmp_path: Path) -> None:
    # the graph's own rule picked the best agent most of the time
    rng = random.Random(21)
    data = rows(300, seed=21)
    for r in data:
        r["agent_selected"] = r["metadata"]["best_agent"] if rng.random() < 0.6 else rng.choice(AGENTS)
    result = pipeline(incumbent="recorded", retrieval=False).retrain_sync(
        data, tmp_path / "nothing-yet", tmp_path / "v1"
    )
    assert result["status"] == "completed", result
    held = prepare_training_data(data, validation_split=0.2, seed=0).validation
    chosen = {r["interaction_id"]: r["agent_selected"] for r in data}
    expected = float(np.mean([chosen[label.interaction_id] == label.agent for label in held]))
    recorded = result["metrics"]["production"]
    assert 0.5 < expected < 0.9  # neither always right nor always wrong: the numbers say something
    assert recorded["policy"] == "recorded" and recorded["n"] == len(held)
    assert recorded["accuracy"] == pytest.approx(expected) and recorded["ece"] is None
    gate = result["steps"]["evaluation"]["gate"]
    assert gate["accuracy_gain"] == pytest.approx(result["metrics"]["candidate"]["accuracy"] - expected)
    assert result["metrics"]["retrieval"]["status"] == "not_run"
    without = pipeline(retrieval=False).retrain_sync(data, tmp_path / "nothing-yet", tmp_path / "v1b")
    assert without["metrics"]["production"] is None
