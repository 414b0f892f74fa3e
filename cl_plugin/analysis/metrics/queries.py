"""Quality metrics computed in the database (see :mod:`cl_plugin.analysis.metrics`)."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson
from sqlalchemy import Integer, and_, case, cast, func, literal, or_, select, tuple_
from sqlalchemy import Table as SATable
from sqlalchemy.dialects import postgresql

from cl_plugin.analysis.metrics.measures import (
    _EPS,
    _QUANTILES,
    FailureRates,
    Latency,
    MetricOptions,
    Rate,
    RouterMetrics,
    Window,
    _bounds,
    _calibration,
    _groups,
    _router_accuracy,
    _satisfaction,
    _width,
    latency_summary,
)
from cl_plugin.capture.sampling import DetailSample
from cl_plugin.outcomes import OutcomeRate
from cl_plugin.store.filters import interaction_conditions
from cl_plugin.store.tables import Decision, Interaction

if TYPE_CHECKING:
    from cl_plugin.store import Store

__all__ = [
    "router_metrics",
    "store_metrics",
    "store_metrics_by_window",
]

_INTERACTIONS: SATable = Interaction.__table__  # type: ignore[assignment]
_DECISIONS: SATable = Decision.__table__  # type: ignore[assignment]


# -- interactions, in the database -----------------------------------------------------------------------


def _floor(expr: Any, dialect: str) -> Any:
    # CAST truncates toward zero, which is the floor on the non-negative values it is given here.
    return func.floor(expr) if dialect == "postgresql" else cast(expr, Integer)


def _label(c: Any, key: str, dialect: str) -> tuple[Any, Any]:
    """The label expression and the condition that it is a JSON string."""
    if dialect == "postgresql":
        field = cast(c["metadata"], postgresql.JSON)[key]
        return field.astext, func.json_typeof(field) == "string"
    path = f'$."{key}"'
    return func.json_extract(c["metadata"], path), func.json_type(c["metadata"], path) == "text"


def _meta(c: Any, key: str, dialect: str) -> Any:
    """A metadata key's value as SQL: text on PostgreSQL, the JSON scalar on SQLite (false reads as 0)."""
    if dialect == "postgresql":
        return cast(c["metadata"], postgresql.JSON)[key].astext
    return func.json_extract(c["metadata"], f'$."{key}"')


def _in_detail_sample(c: Any, dialect: str) -> Any:
    """Interactions whose detail rows belong to the unbiased sample: captured unsampled, or chosen."""
    sampled = _meta(c, "sampled", dialect)
    return or_(sampled.is_(None), sampled != ("false" if dialect == "postgresql" else 0))


def _detail_sample(store: Store, conds: list[Any]) -> DetailSample:
    """The :class:`DetailSample` of the interactions matching ``conds``, counted in the database."""
    c, dialect = _INTERACTIONS.c, store.dialect
    inside = _in_detail_sample(c, dialect)
    kept = _meta(c, "detail_kept", dialect).is_not(None)
    rate = _meta(c, "sample_rate", dialect)
    stmt = select(
        func.count(),
        func.sum(case((inside, 1), else_=0)),
        func.sum(case((kept, 1), else_=0)),
        func.max(cast(rate, postgresql.DOUBLE_PRECISION) if dialect == "postgresql" else rate),
    ).where(*conds)
    with store._lock, store.engine.connect() as conn:
        n, sampled, kept_n, max_rate = conn.execute(stmt).one()
    return DetailSample(
        int(n), int(sampled or 0), int(kept_n or 0), None if max_rate is None else float(max_rate)
    )


def _sql_rows(
    store: Store, window: Window | None, o: MetricOptions, conds: list[Any]
) -> dict[int, dict[str, Any]]:
    """Aggregates per bucket index (0 for the one group when ``window`` is None), read in one snapshot."""
    c, dialect = _INTERACTIONS.c, store.dialect
    width, shift = _width(window) if window is not None else (0.0, 0.0)
    bucket = _floor((c.timestamp + shift) / width, dialect) if window is not None else literal(0)
    score, lat, quality, failed = c.user_feedback_score, c.latency_ms, c.retrieval_quality, c.retrieval_failed
    conf, thumbs = c.agent_confidence, c.thumbs_up_down
    error, flagged = c.error_occurred, c.hallucination_detected  # error_occurred only, as in measures.py
    low, down = score < o.low_rating_threshold, thumbs == "down"
    # The store writes corrections as the JSON text of a non-empty list, or NULL (outcomes.corrected).
    corrected = and_(c.corrections.is_not(None), c.corrections.not_in(("", "[]", "null")))
    bad = or_(low, down, corrected)
    # The stages of OutcomeRate: an unknown error or hallucination flag does not stop the chain.
    no_error = func.coalesce(error, 0) != 1
    neither = and_(no_error, func.coalesce(flagged, 0) != 1)
    judged = and_(neither, or_(score.is_not(None), thumbs.in_(("up", "down"))))
    # Each column is 1 (failed), 0 (observed, not failed) or NULL (not observable): SUM counts, COUNT is n.
    signals = {
        "low_rating": case((low, 1), (score.is_not(None), 0)),
        "thumbs_down": case((down, 1), (thumbs == "up", 0)),
        "correction": case((corrected, 1), else_=0),
        "error": error,
        "hallucination": flagged,
        "poor_retrieval": case(
            (or_(failed == 1, quality < o.poor_retrieval_quality), 1),
            (or_(failed.is_not(None), quality.is_not(None)), 0),
        ),
        "slow": case((lat > o.slow_response_ms, 1), (lat.is_not(None), 0)),
        "low_confidence": case((conf < o.low_confidence, 1), (conf.is_not(None), 0)),
        "outcome_failed": case((or_(error == 1, flagged == 1, bad), 1), else_=0),
        "outcome_hallucination": case(
            (and_(no_error, flagged == 1), 1), (and_(no_error, flagged.is_not(None)), 0)
        ),
        "outcome_verdict": case((and_(judged, bad), 1), (judged, 0)),
    }
    r = select(bucket.label("b"), score, lat, *(v.label(k) for k, v in signals.items())).where(*conds)
    r = r.subquery()
    s, ms = r.c.user_feedback_score, r.c.latency_ms
    aggregates = [
        func.count().label("total"),
        func.count(s).label("rated"),
        func.sum(s).label("score_sum"),
        func.sum(s * s).label("score_sq"),
        func.count(ms).label("n_lat"),
        func.sum(ms).label("lat_sum"),
        func.max(ms).label("lat_max"),
        *(func.sum(r.c[k]).label(f"{k}_count") for k in signals),
        *(func.count(r.c[k]).label(f"{k}_n") for k in signals),
    ]
    if dialect == "postgresql":
        quantiles = postgresql.array([literal(q) for q in _QUANTILES])
        aggregates.append(func.percentile_cont(quantiles).within_group(ms).label("percentiles"))
    if window is None:  # one row, even for no interactions
        grouped = select(literal(0).label("b"), *aggregates)
    else:
        grouped = select(r.c.b, *aggregates).group_by(r.c.b)
    label, is_label = _label(c, o.label_key, dialect)
    n_bins = o.n_bins
    routed = (
        select(
            bucket.label("b"),
            label.label("label"),
            case((c.agent_selected == label, 1), else_=0).label("ok"),
            conf,
            case((conf * n_bins >= n_bins - 1, n_bins - 1), else_=_floor(conf * n_bins, dialect)).label(
                "bin"
            ),
        )
        .where(*conds, is_label, c.agent_selected.is_not(None))
        .subquery()
    )
    t = routed.c
    by_label = select(t.b, t.label, t.bin, func.count(), func.sum(t.ok), func.sum(t.agent_confidence))
    out: dict[int, dict[str, Any]] = {}
    with store.read_connection() as conn:
        if dialect == "postgresql":  # one snapshot for every statement
            conn = conn.execution_options(isolation_level="REPEATABLE READ")
        for row in conn.execute(grouped):
            out[int(row.b)] = {"agg": row._mapping, "latencies": None, "routed": []}
        for b, *rest in conn.execute(by_label.group_by(t.b, t.label, t.bin)):
            out[int(b)]["routed"].append(rest)
        if dialect != "postgresql":
            res = conn.execute(select(r.c.b, ms).where(ms.is_not(None)))
            pairs = res.cursor.fetchall()  # plain tuples: numpy reads them 20x faster than Row objects
    if dialect != "postgresql":
        # SQLite has no percentile function: the latency column comes back unordered and numpy interpolates.
        arr = np.array(pairs, dtype=float).reshape(-1, 2)
        by_bucket = _groups(arr[:, 0])
        for b, entry in out.items():
            entry["latencies"] = arr[by_bucket.get(b, []), 1]
    return out


def _from_sql(entry: dict[str, Any], o: MetricOptions) -> dict[str, Any]:
    a = entry["agg"]
    total, rated, n_lat = int(a["total"]), int(a["rated"]), int(a["n_lat"])
    s_sum = float(a["score_sum"] or 0.0)
    mean = s_sum / rated if rated else None
    var = (float(a["score_sq"]) - s_sum * s_sum / rated) / (rated - 1) if rated > 1 else 0.0
    if entry["latencies"] is None:
        p50, p95, p99 = a["percentiles"] or (None, None, None)
        latency = Latency(n_lat, float(a["lat_sum"]) / n_lat if n_lat else None, p50, p95, p99, a["lat_max"])
    else:
        latency = latency_summary(entry["latencies"])
    rates = {
        k: Rate.of(int(a[f"{k}_count"] or 0), int(a[f"{k}_n"]))
        for k in (
            *FailureRates.OUTCOMES,
            *FailureRates.DIAGNOSTICS,
            "outcome_hallucination",
            "outcome_verdict",
        )
    }
    hallucination, verdict = rates.pop("outcome_hallucination"), rates.pop("outcome_verdict")
    outcome = OutcomeRate.estimate(
        interactions=total,
        failures=int(a["outcome_failed_count"] or 0),
        errors=rates["error"].count,
        error_known=rates["error"].n,
        hallucinations=hallucination.count,
        hallucination_checked=hallucination.n,
        bad_verdicts=verdict.count,
        verdicts=verdict.n,
    )
    down = rates["thumbs_down"]
    counts: dict[str, tuple[int, int]] = {}
    bins = np.zeros((3, o.n_bins))
    for label, b, n, ok, conf_sum in entry["routed"]:
        m, k = counts.get(label, (0, 0))
        counts[label] = (m + n, k + int(ok))
        if b is not None:
            bins[:, int(b)] += (n, float(conf_sum), int(ok))
    return {
        "interactions": total,
        "satisfaction": _satisfaction(total, rated, mean, var, down.n - down.count, down.count, o.confidence),
        "latency": latency,
        "failures": FailureRates(outcome=outcome, **rates),
        "routing": _router_accuracy(counts),
        "calibration": _calibration(bins[0].astype(int), bins[1], bins[2]),
    }


def store_metrics(
    store: Store,
    *,
    window: Window | None = None,
    start_time: float | None = None,
    end_time: float | None = None,
    options: MetricOptions | None = None,
    **filters: Any,
) -> dict[str, Any]:
    """Every interaction metric, aggregated in the database; equal to :func:`interaction_metrics` on the rows.

    Args:
        store: the store.
        window: a period length (``"hour"``, ``"day"``, ``"week"`` or seconds): the metrics cover the period
            that ends at ``end_time`` (default: now), or that starts at ``start_time`` when only that is given.
        start_time: first timestamp included.
        end_time: first timestamp excluded.
        options: thresholds and settings.
        **filters: the filters of :meth:`Store.query_interactions` (``agent``, ``graph_name``, ...).

    Returns:
        ``start_time`` and ``end_time`` (the period covered, None when open) and the keys of
        :func:`interaction_metrics`.

    Raises:
        ValueError: ``window`` together with both ``start_time`` and ``end_time``, or an unknown window.
        TypeError: an unknown filter.
    """
    o = options or MetricOptions()
    if window is not None:
        if start_time is not None and end_time is not None:
            raise ValueError("give window with at most one of start_time and end_time")
        width, _ = _width(window)
        if start_time is None:
            end_time = time.time() if end_time is None else end_time
            start_time = end_time - width
        else:
            end_time = start_time + width
    conds = interaction_conditions(start_time=start_time, end_time=end_time, **filters)
    entry = _sql_rows(store, None, o, conds)[0]
    return {"start_time": start_time, "end_time": end_time, **_from_sql(entry, o)}


def store_metrics_by_window(
    store: Store,
    window: Window = "day",
    *,
    start_time: float | None = None,
    end_time: float | None = None,
    options: MetricOptions | None = None,
    **filters: Any,
) -> list[dict[str, Any]]:
    """:func:`store_metrics` per time bucket, grouped in the database; equal to :func:`metrics_by_window`.

    Args:
        store: the store.
        window: ``"hour"``, ``"day"``, ``"week"`` (UTC; weeks start on Monday) or a bucket width in seconds.
        start_time: first timestamp included.
        end_time: first timestamp excluded.
        options: thresholds and settings.
        **filters: the filters of :meth:`Store.query_interactions`.

    Returns:
        One dict per bucket with interactions, oldest first: ``start_time``, ``end_time`` and the keys of
        :func:`interaction_metrics`.
    """
    o = options or MetricOptions()
    width, shift = _width(window)
    conds = interaction_conditions(start_time=start_time, end_time=end_time, **filters)
    rows = _sql_rows(store, window, o, conds)
    return [{**_bounds(b, width, shift), **_from_sql(rows[b], o)} for b in sorted(rows)]


# -- the router, from its route decisions ----------------------------------------------------------------


def _probabilities(alternatives: Any) -> dict[str, float] | None:
    """Normalized probabilities from a decision's ``alternatives``, or None when it holds none."""
    if not isinstance(alternatives, Mapping) or not alternatives:
        return None
    values = list(alternatives.values())
    if not all(type(v) in (int, float) and math.isfinite(v) and v >= 0 for v in values):
        return None
    total = float(sum(values))
    return {str(k): v / total for k, v in alternatives.items()} if total > 0 else None


def _first_routes(store: Store, label_key: str, chunk_size: int, filters: dict[str, Any]) -> Iterator[tuple]:
    """``(label, chosen, probabilities)`` of the first route decision with probabilities of each labeled
    interaction (or its first route decision, when none has any), read in keyset-paged chunks. Interactions
    outside the capture sample are left out, even when their decisions were kept because they raised."""
    d, c = _DECISIONS.c, _INTERACTIONS.c
    label, is_label = _label(c, label_key, store.dialect)
    key = (d.interaction_id, d.timestamp, d.decision_id)
    base = (
        select(*key, d.chosen, d.alternatives, label)
        .select_from(_DECISIONS.join(_INTERACTIONS, c.interaction_id == d.interaction_id))
        .where(
            d.kind == "route",
            is_label,
            _in_detail_sample(c, store.dialect),
            *interaction_conditions(**filters),
        )
        .order_by(*key)
        .limit(chunk_size)
    )
    current: str | None = None
    best: tuple | None = None
    after: tuple | None = None
    while True:
        stmt = base if after is None else base.where(tuple_(*key) > tuple_(*after))
        with store.read_connection() as conn:
            chunk = conn.execute(stmt).all()
        for iid, _, _, chosen, alternatives, y in chunk:
            if iid != current:
                if best is not None:
                    yield best
                current, best = iid, None
            if best is None or best[2] is None:
                probs = _probabilities(orjson.loads(alternatives)) if alternatives else None
                if best is None or probs is not None:
                    best = (y, chosen, probs)
        if len(chunk) < chunk_size:
            if best is not None:
                yield best
            return
        after = tuple(chunk[-1][:3])


def router_metrics(
    store: Store,
    *,
    label_key: str = "best_agent",
    n_bins: int = 10,
    chunk_size: int = 5000,
    **filters: Any,
) -> RouterMetrics:
    """Router accuracy and calibration from its route decisions, against labels in interaction metadata.

    Each labeled interaction counts once, through its first route decision with probabilities (the
    ``alternatives`` of the decision, normalized to sum to one), or its first route decision when none has
    any. The prediction is the top-probability agent (ties to the one listed first), else the chosen option.
    Decisions are streamed in chunks; memory holds the bins and per-label counts only. With capture
    sampling (:mod:`cl_plugin.capture.sampling`) only the interactions of the unbiased sample count (those kept
    because they raised would favour the failures), and ``sample`` says how many of the labeled ones that is.

    Args:
        store: the store.
        label_key: the ``metadata`` key holding the right agent.
        n_bins: equal-width bins of the calibration error.
        chunk_size: decisions per read.
        **filters: the filters of :meth:`Store.query_interactions`, applied to the interactions.

    Returns:
        Accuracy, calibration, and Brier score and log loss over the decisions with probabilities, and
        the labeled interactions they were drawn from.
    """
    MetricOptions(label_key=label_key, n_bins=n_bins)  # validates both
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1 (got {chunk_size})")
    counts: dict[str, tuple[int, int]] = {}
    bins = np.zeros((3, n_bins))
    brier = loss = 0.0
    for label, chosen, probs in _first_routes(store, label_key, chunk_size, filters):
        predicted = max(probs, key=probs.__getitem__) if probs else chosen
        if predicted is None:
            continue
        ok = predicted == label
        n, k = counts.get(label, (0, 0))
        counts[label] = (n + 1, k + ok)
        if probs:
            top = probs[predicted]
            bins[:, min(math.floor(top * n_bins), n_bins - 1)] += (1, top, ok)
            p_true = probs.get(label, 0.0)
            brier += sum(p * p for p in probs.values()) - 2 * p_true + 1
            loss -= math.log(min(max(p_true, _EPS), 1 - _EPS))
    m = int(bins[0].sum())
    return RouterMetrics(
        accuracy=_router_accuracy(counts),
        calibration=_calibration(bins[0].astype(int), bins[1], bins[2]),
        probabilistic=m,
        brier=brier / m if m else None,
        log_loss=loss / m if m else None,
        sample=_detail_sample(
            store, [_label(_INTERACTIONS.c, label_key, store.dialect)[1], *interaction_conditions(**filters)]
        ),
    )
