"""Streaming detectors: river's alarm points on seeded streams, reset after drift, clear errors."""

from __future__ import annotations

import doctest
import random
from collections.abc import Callable

import pytest

from cl_plugin.drift import (
    ADWIN,
    DDM,
    EDDM,
    KSWIN,
    PageHinkley,
    StreamingDetector,
    adwin,
    binary,
    kswin,
    page_hinkley,
)
from cl_plugin.errors import DriftInputError


def _streams(seed: int) -> tuple[list[float], list[int]]:
    """A real-valued stream with two mean/scale changes (at 1500 and 3000), and an error stream whose
    error rate rises from 0.2 to 0.45 at 1500."""
    rng = random.Random(seed)
    real = (
        [rng.gauss(0, 1) for _ in range(1500)]
        + [rng.gauss(0.7, 1.5) for _ in range(1500)]
        + [rng.gauss(-0.5, 1) for _ in range(1000)]
    )
    bits = rng.choices([0, 1], k=1500, weights=[0.8, 0.2]) + rng.choices([0, 1], k=1500, weights=[0.55, 0.45])
    return real, bits


def _run(detector: StreamingDetector, stream: list) -> tuple[list[int], list[int]]:
    drifts, warnings = [], []
    for i, x in enumerate(stream):
        assert detector.update(x) is detector
        if detector.drift_detected:
            drifts.append(i)
        if detector.warning_detected:
            warnings.append(i)
    return drifts, warnings


_EDDM_SEED0 = [142, 308, 488, 686, 862, 1097, 1261, 1383, 1502, 1589, 1652, 1717, 1791, 1869, 1942]
_EDDM_SEED0 += [2027, 2106, 2172, 2803, 2872, 2969]

# Alarm indices that river 0.26.1 (river.drift / river.drift.binary, same parameters) gives on the same
# streams; the implementations agree on every alarm and warning of 30 seeds x 6 configurations.
RIVER_ALARMS: list[tuple[str, Callable[[], StreamingDetector], int, list[int], list[int], int]] = [
    # (name, factory, seed, drift indices, first warning, number of warnings)
    ("ADWIN", ADWIN, 0, [1535, 3071], [], 0),
    ("ADWIN", ADWIN, 1, [1567, 3071], [], 0),
    ("ADWIN clock=1", lambda: ADWIN(clock=1, delta=0.01), 0, [1530, 3050], [], 0),
    ("ADWIN clock=1", lambda: ADWIN(clock=1, delta=0.01), 1, [1531, 3035], [], 0),
    ("PageHinkley", PageHinkley, 0, [1542, 2716, 3046, 3694], [], 0),
    ("PageHinkley", PageHinkley, 1, [573, 1523, 2075, 2359, 3044], [], 0),
    ("KSWIN", lambda: KSWIN(seed=7), 0, [1552], [], 0),
    ("KSWIN", lambda: KSWIN(seed=7), 1, [544, 719, 1547], [], 0),
    ("DDM", DDM, 0, [1622], [1500], 124),
    ("DDM", DDM, 1, [1620, 1888], [42], 345),
    ("EDDM", EDDM, 0, _EDDM_SEED0, [104], 442),
    ("EDDM", EDDM, 1, [90, 409, 586, 725, 868, 1039, 1565, 1623, 1712, 1779, 1867, 2298], [262], 865),
]


@pytest.mark.parametrize(("name", "factory", "seed", "drifts", "first_warning", "n_warnings"), RIVER_ALARMS)
def test_detectors_alarm_where_river_does(name, factory, seed, drifts, first_warning, n_warnings) -> None:
    real, bits = _streams(seed)
    stream = bits if name in ("DDM", "EDDM") else real[:2000] if name == "KSWIN" else real
    got_drifts, got_warnings = _run(factory(), stream)
    assert got_drifts == drifts
    assert got_warnings[:1] == first_warning
    assert len(got_warnings) == n_warnings


@pytest.mark.parametrize("module", [adwin, binary, kswin, page_hinkley])
def test_docstring_examples_print_their_alarm_indices(module) -> None:
    result = doctest.testmod(module)
    assert result.attempted > 0 and result.failed == 0


def test_adwin_raises_one_alarm_per_abrupt_change_then_starts_afresh() -> None:
    rng = random.Random(3)
    stream = [rng.gauss(0, 1) for _ in range(1000)] + [rng.gauss(3, 1) for _ in range(1000)]
    drifts, _ = _run(ADWIN(), stream)
    assert len(drifts) == 1 and 1000 <= drifts[0] < 1100


@pytest.mark.parametrize("factory", [ADWIN, PageHinkley, lambda: KSWIN(seed=1), DDM, EDDM])
def test_a_constant_stream_raises_no_alarm(factory) -> None:
    drifts, warnings = _run(factory(), [0] * 3000)
    assert drifts == [] and warnings == []


def test_constructors_only_store_their_parameters() -> None:
    assert (
        repr(ADWIN(delta=0.01))
        == "ADWIN(delta=0.01, clock=32, max_buckets=5, min_window_length=5, grace_period=10)"
    )
    assert PageHinkley().threshold == 50.0 and KSWIN().alpha == 0.005 and EDDM().beta == 0.9


def test_adwin_window_shrinks_to_the_new_concept_and_estimates_its_mean() -> None:
    detector = ADWIN()
    rng = random.Random(5)
    for x in [rng.gauss(0, 0.1) for _ in range(500)]:
        detector.update(x)
    assert detector.width == 500 and abs(detector.estimation) < 0.05


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda: ADWIN(delta=2), "delta"),
        (lambda: PageHinkley(mode="sideways"), "mode"),
        (lambda: KSWIN(window_size=30, stat_size=30), "stat_size"),
        (lambda: DDM(warning_threshold=4), "warning_threshold"),
        (lambda: EDDM(alpha=0.8, beta=0.9), "beta"),
        (lambda: ADWIN().update(float("nan")), "x"),
        (lambda: PageHinkley().update("3"), "x"),
        (lambda: DDM().update(0.5), "x"),
    ],
)
def test_bad_parameters_and_values_name_the_field_and_the_fix(call, field) -> None:
    with pytest.raises(DriftInputError) as info:
        call()
    assert info.value.field == field
    assert (
        field in str(info.value)
        or "0 (correct) or 1 (error)" in str(info.value)
        or "finite" in str(info.value)
    )
