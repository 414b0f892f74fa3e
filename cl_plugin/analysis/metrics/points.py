"""Per decision point: how often it decides, how much of it is labeled, how right and how calibrated it is.

:func:`point_metrics` reads every decision of the store's decision points in one ordered pass (decisions
joined to their interaction's rating and to its label from the annotation queue), grouped per point and per
interaction as the rows stream by, so memory grows with the number of points and of confident decisions,
not with the store. Figures about an interaction (its rating, its label) are read against the first
decision it made at the point, as :func:`~cl_plugin.store.points.point_decisions` and the training rows of
:func:`~cl_plugin.learning.points.point_rows` do; how decisions were served is counted over every decision.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy import and_, select

from cl_plugin.analysis.metrics.measures import Calibration, Rate, expected_calibration_error
from cl_plugin.records import PointRef, is_finite_number, rating_outcome
from cl_plugin.store.filters import interaction_conditions
from cl_plugin.store.points import DecisionPoint, _parsed, decision_points
from cl_plugin.store.tables import AnnotationItem, Decision, Interaction

if TYPE_CHECKING:
    from cl_plugin.store import Store

__all__ = ["SERVED_BY", "PointMetrics", "point_metrics"]

#: How a :class:`~cl_plugin.serving.LearnedRouter` decision was served, as its ``statistics`` record it.
SERVED_BY = ("model", "fallback", "exploration")
#: The label keys that name the right option of an annotated interaction, in order of preference.
_LABEL_KEYS = ("option", "agent")


class Versions(Protocol):
    """What the figures read of a model registry (:class:`~cl_plugin.learning.registry.ModelRegistry` is one):
    analysis sits below learning, so it names the two calls it makes, not the class."""

    def get_alias(self, name: str, alias: str) -> Any: ...

    def versions(self, name: str) -> list[Any]: ...


_D = Decision.__table__.c  # type: ignore[attr-defined]
_I = Interaction.__table__.c  # type: ignore[attr-defined]
_A = AnnotationItem.__table__.c  # type: ignore[attr-defined]


@dataclass(frozen=True)
class PointMetrics:
    """What the store knows of one decision point's quality.

    Attributes:
        point: the point as :func:`~cl_plugin.store.points.decision_points` lists it (its decisions,
            interactions, options chosen and declared).
        model_name: the registry name of the point's router (:attr:`PointRef.model_name`).
        rated: interactions with a rating, of the point's interactions.
        annotated: interactions with a label from the annotation queue, of the point's interactions.
        accuracy: labeled interactions whose choice equals the label's ``option`` (or ``agent``), of the
            labeled ones; ``rate`` is None without labels. A label counts when it names the point
            (``{"option": ..., "point": model_name}``, as ``cl-plugin annotate`` writes it) or, naming no
            point, names one of the point's options.
        good_rate: each option (declared ones included) -> good ratings of the interactions that chose it
            there, of those rated good or bad (:func:`~cl_plugin.records.rating_outcome`).
        calibration: the confidence of the decisions that gave one against their interaction's rating
            (good = right); None when fewer than ``min_calibrated`` such decisions were rated good or bad.
        served: ``"model"``, ``"fallback"``, ``"exploration"`` -> decisions served that way, of the decisions
            a :class:`~cl_plugin.serving.LearnedRouter` recorded (``n`` is 0 where none did).
        fallback_reasons: why the rule decided (``"no_model"``, ``"low_confidence"``, ...) -> how many of
            the decisions served by the rule fell back for it.
        production_version, candidate_version: the router versions the registry's aliases point to (None
            when unset or when no registry was given).
        versions: router versions registered for the point (0 when no registry was given).
    """

    point: DecisionPoint
    model_name: str
    rated: Rate
    annotated: Rate
    accuracy: Rate
    good_rate: dict[str, Rate] = field(default_factory=dict)
    calibration: Calibration | None = None
    served: dict[str, Rate] = field(default_factory=dict)
    fallback_reasons: dict[str, int] = field(default_factory=dict)
    production_version: int | None = None
    candidate_version: int | None = None
    versions: int = 0

    @property
    def key(self) -> tuple[str | None, str | None, str]:
        """``(graph_name, node, kind)``."""
        return self.point.key

    @property
    def options(self) -> dict[str, int]:
        """Every option -> how often it was chosen: the chosen ones, most first, then the declared ones (0)."""
        return {**self.point.options, **dict.fromkeys(self.point.declared, 0)}


class _Tally:
    """The running counts of one point while its decisions stream by."""

    def __init__(self) -> None:
        self.outcomes: Counter[tuple[str, str]] = Counter()
        self.labels: Counter[tuple[str, str, bool]] = Counter()
        self.confidence: list[float] = []
        self.good: list[bool] = []
        self.served: Counter[str] = Counter()
        self.reasons: Counter[str] = Counter()

    def decision(self, statistics: Any) -> None:
        served_by = statistics.get("served_by") if isinstance(statistics, Mapping) else None
        if not isinstance(served_by, str):
            return
        self.served[served_by] += 1
        reason = statistics.get("fell_back")
        if served_by == "fallback" and isinstance(reason, str):
            self.reasons[reason] += 1

    def first(
        self, chosen: str, confidence: Any, outcome: str | None, truth: tuple[str, bool] | None
    ) -> None:
        if outcome is not None:
            self.outcomes[chosen, outcome] += 1
            if is_finite_number(confidence) and 0.0 <= confidence <= 1.0:
                self.confidence.append(float(confidence))
                self.good.append(outcome == "good")
        if truth is not None:
            self.labels[(chosen, *truth)] += 1

    def accuracy(self, options: list[str]) -> Rate:
        """Labels naming this point, or naming one of its options, against the choices made."""
        counted = [(c == t, n) for (c, t, named), n in self.labels.items() if named or t in options]
        return Rate.of(sum(n for right, n in counted if right), sum(n for _, n in counted))


def point_metrics(
    store: Store,
    registry: Versions | None = None,
    *,
    min_calibrated: int = 20,
    min_score: float = 4.0,
    max_score: float = 2.0,
    **filters: Any,
) -> list[PointMetrics]:
    """Accuracy, label coverage, calibration, serving and model versions of every decision point.

    Args:
        store: the store.
        registry: the :class:`~cl_plugin.learning.registry.ModelRegistry` the maintenance graph promotes into; its
            ``production`` and ``candidate`` aliases of each point's router are reported. None leaves the
            versions out.
        min_calibrated: fewest confident decisions rated good or bad for a calibration figure.
        min_score: a feedback score at or above this is a good rating.
        max_score: a feedback score at or below this is a bad rating.
        **filters: the filters of :meth:`Store.query_interactions` (``start_time``, ``graph_name``, ...).

    Returns:
        One :class:`PointMetrics` per point, in the order of :func:`~cl_plugin.store.points.decision_points`
        (most decisions first).

    Raises:
        ValueError: ``min_calibrated`` is below 1 or ``max_score`` is not below ``min_score``.
        StoreSchemaError: the database is behind the newest migration.
    """
    if isinstance(min_calibrated, bool) or not isinstance(min_calibrated, int) or min_calibrated < 1:
        raise ValueError(f"min_calibrated must be an integer >= 1 (got {min_calibrated!r})")
    if not max_score < min_score:
        raise ValueError(
            f"max_score (bad ratings) must be below min_score (good ratings); got {max_score} and {min_score}"
        )
    points = decision_points(store, **filters)
    tallies = _tally(store, min_score, max_score, filters)
    return [_metrics(p, tallies.get(p.key) or _Tally(), registry, min_calibrated) for p in points]


def _tally(
    store: Store, min_score: float, max_score: float, filters: dict[str, Any]
) -> dict[tuple[Any, ...], _Tally]:
    """One ordered pass over every decision with a choice: each point's counts."""
    joined = Decision.__table__.join(Interaction.__table__, _D.interaction_id == _I.interaction_id).outerjoin(
        AnnotationItem.__table__, and_(_A.interaction_id == _D.interaction_id, _A.status == "labeled")
    )
    point = (_I.graph_name, _D.node, _D.kind)
    query = (
        select(
            *point,
            _D.interaction_id,
            _D.chosen,
            _D.confidence,
            _D.statistics,
            _I.user_feedback_score,
            _I.thumbs_up_down,
            _I.corrections,
            _A.label,
        )
        .select_from(joined)
        .where(_D.chosen.is_not(None), *interaction_conditions(**filters))
        .order_by(*point, _D.interaction_id, _D.timestamp, _D.decision_id)
    )
    tallies: dict[tuple[Any, ...], _Tally] = {}
    last: tuple[Any, ...] | None = None
    with store.read_connection() as conn:
        rows = conn.execution_options(stream_results=True, yield_per=5000).execute(query)
        for graph, node, kind, iid, chosen, confidence, statistics, score, thumbs, corrections, label in rows:
            key = (graph, node, kind)
            tally = tallies.setdefault(key, _Tally())
            tally.decision(_parsed(statistics))
            if (key, iid) == last:
                continue
            last = (key, iid)
            outcome = rating_outcome(score, thumbs, corrections, min_score=min_score, max_score=max_score)
            tally.first(chosen, confidence, outcome, _truth(_parsed(label), PointRef(*key).model_name))
    return tallies


def _metrics(
    point: DecisionPoint, tally: _Tally, registry: Versions | None, min_calibrated: int
) -> PointMetrics:
    name = PointRef(*point.key).model_names()["router"]
    production = candidate = None
    versions = 0
    if registry is not None:
        production, candidate = (
            None if (v := registry.get_alias(name, alias)) is None else v.version
            for alias in ("production", "candidate")
        )
        versions = len(registry.versions(name))
    served_n = sum(tally.served.values())
    served = {how: Rate.of(tally.served[how], served_n) for how in (*SERVED_BY, *sorted(tally.served))}
    calibration = None
    if len(tally.confidence) >= min_calibrated:
        calibration = expected_calibration_error(tally.confidence, tally.good)
    return PointMetrics(
        point=point,
        model_name=name,
        rated=Rate.of(point.rated, point.interactions),
        annotated=Rate.of(point.annotated, point.interactions),
        good_rate={
            option: Rate.of(
                tally.outcomes[option, "good"], tally.outcomes[option, "good"] + tally.outcomes[option, "bad"]
            )
            for option in point.all_options
        },
        accuracy=tally.accuracy(point.all_options),
        calibration=calibration,
        served=served,
        fallback_reasons=dict(tally.reasons.most_common()),
        production_version=production,
        candidate_version=candidate,
        versions=versions,
    )


def _truth(label: Any, model_name: str) -> tuple[str, bool] | None:
    """The option a label names (its ``option``, else ``agent``) and whether it names this point; None for a
    label of another point."""
    if not isinstance(label, Mapping) or label.get("point") not in (None, model_name):
        return None
    option = next((label[k] for k in _LABEL_KEYS if isinstance(label.get(k), str)), None)
    return None if option is None else (option, label.get("point") == model_name)
