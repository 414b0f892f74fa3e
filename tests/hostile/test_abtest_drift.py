"""Hostile A/B and drift inputs: a refused input raises the library's error naming the field and leaves the
state as if it had never been given."""

from __future__ import annotations

import math
import sys
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cl_plugin import ABTestError, ABTestFramework, DriftDetector, DriftInputError
from cl_plugin.drift import ADWIN, DDM, EDDM, KSWIN, PageHinkley, compare_columns

hostile = st.one_of(
    st.none(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-(2**80), 2**80),
    st.sampled_from(
        [10**400, -(10**400), 1e308, -1e308, "3", "", "\ud800", b"\x00", [1.0], {"a": 1}, [], ()]
    ),
    st.text(max_size=10),
)
SETTINGS = settings(max_examples=60, deadline=None, derandomize=True)
GOOD = [float(v) for v in np.random.default_rng(7).integers(0, 2, size=40)]


def _status_after(bad: list[Any]) -> dict[str, Any]:
    ab = ABTestFramework({"min_samples": 10})
    tid = ab.create_test("hostile", "a", "b")
    for i, value in enumerate(GOOD):
        for b in bad if i == 20 else ():
            with pytest.raises(ABTestError) as err:
                ab.record_result(tid, "A", metric=b)
            assert err.value.field == "metric"
        ab.record_result(tid, "AB"[i % 2], metric=value)
    status = ab.end_test(tid)
    return {k: v for k, v in status.items() if k not in ("test_id", "created_at", "ended_at")}


CLEAN_STATUS = _status_after([])


@SETTINGS
@given(bad=st.lists(hostile.filter(lambda v: not _is_metric(v)), min_size=1, max_size=3))
def test_refused_metrics_leave_the_ab_result_unchanged(bad: list[Any]) -> None:
    assert _status_after(bad) == CLEAN_STATUS


def _is_metric(v: Any) -> bool:
    """A finite number: a metric the test takes (with metric_type auto, any number is allowed)."""
    if isinstance(v, float):
        return math.isfinite(v)
    return isinstance(v, int) and abs(v) <= sys.float_info.max


@SETTINGS
@given(unit=hostile, group=hostile, name=hostile)
def test_assignment_groups_and_names_never_raise_another_error(unit: Any, group: Any, name: Any) -> None:
    ab = ABTestFramework()
    try:
        tid = ab.create_test(name, "a", "b")
    except ABTestError as exc:
        assert exc.field == "name"
        tid = ab.create_test("fallback", "a", "b")
    try:
        assert ab.assign_group(tid, unit) in ("A", "B")
    except ABTestError as exc:
        assert exc.field == "unit_id"
    with pytest.raises(ABTestError):
        ab.record_result(tid, group, metric=1.0)
    with pytest.raises(ABTestError):
        ab.end_test(unit if isinstance(unit, str) and unit != tid else ["not", "an", "id"])


def test_a_metric_beyond_a_floats_range_is_refused_naming_it() -> None:
    """float(10**400) raised OverflowError out of record_result."""
    ab = ABTestFramework()
    tid = ab.create_test("t", "a", "b")
    with pytest.raises(ABTestError) as err:
        ab.record_result(tid, "A", metric=10**400)
    assert err.value.field == "metric"


def test_a_unit_id_with_a_lone_surrogate_is_assigned_the_same_group_every_time() -> None:
    """str.encode() raised UnicodeEncodeError on such ids (they come from JSON escapes like \\ud800)."""
    ab = ABTestFramework()
    tid = ab.create_test("t", "a", "b")
    first = ab.assign_group(tid, "user-\ud800")
    assert ab.assign_group(tid, "user-\ud800") == first == ab.assign_groups(tid, ["user-\ud800"])[0]


@pytest.mark.parametrize("cls", [ADWIN, DDM, EDDM, PageHinkley, KSWIN])
@SETTINGS
@given(bad=st.lists(hostile, min_size=1, max_size=3))
def test_streaming_detectors_refuse_bad_values_without_changing_state(cls: type, bad: list[Any]) -> None:
    rng = np.random.default_rng(1)
    stream = [float(v) for v in rng.integers(0, 2, size=60)]
    clean, hit = cls(), cls()
    for i, x in enumerate(stream):
        if i == 30:
            for b in bad:
                try:
                    hit.update(b)
                except DriftInputError as exc:
                    assert exc.field == "x"
                    continue
                if isinstance(b, int | float) and (cls in (DDM, EDDM) or abs(b) > 1e3):
                    return  # accepted and used: the streams differ from here on
        clean.update(x)
        hit.update(x)
        assert (clean.drift_detected, clean.warning_detected) == (hit.drift_detected, hit.warning_detected)


@SETTINGS
@given(bad=st.lists(hostile, min_size=1, max_size=4))
def test_drift_detector_refuses_bad_samples_and_reports_as_without_them(bad: list[Any]) -> None:
    rng = np.random.default_rng(3)
    ref = list(rng.normal(size=300))
    samples = list(rng.normal(0.8, 1, size=300))

    def run(extra: list[Any]) -> list[Any]:
        d = DriftDetector({"window_size": 100, "check_every": 20, "min_samples": 40})
        for b in extra:
            with pytest.raises(DriftInputError):
                d.set_reference_distribution(b)
        d.set_reference_distribution(ref)
        out = []
        for i, s in enumerate(samples):
            if i == 50:
                for b in extra:
                    with pytest.raises(DriftInputError):
                        d.add_sample([b, b] if _is_metric(b) else b)
            r = d.add_sample(s, timestamp=float(i))
            out.append(None if r is None else (r.samples_seen, sorted(r.drifted_features)))
        return out

    assert run(bad) == run([])


@SETTINGS
@given(
    ref=st.one_of(hostile, st.dictionaries(st.text(max_size=3), st.lists(hostile, max_size=12), max_size=3)),
    cur=st.one_of(hostile, st.dictionaries(st.text(max_size=3), st.lists(hostile, max_size=12), max_size=3)),
)
def test_compare_columns_on_any_input_returns_or_raises_drift_input_error(ref: Any, cur: Any) -> None:
    try:
        result = compare_columns(ref, cur)
    except DriftInputError as exc:
        assert exc.field is not None  # the argument or the column (a column may be named "")
    else:
        assert all(0 <= c.p_value <= 1 for c in result.columns if c.p_value is not None)


@pytest.mark.parametrize("data", [[[1.0], [2.0, 3.0]], [None] * 12, 5], ids=["ragged", "nones", "scalar"])
def test_compare_columns_refuses_data_that_is_not_columns(data: Any) -> None:
    """A list instead of a dict of columns raised TypeError from indexing."""
    with pytest.raises(DriftInputError) as err:
        compare_columns(data, data)
    assert err.value.field == "reference"
