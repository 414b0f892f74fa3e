"""ABTestFramework: the spec's API, decisions on seeded data, assignment, persistence across processes and
replicas, and errors that name the field and the fix."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cl_plugin.abtest import RECOMMENDATIONS, ABTestFramework, assign, describe_model
from cl_plugin.config import load_config
from cl_plugin.errors import (
    ABTestEndedError,
    ABTestError,
    ConfigError,
    StoreUnavailableError,
    UnknownABTestError,
)
from cl_plugin.store import Store

ROOT = Path(__file__).resolve().parents[1]


# -- the spec ---------------------------------------------------------------------------------------


class _Model:
    def __init__(self, name: str, quality: float) -> None:
        self.name = name
        self.quality = quality

    def __call__(self, query: str) -> str:
        return f"{self.name}: answer to {query}"


def calculate_success_metric(inp: dict[str, Any], out: str) -> float:
    return 1.0 if inp["query"] in out else 0.0


def test_the_workflow_example_tests_registry_aliases_by_name(store: Store) -> None:
    config = load_config()
    ab_framework = ABTestFramework(config.ab_testing, store=store)
    test_id = ab_framework.create_test(
        "retrain_test", model_a="production", model_b="candidate", metric_fn=calculate_success_metric
    )
    status = ab_framework.get_test_status(test_id)
    assert (status["model_a"], status["model_b"]) == ("production", "candidate")
    assert status["settings"]["traffic_split"] == config.ab_testing.traffic_split
    assert status["recommendation"] == "Continue"


def test_models_are_described_not_serialized() -> None:
    class Handle:
        name, alias = "router", "production"

    class Version:
        name, version = "router", 3

    assert describe_model("candidate") == "candidate"
    assert describe_model(Handle()) == "router@production"
    assert describe_model(Version()) == "router v3"
    assert describe_model(object()) == "builtins.object"


# -- decisions --------------------------------------------------------------------------------------


def _feed(fw: ABTestFramework, test_id: str, n: int, mean_a: float, mean_b: float, seed: int) -> None:
    # groups alternate (the split is 0.5), so a test id drawn at random cannot tip the sample-ratio check
    rng = np.random.default_rng(seed)
    for i in range(n):
        group = "B" if i % 2 else "A"
        fw.record_result(test_id, group, metric=float(rng.normal(mean_b if group == "B" else mean_a, 1.0)))


@pytest.mark.parametrize(
    ("mean_b", "n", "settings", "expected", "reason"),
    [
        (0.3, 4000, {}, "Deploy B", "B is better"),
        (-0.3, 4000, {}, "Keep A", "B is worse"),
        (0.0, 20000, {"minimum_detectable_effect": 0.1}, "Keep A", "not better than A by the planned"),
        (0.0, 600, {}, "Continue", "no significant difference"),
        (1.0, 300, {"min_samples": 500}, "Continue", "min_samples=500"),
        (-0.3, 4000, {"higher_is_better": False}, "Deploy B", "B is better"),
    ],
)
def test_each_recommendation_is_reached_on_seeded_data(
    mean_b: float, n: int, settings: dict[str, Any], expected: str, reason: str
) -> None:
    fw = ABTestFramework({"traffic_split": 0.5, "min_samples": 200, **settings})
    test_id = fw.create_test("decision", model_a="production", model_b="candidate")
    _feed(fw, test_id, n, 0.0, mean_b, seed=n)
    status = fw.get_test_status(test_id)
    assert status["recommendation"] == expected
    assert reason in status["reason"]
    low, high = status["confidence_interval"]
    assert low <= status["effect"] <= high
    final = fw.end_test(test_id)
    assert final["recommendation"] == expected
    assert fw.end_test(test_id) == final  # ending again changes nothing


def test_a_binary_metric_is_analysed_as_two_proportions() -> None:
    fw = ABTestFramework(traffic_split=0.5, min_samples=100)
    test_id = fw.create_test("conversion", model_a="a", model_b="b")
    rng = np.random.default_rng(8)
    for i in range(6000):
        group = fw.assign_group(test_id, i)
        fw.record_result(test_id, group, metric=bool(rng.random() < (0.5 if group == "B" else 0.4)))
    status = fw.get_test_status(test_id)
    assert status["metric_type"] == "binary"
    assert status["recommendation"] == "Deploy B"
    mean_b = status["groups"]["B"]["mean"]
    assert status["groups"]["B"]["std"] == pytest.approx(np.sqrt(mean_b * (1 - mean_b)))


def test_a_sample_ratio_mismatch_blocks_deployment() -> None:
    fw = ABTestFramework(traffic_split=0.5, min_samples=100)
    test_id = fw.create_test("srm", model_a="a", model_b="b")
    rng = np.random.default_rng(4)
    # B wins clearly, but B's results are 30% over-represented: something drops A's results.
    for _ in range(1000):
        fw.record_result(test_id, "A", metric=float(rng.normal(0.0, 1.0)))
    for _ in range(1300):
        fw.record_result(test_id, "B", metric=float(rng.normal(0.5, 1.0)))
    status = fw.get_test_status(test_id)
    srm = status["sample_ratio"]
    assert srm["alert"]
    assert srm["p_value"] < 0.001
    assert srm["p_value"] == pytest.approx(1.0 / srm["bayes_factor"])
    assert srm["fixed_horizon"]["p_value"] < srm["p_value"]
    assert status["significant"]
    assert status["recommendation"] == "Keep A"
    assert "sample ratio mismatch" in status["reason"]
    assert "always-valid p=" in status["reason"] and "chi-square p=" in status["reason"]


def _feed_counts(fw: ABTestFramework, test_id: str, n_a: int, n_b: int, mean_b: float) -> None:
    rng = np.random.default_rng(n_b)
    for group, n, mean in (("A", n_a, 0.0), ("B", n_b, mean_b)):
        for x in rng.normal(mean, 1.0, n):
            fw.record_result(test_id, group, metric=float(x))


def test_a_chi_square_p_below_0_001_at_one_look_does_not_block_deployment() -> None:
    # 5180 of 10,000 in B at a 50/50 split: chi-square p = 0.0003 if this were the only look, but the
    # counts of a test read at every look carry a Bayes factor of only about 60, short of 1/0.001.
    fw = ABTestFramework(traffic_split=0.5, min_samples=100)
    test_id = fw.create_test("srm-borderline", model_a="a", model_b="b")
    _feed_counts(fw, test_id, 4820, 5180, mean_b=0.3)
    status = fw.get_test_status(test_id)
    srm = status["sample_ratio"]
    assert srm["fixed_horizon"]["p_value"] < 0.001
    assert not srm["alert"]
    assert 0.001 < srm["p_value"] < 0.05
    assert status["recommendation"] == "Deploy B"


def test_the_status_and_the_stored_final_result_expose_both_srm_figures(store: Store) -> None:
    fw = ABTestFramework(traffic_split=0.5, min_samples=100, store=store)
    test_id = fw.create_test("srm-stored", model_a="a", model_b="b")
    _feed_counts(fw, test_id, 2000, 2400, mean_b=0.0)
    status = fw.get_test_status(test_id)
    final = fw.end_test(test_id)
    for result in (status, final, ABTestFramework(store=store).get_test_status(test_id)):
        srm = result["sample_ratio"]
        assert set(srm) == {
            "expected_b_share",
            "observed_b_share",
            "bayes_factor",
            "p_value",
            "alert",
            "fixed_horizon",
        }
        assert srm["observed_b_share"] == pytest.approx(2400 / 4400)
        assert srm["alert"] and srm["bayes_factor"] >= 1000
        assert set(srm["fixed_horizon"]) == {"chi2", "p_value"}
        assert srm["fixed_horizon"]["chi2"] == pytest.approx(2 * 200**2 / 2200)
        assert result["recommendation"] == "Keep A"
    assert final["sample_ratio"] == status["sample_ratio"]


def test_a_planned_effect_reports_the_required_sample_size() -> None:
    fw = ABTestFramework(traffic_split=0.5, min_samples=100, minimum_detectable_effect=0.2)
    test_id = fw.create_test("plan", model_a="a", model_b="b")
    _feed(fw, test_id, 400, 0.0, 0.0, seed=2)
    plan = fw.get_test_status(test_id)["plan"]
    assert plan["required_samples"] > 400
    assert 0.0 < plan["power_now"] < plan["power"]


# -- assignment -------------------------------------------------------------------------------------


def test_assignment_honours_the_split_and_is_independent_between_tests() -> None:
    fw = ABTestFramework()
    n = 40_000
    units = [f"user-{i}" for i in range(n)]
    for split in (0.1, 0.5, 0.9):
        fw_split = ABTestFramework(traffic_split=split)
        first = fw_split.assign_groups(fw_split.create_test(f"s{split}", model_a="a", model_b="b"), units)
        share = first.count("B") / n
        assert abs(share - split) < 4 * np.sqrt(split * (1 - split) / n)
    one = fw.assign_groups(fw.create_test("one", model_a="a", model_b="b"), units)
    two = fw.assign_groups(fw.create_test("two", model_a="a", model_b="b"), units)
    in_b_of_one = [g2 for g1, g2 in zip(one, two, strict=True) if g1 == "B"]
    assert abs(in_b_of_one.count("B") / len(in_b_of_one) - 0.1) < 4 * np.sqrt(0.09 / len(in_b_of_one))


def test_assignment_is_the_same_in_another_process() -> None:
    fw = ABTestFramework(traffic_split=0.3)
    test_id = fw.create_test("stable", model_a="a", model_b="b")
    units: list[Any] = [f"req-{i}" for i in range(3000)] + list(range(1000))
    here = [fw.assign_group(test_id, u) for u in units]
    assert here == fw.assign_groups(test_id, units)
    assert here == [assign(test_id, u, 0.3) for u in units]
    code = (
        "import json, sys\n"
        "from cl_plugin.abtest import assign\n"
        "units = json.loads(sys.argv[2])\n"
        "print(json.dumps([assign(sys.argv[1], u, 0.3) for u in units]))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONHASHSEED": "12345"}
    done = subprocess.run(
        [sys.executable, "-c", code, test_id, json.dumps(units)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert json.loads(done.stdout) == here


# -- persistence ------------------------------------------------------------------------------------


def test_replicas_share_tests_and_results_through_the_store(store: Store) -> None:
    one = ABTestFramework(traffic_split=0.5, min_samples=10, store=store, buffer_size=64)
    two = ABTestFramework(traffic_split=0.5, min_samples=10, store=store)
    test_id = one.create_test("shared", model_a="production", model_b="candidate")
    assert two.create_test("shared", model_a="production", model_b="candidate") == test_id
    rng = np.random.default_rng(1)
    values = {"A": rng.normal(0, 1, 130), "B": rng.normal(1, 1, 170)}
    for group, xs in values.items():
        for x in xs[:100]:
            one.record_result(test_id, group, metric=float(x))
        for x in xs[100:]:
            two.record_result(test_id, group, metric=float(x))
    status = two.get_test_status(test_id)  # flushes two, not one: one flushes every 64 results
    assert sum(g["n"] for g in status["groups"].values()) == 300 - 200 % 64
    one.flush()
    status = two.get_test_status(test_id)
    for group, xs in values.items():
        assert status["groups"][group]["n"] == len(xs)
        assert status["groups"][group]["mean"] == pytest.approx(xs.mean(), rel=1e-9)
        assert status["groups"][group]["std"] == pytest.approx(xs.std(ddof=1), rel=1e-9)
    final = two.end_test(test_id)
    assert final["recommendation"] == "Deploy B"
    one.record_result(test_id, "A", metric=0.0)  # accepted: one has not heard of the end yet
    one.flush()  # counted in the groups, but the final analysis stays as it was; and one hears of the end
    with pytest.raises(ABTestEndedError):
        one.record_result(test_id, "A", metric=0.0)
    assert store.ab.get(test_id)["groups"]["A"]["n"] == len(values["A"]) + 1
    assert ABTestFramework(store=store).get_test_status(test_id) == final
    # A new test of the same name starts once the old one has ended.
    assert one.create_test("shared", model_a="production", model_b="candidate") != test_id
    one.close()
    two.close()


def test_a_running_test_of_the_same_name_with_other_models_is_refused(store: Store) -> None:
    fw = ABTestFramework(store=store)
    test_id = fw.create_test("clash", model_a="production", model_b="candidate")
    with pytest.raises(ABTestError, match="running already") as err:
        ABTestFramework(store=store).create_test("clash", model_a="production", model_b="other")
    assert (err.value.field, err.value.test_id) == ("name", test_id)


def test_sync_durability_commits_each_result_before_returning(tmp_path: Path) -> None:
    store = Store.from_url(f"sqlite:///{tmp_path / 'ab.db'}").setup()
    fw = ABTestFramework(store=store, durability="sync")
    test_id = fw.create_test("sync", model_a="a", model_b="b")
    fw.record_result(test_id, "B", metric=2.5)
    assert store.ab.get(test_id)["groups"]["B"] == {
        "variant": "B",
        "n": 1,
        "mean": 2.5,
        "m2": 0.0,
        "non_binary": 1,
    }


def test_buffered_results_are_flushed_on_a_timer_and_after_close(tmp_path: Path) -> None:
    store = Store.from_url(f"sqlite:///{tmp_path / 'ab.db'}").setup()
    fw = ABTestFramework(store=store, flush_interval=0.05)
    test_id = fw.create_test("timer", model_a="a", model_b="b")
    fw.record_result(test_id, "A", metric=1.0)
    deadline = time.monotonic() + 10
    while store.ab.get(test_id)["groups"]["A"]["n"] == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert store.ab.get(test_id)["groups"]["A"]["n"] == 1
    fw.close()
    fw.record_result(test_id, "B", metric=3.0)
    assert store.ab.get(test_id)["groups"]["B"]["n"] == 1


def test_a_failed_flush_keeps_its_results_for_the_next(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = Store.from_url(f"sqlite:///{tmp_path / 'ab.db'}").setup()
    fw = ABTestFramework(store=store, buffer_size=10_000)
    test_id = fw.create_test("outage", model_a="a", model_b="b")
    for x in range(100):
        fw.record_result(test_id, "A", metric=float(x))
    real = store.ab.add_results

    def unavailable(deltas: Any) -> dict[str, str]:
        raise StoreUnavailableError("database is down")

    monkeypatch.setattr(store.ab, "add_results", unavailable)
    with pytest.raises(StoreUnavailableError):
        fw.flush()
    for x in range(100, 150):
        fw.record_result(test_id, "A", metric=float(x))
    monkeypatch.setattr(store.ab, "add_results", real)
    fw.flush()
    group = store.ab.get(test_id)["groups"]["A"]
    assert group["n"] == 150
    assert group["mean"] == pytest.approx(np.arange(150).mean())
    assert group["m2"] == pytest.approx(np.arange(150).var() * 150)


def test_threads_recording_at_once_lose_nothing(tmp_path: Path) -> None:
    store = Store.from_url(f"sqlite:///{tmp_path / 'ab.db'}").setup()
    fw = ABTestFramework(store=store, buffer_size=64)
    test_id = fw.create_test("threads", model_a="a", model_b="b")

    def work(k: int) -> None:
        for i in range(2000):
            fw.record_result(test_id, "AB"[(i + k) % 2], metric=float(i % 7))

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    groups = fw.get_test_status(test_id)["groups"]
    assert groups["A"]["n"] + groups["B"]["n"] == 8000
    assert groups["A"]["mean"] == pytest.approx(np.arange(2000).__mod__(7).mean(), rel=1e-9)


# One step of the multi-process test: create the test, or feed it from its own seeded stream, or analyse.
CHILD = r"""
import json, sys
import numpy as np
from cl_plugin.abtest import ABTestFramework
from cl_plugin.store import Store

args = json.loads(sys.argv[1])
store = Store.from_url(args["url"]).setup()
fw = ABTestFramework({"traffic_split": 0.3, "min_samples": 100}, store=store, buffer_size=97)
if args["step"] == "create":
    print(fw.create_test("multi", model_a="production", model_b="candidate"))
elif args["step"] == "feed":
    rng = np.random.default_rng(args["seed"])
    for i, x in enumerate(rng.normal(0.0, 1.0, args["n"])):
        group = fw.assign_group(args["test_id"], f"u{args['seed']}-{i}")
        fw.record_result(args["test_id"], group, metric=float(x) + (0.4 if group == "B" else 0.0))
    if args["close"]:
        fw.close()
    # else: the buffered results must be flushed at interpreter exit
else:
    print(json.dumps(fw.end_test(args["test_id"])))
"""


def _child(**args: Any) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, json.dumps(args)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _output(proc: subprocess.Popen) -> str:
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err[-3000:]
    return out.strip()


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite-file", "postgresql"])
def test_a_test_created_fed_and_analysed_by_four_processes(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'ab.db'}" if backend == "sqlite-file" else request.getfixturevalue("pg_url")
    test_id = _output(_child(step="create", url=url))
    feeders = [_child(step="feed", url=url, test_id=test_id, seed=s, n=3000, close=s == 1) for s in (1, 2)]
    for proc in feeders:
        _output(proc)
    final = json.loads(_output(_child(step="analyse", url=url, test_id=test_id)))
    # What the two feeders recorded, recomputed here from the same seeds and the reference assignment.
    values: dict[str, list[float]] = {"A": [], "B": []}
    for seed in (1, 2):
        for i, x in enumerate(np.random.default_rng(seed).normal(0.0, 1.0, 3000)):
            group = assign(test_id, f"u{seed}-{i}", 0.3)
            values[group].append(float(x) + (0.4 if group == "B" else 0.0))
    for group, xs in values.items():
        assert final["groups"][group]["n"] == len(xs)
        assert final["groups"][group]["mean"] == pytest.approx(np.mean(xs), rel=1e-9)
        assert final["groups"][group]["std"] == pytest.approx(np.std(xs, ddof=1), rel=1e-9)
    assert final["status"] == "ended"
    assert final["recommendation"] == "Deploy B"
    assert final["recommendation"] in RECOMMENDATIONS


# -- errors -----------------------------------------------------------------------------------------


@pytest.fixture
def running() -> tuple[ABTestFramework, str]:
    fw = ABTestFramework(metric_type="auto")
    return fw, fw.create_test("errors", model_a="a", model_b="b")


def test_an_unknown_test_id_is_refused_by_every_method(running: tuple[ABTestFramework, str]) -> None:
    fw, _ = running
    for call in (
        lambda: fw.assign_group("nope", "u"),
        lambda: fw.assign_groups("nope", ["u"]),
        lambda: fw.record_result("nope", "A", metric=1.0),
        lambda: fw.get_test_status("nope"),
        lambda: fw.end_test("nope"),
        lambda: fw.assign_group(["not", "an", "id"], "u"),  # type: ignore[arg-type]
    ):
        with pytest.raises(UnknownABTestError, match="create_test") as err:
            call()
        assert err.value.field == "test_id"
        assert isinstance(err.value, KeyError)


@pytest.mark.parametrize(
    ("kwargs", "field", "fix"),
    [
        ({"group": "C", "metric": 1.0}, "group", "'A' or 'B'"),
        ({"group": "A", "metric": float("nan")}, "metric", "must be finite"),
        ({"group": "A", "metric": float("inf")}, "metric", "must be finite"),
        ({"group": "A", "metric": "0.5"}, "metric", "must be a number"),
        ({"group": "A", "metric": [1.0]}, "metric", "must be a number"),
        ({"group": "A"}, "metric", "pass metric="),
    ],
)
def test_bad_results_name_the_field_and_the_fix(
    running: tuple[ABTestFramework, str], kwargs: dict[str, Any], field: str, fix: str
) -> None:
    fw, test_id = running
    with pytest.raises(ABTestError, match=fix) as err:
        fw.record_result(test_id, **kwargs)
    assert (err.value.field, err.value.test_id) == (field, test_id)
    assert fw.get_test_status(test_id)["groups"]["A"]["n"] == 0


def test_results_for_an_ended_test_are_refused(running: tuple[ABTestFramework, str]) -> None:
    fw, test_id = running
    fw.record_result(test_id, "A", metric=1.0)
    fw.end_test(test_id)
    with pytest.raises(ABTestEndedError, match="has ended") as err:
        fw.record_result(test_id, "B", metric=1.0)
    assert err.value.test_id == test_id
    assert fw.get_test_status(test_id)["groups"]["B"]["n"] == 0


def test_other_bad_input_names_the_field() -> None:
    fw = ABTestFramework(metric_type="binary")
    test_id = fw.create_test("binary", model_a="a", model_b="b")
    with pytest.raises(ABTestError, match="0 or 1") as err:
        fw.record_result(test_id, "A", metric=0.5)
    assert err.value.field == "metric"
    with pytest.raises(ABTestError, match="unit_id must be") as err:
        fw.assign_group(test_id, object())  # type: ignore[arg-type]
    assert err.value.field == "unit_id"
    with pytest.raises(ABTestError) as err:
        fw.create_test("", model_a="a", model_b="b")
    assert err.value.field == "name"
    with pytest.raises(ABTestError) as err:
        fw.create_test("x", model_a="a", model_b="b", metric_fn=42)  # type: ignore[arg-type]
    assert err.value.field == "metric_fn"


def test_config_is_validated_as_a_dict_and_as_keywords() -> None:
    assert ABTestFramework({"traffic_split": 0.2}).config == ABTestFramework(traffic_split=0.2).config
    with pytest.raises(ConfigError, match="traffic_splt") as err:
        ABTestFramework({"traffic_splt": 0.2})
    assert "traffic_split" in str(err.value)  # the allowed keys are listed
    assert err.value.key == "ab_testing.traffic_splt"
    with pytest.raises(ConfigError, match="metric_type"):
        ABTestFramework(metric_type="ordinal")


def test_replicas_merging_the_same_groups_in_opposite_orders_do_not_deadlock(pg_url: str) -> None:
    # Each replica flushes a dict of groups in its own order; PostgreSQL locks the rows in the order the
    # UPDATEs run, so unsorted batches [A, B] and [B, A] committing at once deadlock.
    creator = ABTestFramework(store=Store.from_url(pg_url).setup())
    test_id = creator.create_test("order", model_a="a", model_b="b")
    stores = [Store.from_url(pg_url).setup() for _ in range(2)]
    errors: list[BaseException] = []

    def merge(store: Store, variants: str) -> None:
        delta = {"test_id": test_id, "n": 1, "mean": 1.0, "m2": 0.0, "non_binary": 0}
        try:
            for _ in range(300):
                store.ab.add_results([delta | {"variant": v} for v in variants])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=merge, args=(s, v)) for s, v in zip(stores, ("AB", "BA"), strict=True)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    groups = stores[0].ab.get(test_id)["groups"]
    assert groups["A"]["n"] == groups["B"]["n"] == 600
