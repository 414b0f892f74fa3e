"""Which interactions a query means: the classic API's filters, checked, as SQL conditions.

Every read of interactions (:meth:`~cl_plugin.store.Store.query_interactions`, ``iter_interactions``,
``count_interactions``, ``statistics``, the decision-point queries) goes through
:func:`interaction_conditions`, so a filter means the same everywhere and a value no stored row could match
(NaN, a NUL character, a lone surrogate) is refused with the filter's name instead of reaching the database.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Table, or_

from cl_plugin.errors import InvalidRecordError
from cl_plugin.store.tables import Interaction

__all__ = ["interaction_conditions"]

_INTERACTIONS: Table = Interaction.__table__  # type: ignore[assignment]


def interaction_conditions(
    *,
    min_feedback_score: float | None = None,
    max_feedback_score: float | None = None,
    agent: str | Sequence[str] | None = None,
    session_id: str | None = None,
    start_time: float | None = None,
    end_time: float | None = None,
    error_occurred: bool | None = None,
    hallucination_detected: bool | None = None,
    retrieval_failed: bool | None = None,
    has_feedback: bool | None = None,
    graph_name: str | None = None,
) -> list[Any]:
    """The SQL conditions on ``interactions`` that select the rows matching every given filter.

    Args:
        min_feedback_score, max_feedback_score: the user's score, inclusive bounds.
        agent: one agent name or a list of them.
        session_id, graph_name: exact matches.
        start_time, end_time: ``timestamp`` in [start_time, end_time).
        error_occurred, hallucination_detected, retrieval_failed: the flag as given.
        has_feedback: whether the user gave a score or thumbs.

    Returns:
        Conditions for ``select(...).where(*conditions)``; empty when no filter is given.

    Raises:
        TypeError: an unknown filter name.
        InvalidRecordError: a filter value no stored row could match (the error names the filter).
    """
    for name, number in (
        ("min_feedback_score", min_feedback_score),
        ("max_feedback_score", max_feedback_score),
        ("start_time", start_time),
        ("end_time", end_time),
    ):
        _check_number_filter(name, number)
    agents = [agent] if isinstance(agent, str) else list(agent or ())
    for name, value in (
        *(("agent", a) for a in agents),
        ("session_id", session_id),
        ("graph_name", graph_name),
    ):
        _check_text_filter(name, value)
    c = _INTERACTIONS.c
    conds: list[Any] = []
    if min_feedback_score is not None:
        conds.append(c.user_feedback_score >= min_feedback_score)
    if max_feedback_score is not None:
        conds.append(c.user_feedback_score <= max_feedback_score)
    if agent is not None:
        conds.append(c.agent_selected == agent if isinstance(agent, str) else c.agent_selected.in_(agent))
    if session_id is not None:
        conds.append(c.session_id == session_id)
    if start_time is not None:
        conds.append(c.timestamp >= start_time)
    if end_time is not None:
        conds.append(c.timestamp < end_time)
    for col, want in (
        (c.error_occurred, error_occurred),
        (c.hallucination_detected, hallucination_detected),
        (c.retrieval_failed, retrieval_failed),
    ):
        if want is not None:
            conds.append(col == int(want))
    if has_feedback is not None:
        has = or_(c.user_feedback_score.is_not(None), c.thumbs_up_down.is_not(None))
        conds.append(has if has_feedback else ~has)
    if graph_name is not None:
        conds.append(c.graph_name == graph_name)
    return conds


_FILTER_LIMIT = 1e15  # far past any unix time or score, inside every engine's numeric range


def _check_number_filter(name: str, value: Any) -> None:
    """A numeric query filter must be a finite real number the database can compare (or None)."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidRecordError(
            f"query filter {name} must be a finite number (got {value!r:.60})", field=name
        )
    if abs(value) > _FILTER_LIMIT:
        raise InvalidRecordError(
            f"query filter {name} is out of range (|{name}| must be at most {_FILTER_LIMIT:g})", field=name
        )


def _check_text_filter(name: str, value: Any) -> None:
    """A text query filter must be a string every engine can store: no NUL, valid Unicode (or None)."""
    if value is None:
        return
    if not isinstance(value, str):
        raise InvalidRecordError(
            f"query filter {name} must be a string (got {type(value).__name__})", field=name
        )
    if "\x00" in value:
        raise InvalidRecordError(
            f"query filter {name} contains a NUL character; no stored value can", field=name
        )
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidRecordError(
            f"query filter {name} is not valid Unicode (a lone surrogate); no stored value can match it",
            field=name,
        ) from None
