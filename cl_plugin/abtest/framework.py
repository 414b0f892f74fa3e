"""ABTestFramework: the spec's A/B test API, with assignment, persistence, analysis and decision.

Without a store, tests live in this process's memory. With one (``ABTestFramework(config, store=store)``),
tests and their results live in the store's ``ab_tests`` and ``ab_test_groups`` tables: they survive a
restart, and every replica that uses the same database shares them. Assignment needs no shared state
(see :mod:`cl_plugin.abtest.assignment`); only a test's definition is read from the store, once per process.

Recording a result costs O(1): it folds the metric into an in-memory summary of its group (count, mean and
sum of squared deviations). With ``durability="batch"`` (the default) the summaries are merged into the
store by :meth:`~ABTestFramework.flush`, which runs when ``buffer_size`` results are waiting, every
``flush_interval`` seconds, before every analysis, on :meth:`~ABTestFramework.close` and at interpreter
exit; a flush that fails keeps its results for the next one. One transaction per result caps SQLite near
a few thousand results a second on the machines we measured (tests/bench/bench_abtest.py), far below the
rates a busy router produces, hence the buffer. With ``durability="sync"`` every result is committed before
:meth:`~ABTestFramework.record_result` returns, for short-lived processes that cannot rely on exit hooks.
"""

from __future__ import annotations

import atexit
import logging
import math
import re
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from numbers import Real
from typing import Any

from cl_plugin.abtest.analysis import ABTestSettings, analyse
from cl_plugin.abtest.assignment import b_threshold, hash_prefix, unit_bytes
from cl_plugin.abtest.stats import GroupStats
from cl_plugin.config import ABTestingConfig, ContinualLearningConfig, resolve_section
from cl_plugin.errors import ABTestEndedError, ABTestError, UnknownABTestError
from cl_plugin.store import Store

__all__ = ["ABTestFramework", "MetricFn"]

log = logging.getLogger("cl_plugin.abtest")

#: ``metric_fn(input_data, output) -> float``: the success metric of one request.
MetricFn = Callable[[Any, Any], float]

_VARIANTS = ("A", "B")
_live: weakref.WeakSet[ABTestFramework] = weakref.WeakSet()


@dataclass
class _Test:
    test_id: str
    name: str
    model_a: str
    model_b: str
    settings: ABTestSettings
    created_at: float
    status: str = "running"
    ended_at: float | None = None
    result: dict[str, Any] | None = None
    # The whole statistics without a store; unused with one (the store holds them).
    groups: dict[str, GroupStats] = field(default_factory=lambda: {v: GroupStats() for v in _VARIANTS})

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> _Test:
        keys = ("test_id", "name", "model_a", "model_b", "created_at", "status", "ended_at", "result")
        return cls(settings=ABTestSettings.from_dict(row["settings"]), **{k: row[k] for k in keys})

    def header(self) -> dict[str, Any]:
        return {
            "test_id": self.test_id,
            "name": self.name,
            "model_a": self.model_a,
            "model_b": self.model_b,
            "status": self.status,
            "created_at": self.created_at,
            "ended_at": self.ended_at,
            "settings": self.settings.to_dict(),
        }


def describe_model(model: object) -> str:
    """A model's description as stored with a test: the model is never serialized.

    Strings (registry alias names such as ``"production"``, paths) are kept; a registry handle becomes
    ``name@alias``, a registered version ``name v3``; other objects their ``name`` attribute or class.
    """
    if isinstance(model, str):
        return model
    name = getattr(model, "name", None)
    alias, version = getattr(model, "alias", None), getattr(model, "version", None)
    if isinstance(name, str) and isinstance(alias, str):
        return f"{name}@{alias}"
    if isinstance(name, str) and isinstance(version, int):
        return f"{name} v{version}"
    cls = type(model)
    kind = f"{cls.__module__}.{cls.__qualname__}"
    return f"{name} ({kind})" if isinstance(name, str) else kind


class ABTestFramework:
    """A/B tests of a candidate model (B) against the production baseline (A).

    Args:
        config: the ``ab_testing`` section as a dict or :class:`~cl_plugin.config.ABTestingConfig` (or the
            whole :class:`~cl_plugin.config.ContinualLearningConfig`); None for defaults.
        store: where tests and results persist (set up when the framework takes it, if nobody did); None
            keeps them in memory.
        **kwargs: config keys, overriding those in ``config``.

    Raises:
        ConfigError: a key is unknown or a value is ill-typed or out of range.

    Example:
        >>> framework = ABTestFramework({"traffic_split": 0.5, "min_samples": 100})
        >>> test_id = framework.create_test("demo", model_a="production", model_b="candidate")
        >>> framework.assign_group(test_id, "user-1") in ("A", "B")
        True
    """

    def __init__(
        self,
        config: dict[str, Any] | ABTestingConfig | ContinualLearningConfig | None = None,
        *,
        store: Store | None = None,
        **kwargs: Any,
    ) -> None:
        self.config = resolve_section(ABTestingConfig, config, component="ABTestFramework", **kwargs)
        if store is not None:
            store.ensure_schema()
        self.store = store
        self._tests: dict[str, _Test] = {}
        self._assigners: dict[str, tuple[Any, int]] = {}
        self._metric_fns: dict[str, MetricFn] = {}
        self._pending: dict[tuple[str, str], GroupStats] = {}
        self._pending_count = 0
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._stop = threading.Event()
        self._flusher: threading.Thread | None = None
        if store is not None:
            _live.add(self)

    def __repr__(self) -> str:
        where = "memory" if self.store is None else repr(self.store)
        return f"ABTestFramework(traffic_split={self.config.traffic_split}, store={where})"

    # -- tests ----------------------------------------------------------------------------------------

    def create_test(
        self, name: str, model_a: object, model_b: object, metric_fn: MetricFn | None = None
    ) -> str:
        """Start a test of ``model_b`` (group B, ``traffic_split`` of the traffic) against ``model_a``.

        While a test of the same name runs, creating it again (in this process or any replica sharing the
        store) returns that test's id, so every replica can call this at startup. The test keeps the
        analysis settings it was created with.

        Args:
            name: the test's name (``"model_v2_test"``).
            model_a: the baseline: a model object or a name (a registry alias such as ``"production"``).
                Only its description is stored.
            model_b: the candidate, likewise.
            metric_fn: ``metric_fn(input_data, output) -> float``, used by :meth:`record_result` when it is
                given no metric. It stays in this process. There is none by default; the project's default
                success metric is an interaction's outcome, :func:`cl_plugin.outcomes.outcome_value` (0.0 on
                an error, a hallucination, a low rating, a thumbs down or a correction; 1.0 when the user
                rated it and nothing failed; None, record nothing, when nobody judged it). It reads the
                interaction, not ``(input_data, output)``, so pass its value as ``metric=``; the decision
                points' tests use it through :meth:`cl_plugin.store.ab.ABTests.outcomes`.

        Returns:
            The test id.

        Raises:
            ABTestError: the name is empty, ``metric_fn`` is not callable, or a running test of that name
                compares other models.
        """
        if not isinstance(name, str) or not name.strip():
            raise ABTestError(f"name must be a non-empty string (got {name!r})", field="name")
        if metric_fn is not None and not callable(metric_fn):
            raise ABTestError(
                f"metric_fn must be callable as metric_fn(input_data, output) (got {metric_fn!r})",
                field="metric_fn",
            )
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", name.strip())[:64]
        wanted = _Test(
            test_id=f"{slug}-{uuid.uuid4().hex[:12]}",
            name=name,
            model_a=describe_model(model_a),
            model_b=describe_model(model_b),
            settings=ABTestSettings.from_config(self.config),
            created_at=time.time(),
        )
        if self.store is not None:
            row = {k: v for k, v in wanted.header().items() if k not in ("status", "ended_at")}
            test = _Test.from_row(self.store.ab.create(row))
        else:
            with self._lock:
                running = [t for t in self._tests.values() if t.name == name and t.status == "running"]
                test = running[0] if running else self._tests.setdefault(wanted.test_id, wanted)
        if (test.model_a, test.model_b) != (wanted.model_a, wanted.model_b):
            raise ABTestError(
                f"a test named {name!r} is running already ({test.test_id}), comparing {test.model_a!r} "
                f"with {test.model_b!r}; end it with end_test({test.test_id!r}) or choose another name",
                field="name",
                test_id=test.test_id,
            )
        self._remember(test)
        if metric_fn is not None:
            self._metric_fns[test.test_id] = metric_fn
        return test.test_id

    def _remember(self, test: _Test) -> _Test:
        self._tests[test.test_id] = test
        self._assigners[test.test_id] = (hash_prefix(test.test_id), b_threshold(test.settings.traffic_split))
        return test

    def _get(self, test_id: str) -> _Test:
        """The test, from this process's cache or else from the store."""
        if not isinstance(test_id, str):
            raise UnknownABTestError(test_id)
        test = self._tests.get(test_id)
        if test is not None:
            return test
        row = self.store.ab.get(test_id) if self.store is not None else None
        if row is None:
            raise UnknownABTestError(test_id)
        return self._remember(_Test.from_row(row))

    # -- assignment -----------------------------------------------------------------------------------

    def assign_group(self, test_id: str, unit_id: str | int | uuid.UUID | bytes) -> str:
        """The group of a unit (user, session or request): ``"B"`` for ``traffic_split`` of units, else ``"A"``.

        The same in every process and run (see :mod:`cl_plugin.abtest.assignment`). An ended test keeps
        assigning as it did.

        Args:
            test_id: the test.
            unit_id: the unit's id.

        Returns:
            ``"A"`` or ``"B"``.

        Raises:
            UnknownABTestError: no such test.
            ABTestError: the unit id is not a str, int, UUID or bytes.
        """
        try:
            prefix, threshold = self._assigners[test_id]
        except (KeyError, TypeError):
            self._get(test_id)
            prefix, threshold = self._assigners[test_id]
        h = prefix.copy()
        h.update(
            unit_id.encode("utf-8", "surrogatepass") if type(unit_id) is str else unit_bytes(unit_id, test_id)
        )
        return "B" if int.from_bytes(h.digest(), "big") < threshold else "A"

    def assign_groups(self, test_id: str, unit_ids: Iterable[str | int | uuid.UUID | bytes]) -> list[str]:
        """:meth:`assign_group` for many units at once (about a third faster per unit).

        Raises:
            UnknownABTestError: no such test.
            ABTestError: a unit id is not a str, int, UUID or bytes.
        """
        if not isinstance(test_id, str) or test_id not in self._assigners:
            self._get(test_id)
        prefix, threshold = self._assigners[test_id]
        copy, from_bytes = prefix.copy, int.from_bytes
        out = []
        for unit in unit_ids:
            h = copy()
            h.update(
                unit.encode("utf-8", "surrogatepass") if type(unit) is str else unit_bytes(unit, test_id)
            )
            out.append("B" if from_bytes(h.digest(), "big") < threshold else "A")
        return out

    # -- results --------------------------------------------------------------------------------------

    def record_result(
        self,
        test_id: str,
        group: str,
        input_data: Any = None,
        output: Any = None,
        metric: float | None = None,
    ) -> float:
        """Record the outcome of one request served by ``group``'s model.

        Args:
            test_id: the test.
            group: ``"A"`` or ``"B"``, as :meth:`assign_group` returned.
            input_data: the request, passed to ``metric_fn``.
            output: the model's output, passed to ``metric_fn``.
            metric: the outcome (a finite number; 0 or 1 for a binary metric); None computes
                ``metric_fn(input_data, output)``.

        Returns:
            The metric recorded.

        Raises:
            UnknownABTestError: no such test.
            ABTestEndedError: the test has ended.
            ABTestError: the group is not A or B, or the metric is missing, not a number or not finite.
        """
        test = self._get(test_id)
        if group != "A" and group != "B":
            raise ABTestError(
                f"group must be 'A' or 'B', as assign_group() returns (got {group!r})",
                field="group",
                test_id=test_id,
            )
        if metric is None:
            fn = self._metric_fns.get(test_id)
            if fn is None:
                raise ABTestError(
                    f"no metric given and test {test.name!r} has no metric_fn in this process; pass metric=..., "
                    "or call create_test() with metric_fn= here (it returns the running test's id)",
                    field="metric",
                    test_id=test_id,
                )
            metric = fn(input_data, output)
        value = _metric_value(metric, test)
        if self.store is None:
            with self._lock:
                if test.status != "running":
                    raise ABTestEndedError(test_id, test.name)
                test.groups[group].add(value)
            return value
        if test.status != "running":
            raise ABTestEndedError(test_id, test.name)
        if self.config.durability == "sync":
            one = GroupStats()
            one.add(value)
            self._write({(test_id, group): one})
            return value
        with self._lock:
            stats = self._pending.get((test_id, group))
            if stats is None:
                stats = self._pending[(test_id, group)] = GroupStats()
            stats.add(value)
            self._pending_count += 1
            # After close() nothing flushes on a timer or at exit any more: flush right away.
            due = self._pending_count >= self.config.buffer_size or self._stop.is_set()
        if due:
            self.flush()
        elif self._flusher is None:
            self._start_flusher()
        return value

    def sync_results(self, test_id: str, totals: Mapping[str, GroupStats]) -> dict[str, int]:
        """Bring a test's groups up to summaries of all its results computed elsewhere, such as from the
        decisions a :class:`~cl_plugin.serving.LearnedRouter` recorded (see
        :meth:`cl_plugin.store.ab.ABTests.outcomes`): the results beyond those the test holds are added.
        Calling it again with the same totals adds nothing.

        Args:
            test_id: the test.
            totals: ``{"A": GroupStats, "B": GroupStats}``, every result of each group so far.

        Returns:
            How many results were added to each group.

        Raises:
            UnknownABTestError: no such test.
        """
        test, a, b = self._current(test_id)
        deltas: dict[tuple[str, str], GroupStats] = {}
        for variant, held in zip(_VARIANTS, (a, b), strict=True):
            total = totals.get(variant)
            if total is not None and total.n > held.n:
                deltas[(test_id, variant)] = total.minus(held)
        if deltas and test.status == "running":
            if self.store is None:
                with self._lock:
                    for (_, variant), delta in deltas.items():
                        test.groups[variant].merge(delta)
            else:
                self._write(deltas)
        return {variant: delta.n for (_, variant), delta in deltas.items()}

    def flush(self) -> None:
        """Merge every buffered result into the store, in one transaction.

        Raises:
            StoreError: the store failed; the results stay buffered for the next flush.
        """
        if self.store is None:
            return
        with self._flush_lock:
            with self._lock:
                pending, self._pending, self._pending_count = self._pending, {}, 0
            if not pending:
                return
            try:
                self._write(pending)
            except BaseException:
                with self._lock:
                    for key, stats in pending.items():
                        newer = self._pending.get(key)
                        if newer is not None:
                            stats.merge(newer)
                        self._pending[key] = stats
                    self._pending_count = sum(s.n for s in self._pending.values())
                raise

    def _write(self, deltas: dict[tuple[str, str], GroupStats]) -> None:
        assert self.store is not None
        rows = [
            {"test_id": t, "variant": v, "n": s.n, "mean": s.mean, "m2": s.m2, "non_binary": s.non_binary}
            for (t, v), s in deltas.items()
        ]
        for test_id, status in self.store.ab.add_results(rows).items():
            # Another replica may have ended the test: stop taking its results here too.
            if status != "running" and test_id in self._tests:
                self._tests[test_id].status = status

    def _start_flusher(self) -> None:
        with self._lock:
            if self._flusher is not None or self._stop.is_set():
                return
            self._flusher = threading.Thread(
                target=_flush_periodically,
                args=(weakref.ref(self), self._stop, self.config.flush_interval),
                name="cl_plugin-abtest-flush",
                daemon=True,
            )
        self._flusher.start()

    def close(self) -> None:
        """Stop the timed flushes and flush what is buffered; results recorded later are written at once.
        Also runs at interpreter exit."""
        self._stop.set()
        if self._flusher is not None:
            self._flusher.join(5.0)
        self.flush()
        _live.discard(self)

    def __enter__(self) -> ABTestFramework:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- analysis -------------------------------------------------------------------------------------

    def _current(self, test_id: str) -> tuple[_Test, GroupStats, GroupStats]:
        test = self._get(test_id)
        if self.store is None:
            with self._lock:
                a, b = (GroupStats(s.n, s.mean, s.m2, s.non_binary) for s in test.groups.values())
            return test, a, b
        self.flush()
        row = self.store.ab.get(test_id)
        assert row is not None
        fresh = self._remember(_Test.from_row(row))
        a, b = (_group_stats(row["groups"][v]) for v in _VARIANTS)
        return fresh, a, b

    def get_test_status(self, test_id: str) -> dict[str, Any]:
        """The test's definition and its analysis now (the final one once it has ended).

        Returns:
            ``test_id``, ``name``, ``model_a``, ``model_b``, ``status`` (``running`` or ``ended``),
            ``created_at``, ``ended_at``, ``settings``, and the analysis described in
            :func:`~cl_plugin.abtest.analysis.analyse` (``recommendation``, ``reason``, ``groups``,
            ``effect``, ``p_value``, ``confidence_interval``, ``sample_ratio``, ...). ``sample_ratio`` holds
            the always-valid sample-ratio check (``p_value``, ``bayes_factor``, ``alert``) computed from the
            counts now, and the chi-square figure under ``fixed_horizon``.

        Raises:
            UnknownABTestError: no such test.
        """
        test, a, b = self._current(test_id)
        if test.result is not None:
            return test.header() | test.result
        return test.header() | analyse(test.settings, a, b)

    def end_test(self, test_id: str) -> dict[str, Any]:
        """End the test and return its final analysis; it takes no more results. Ending it again returns
        the same analysis.

        Returns:
            As :meth:`get_test_status`, with ``status`` ``"ended"``; ``recommendation`` is ``"Deploy B"``,
            ``"Keep A"`` or, when the evidence does not yet support either, ``"Continue"``.

        Raises:
            UnknownABTestError: no such test.
        """
        test = self._get(test_id)
        if self.store is None:
            with self._lock:
                if test.result is None:
                    test.result = analyse(test.settings, *test.groups.values())
                    test.status, test.ended_at = "ended", time.time()
            return test.header() | test.result
        self.flush()

        def conclude(row: dict[str, Any]) -> dict[str, Any]:
            return analyse(test.settings, *(_group_stats(row["groups"][v]) for v in _VARIANTS))

        row = self.store.ab.end(test_id, conclude)
        assert row is not None
        ended = self._remember(_Test.from_row(row))
        return ended.header() | (ended.result or {})


def _group_stats(row: dict[str, Any]) -> GroupStats:
    return GroupStats(int(row["n"]), float(row["mean"]), float(row["m2"]), int(row["non_binary"]))


def _metric_value(metric: object, test: _Test) -> float:
    """The metric as a float, or an error that names the field and the fix."""
    if type(metric) is not float and (isinstance(metric, str | bytes) or not isinstance(metric, Real)):
        raise ABTestError(
            f"metric must be a number (got {type(metric).__name__} {metric!r:.80}); return a float from "
            "metric_fn or pass metric=<float>",
            field="metric",
            test_id=test.test_id,
        )
    try:
        value = float(metric)
    except OverflowError:  # an int such as 10**400
        value = math.inf
    if not math.isfinite(value):
        raise ABTestError(
            f"metric must be finite (got {value}); record failures as a number (0 for a failed request) "
            "or leave the request out",
            field="metric",
            test_id=test.test_id,
        )
    if test.settings.metric_type == "binary" and value != 0.0 and value != 1.0:
        raise ABTestError(
            f"test {test.name!r} has a binary metric, so metric must be 0 or 1 (got {value}); create the test "
            "with metric_type='continuous' or 'auto' for other values",
            field="metric",
            test_id=test.test_id,
        )
    return value


def _flush_periodically(ref: weakref.ref[ABTestFramework], stop: threading.Event, interval: float) -> None:
    while not stop.wait(interval):
        framework = ref()
        if framework is None:
            return
        try:
            framework.flush()
        except Exception:  # kept buffered; the next flush retries
            log.exception("A/B test results could not be flushed; they stay buffered and will be retried")
        del framework


@atexit.register
def _flush_at_exit() -> None:
    for framework in list(_live):
        try:
            framework.close()
        except Exception:  # exit must go on
            log.exception("A/B test results could not be flushed at exit")
