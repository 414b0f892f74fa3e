"""Data preparation for retraining: what production taught, as clean, deduplicated, honestly split labels.

:func:`prepare_training_data` takes what a caller has at hand (interaction rows from the store,
:class:`~cl_plugin.records.ProductionInteraction` records, annotated samples, annotation-queue rows or
ready :class:`~cl_plugin.learning.labels.RoutingLabel` objects, mixed freely) and returns:

* routing labels, from the strongest evidence each interaction has (see :func:`cl_plugin.learning.labels.routing_labels`);
* user corrections, which become retrieval documents;
* a report of every count: received, rejected by reason, labels by source, duplicates, conflicts, and the
  train and validation sizes.

Steps, in order:

1. **Sanitize**: every query and correction is redacted, because labels end up in model artifacts (the
   router's vocabulary, the replay sample) and PII must never reach disk.
2. **Quality filter**: items without a query, with an oversized query, or of an unknown shape are rejected and
   counted by reason.
3. **Deduplicate**: labels of the same query (case and spacing ignored) collapse into one; when they name
   different agents, the stronger evidence wins (annotation over metadata over feedback, then total weight),
   and a tie drops them all.
4. **Split by session**: a session's labels and corrections all land on the same side, so the validation
   set never holds the twin of a training query from the same conversation.

This module does no I/O.
"""

from __future__ import annotations

import dataclasses
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
from sklearn.model_selection import GroupShuffleSplit

from cl_plugin.learning.labels import RoutingLabel, allowed_agents, routing_labels
from cl_plugin.privacy import PIIRedactor, default_redactor
from cl_plugin.records import ProductionInteraction, is_finite_number

__all__ = ["Correction", "PreparedData", "label_contexts", "prepare_training_data"]

_SOURCE_RANK = {"annotation": 3, "metadata": 2, "feedback": 1}
_AGENT_KEYS = ("best_agent", "correct_agent", "expected_agent", "agent")
_SPACES = re.compile(r"\s+")


@dataclass(frozen=True)
class Correction:
    """A user's corrected answer, ready to become a retrieval document.

    Attributes:
        interaction_id: the corrected interaction.
        query: its query (sanitized).
        answer: the latest correction (sanitized).
        validation: whether the interaction's session is on the validation side of the split.
    """

    interaction_id: str
    query: str
    answer: str
    validation: bool


@dataclass(frozen=True)
class PreparedData:
    """Labels and corrections split by session, with the counts of how they were obtained.

    Attributes:
        train: labels to learn from.
        validation: held-out labels, from sessions that have no training label.
        corrections: every usable correction, each marked with its side of the split.
        report: the counts of every step (JSON-serializable).
        window: ``(start, end)`` unix times of the labeled interactions (None when unknown).
        recorded: interaction id -> the option the graph's own policy chose (its ``agent_selected``), to
            score that policy as the incumbent when there is no model yet.
        propensity: interaction id -> the probability the serving policy gave the option it chose (only for
            interactions served with one; see :func:`cl_plugin.learning.labels.routing_labels`).
        validation_bad: with ``complement``, one complement label per held-out interaction rated bad and
            left unlabeled (its query and context; the option chosen is in ``recorded``).
    """

    train: list[RoutingLabel]
    validation: list[RoutingLabel]
    corrections: list[Correction]
    report: dict[str, Any]
    window: tuple[float | None, float | None]
    recorded: dict[str, str] = dataclasses.field(default_factory=dict)
    propensity: dict[str, float] = dataclasses.field(default_factory=dict)
    validation_bad: list[RoutingLabel] = dataclasses.field(default_factory=list)


def prepare_training_data(
    new_data: Iterable[Any],
    *,
    agents: Sequence[str] | None = None,
    validation_split: float = 0.2,
    seed: int = 0,
    max_query_length: int = 4000,
    redactor: PIIRedactor | None = None,
    complement: bool = False,
    max_ips_weight: float = 10.0,
) -> PreparedData:
    """Turn raw production data into labels and corrections, split by session.

    Args:
        new_data: interaction rows or records, annotated samples (an interaction row with a ``label`` dict or
            a top-level ``best_agent``), annotation-queue rows (``interaction_id``, ``status``, ``label``) and
            :class:`~cl_plugin.learning.labels.RoutingLabel` objects, in any mix.
        agents: the agents a label may name; None (the default) allows every agent the data names.
        validation_split: share of sessions held out, in (0, 1).
        seed: seed of the split.
        max_query_length: longer queries are rejected.
        redactor: the PII redactor; :func:`~cl_plugin.privacy.default_redactor` by default.
        complement: also learn from bad ratings no neighbour relabels, as ``"complement"`` labels (see
            :func:`~cl_plugin.learning.labels.routing_labels`; needs ``agents``). They go to training only: a
            complement says what the answer was not, so it cannot grade a model on the validation side.
        max_ips_weight: the largest inverse-propensity factor of a rating-derived label.

    Returns:
        The prepared data.

    Raises:
        ValueError: ``new_data`` is not an iterable of items, or ``validation_split`` is not in (0, 1).
    """
    if isinstance(new_data, str | bytes | Mapping) or not isinstance(new_data, Iterable):
        raise ValueError(
            f"new_data must be an iterable of interactions, annotations or labels (got {type(new_data).__name__});"
            " pass a list, e.g. logger.query_interactions(limit=10000)"
        )
    if not (is_finite_number(validation_split) and 0.0 < validation_split < 1.0):
        raise ValueError(f"validation_split must be between 0 and 1, exclusive (got {validation_split!r})")
    redact = (redactor or default_redactor()).safe_redact
    rows, annotations, direct, rejected, received = _sort_items(new_data, max_query_length, redact)

    labels = routing_labels(
        rows.values(),
        annotations=annotations,
        agents=agents,
        complement=complement,
        max_ips_weight=max_ips_weight,
    )
    by_source = Counter(label.source for label in labels)
    complements = [label for label in labels if label.source == "complement"]
    labels = [label for label in labels if label.source != "complement"]
    allowed = allowed_agents(agents)
    direct_ok = [label for label in direct if label.agent in allowed]
    rejected["label_agent_unknown"] += len(direct) - len(direct_ok)
    by_source["direct"] = len(direct_ok)
    labels = [*labels, *direct_ok]
    labels, duplicates, conflicts = _deduplicate(labels)

    def session_of(iid: str) -> str:
        row = rows.get(iid)
        session = row.get("session_id") if row is not None else None
        return f"session:{session}" if isinstance(session, str) and session else f"interaction:{iid}"

    corrections = [
        (iid, row["user_query"], answer)
        for iid, row in rows.items()
        if (answer := _latest_correction(row.get("corrections"), redact)) is not None
    ]
    groups = sorted(
        {session_of(label.interaction_id) for label in labels} | {session_of(c[0]) for c in corrections}
    )
    held_out = _held_out_groups(groups, validation_split, seed)
    train = [label for label in labels if session_of(label.interaction_id) not in held_out]
    train += [label for label in complements if session_of(label.interaction_id) not in held_out]
    validation = [label for label in labels if session_of(label.interaction_id) in held_out]
    # Held-out bad ratings, one per interaction: what the policy chose there was wrong.
    held_out_bad = list(
        {
            label.interaction_id: label
            for label in complements
            if session_of(label.interaction_id) in held_out
        }.values()
    )
    prepared_corrections = [Correction(iid, q, a, session_of(iid) in held_out) for iid, q, a in corrections]

    stamps = [
        float(rows[label.interaction_id]["timestamp"])
        for label in labels
        if label.interaction_id in rows and is_finite_number(rows[label.interaction_id].get("timestamp"))
    ]
    labeled_ids = {label.interaction_id for label in labels}
    report = {
        "received": received,
        "rejected": dict(sorted((k, v) for k, v in rejected.items() if v)),
        "interactions": len(rows),
        "annotations": len(annotations),
        "unlabeled_interactions": sum(iid not in labeled_ids for iid in rows),
        "labels_by_source": dict(sorted((k, v) for k, v in by_source.items() if v)),
        "duplicates_merged": duplicates,
        "conflicts_dropped": conflicts,
        "labels": len(labels),
        "train_samples": len(train),
        "validation_samples": len(validation),
        "sessions": len(groups),
        "validation_sessions": len(held_out),
        "corrections": len(prepared_corrections),
        "validation_corrections": sum(c.validation for c in prepared_corrections),
    }
    window = (min(stamps), max(stamps)) if stamps else (None, None)
    # What the graph's policy picked: before exploring, when a served decision explored.
    recorded = {
        iid: choice
        for iid, row in rows.items()
        if isinstance(choice := row.get("policy_choice") or row.get("agent_selected"), str)
    }
    propensity = {
        iid: float(row["propensity"])
        for iid, row in rows.items()
        if is_finite_number(row.get("propensity")) and row["propensity"] > 0
    }
    return PreparedData(
        train, validation, prepared_corrections, report, window, recorded, propensity, held_out_bad
    )


def _sort_items(
    new_data: Iterable[Any], max_query_length: int, redact: Any
) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]], list[RoutingLabel], Counter[str], int]:
    """Interaction rows by id, annotation rows, ready labels, rejections by reason, and the item count."""
    rows: dict[str, dict[str, Any]] = {}
    annotations: list[dict[str, Any]] = []
    direct: list[RoutingLabel] = []
    rejected: Counter[str] = Counter()
    received = 0
    for item in new_data:
        received += 1
        if isinstance(item, RoutingLabel):
            query = redact(item.query) if isinstance(item.query, str) else ""
            if not query.strip():
                rejected["missing_query"] += 1
            elif len(query) > max_query_length:
                rejected["query_too_long"] += 1
            else:
                direct.append(dataclasses.replace(item, query=query))
            continue
        if isinstance(item, ProductionInteraction):
            item = {f.name: getattr(item, f.name) for f in dataclasses.fields(item)}
        if not isinstance(item, Mapping):
            rejected["unsupported_item"] += 1
            continue
        iid = item.get("interaction_id")
        if not isinstance(iid, str) or not iid:
            rejected["missing_interaction_id"] += 1
            continue
        query = item.get("user_query")
        if query is None and "label" in item:  # an annotation-queue row: its interaction comes separately
            annotations.append(dict(item))
            continue
        if not isinstance(query, str) or not query.strip():
            rejected["missing_query"] += 1
            continue
        if len(query) > max_query_length:
            rejected["query_too_long"] += 1
            continue
        row = dict(item)
        row["user_query"] = redact(query)
        rows.setdefault(iid, row)
        label = row.get("label")
        agent = next((row[k] for k in _AGENT_KEYS if isinstance(row.get(k), str)), None)
        if isinstance(label, Mapping):
            annotations.append(
                {"interaction_id": iid, "status": row.get("status", "labeled"), "label": label}
            )
        elif agent is not None:
            annotations.append({"interaction_id": iid, "status": "labeled", "label": {"agent": agent}})
    return rows, annotations, direct, rejected, received


def _latest_correction(value: Any, redact: Any) -> str | None:
    if isinstance(value, str):
        try:
            value = orjson.loads(value) if value.startswith("[") else [value]
        except orjson.JSONDecodeError:
            value = [value]
    if not isinstance(value, list | tuple):
        return None
    texts = [v for v in value if isinstance(v, str) and v.strip()]
    return redact(texts[-1]) if texts else None


def _deduplicate(labels: list[RoutingLabel]) -> tuple[list[RoutingLabel], int, int]:
    """One label per query text; returns the labels kept, duplicates merged and conflicting labels dropped."""
    groups: dict[str, list[RoutingLabel]] = defaultdict(list)
    for label in labels:
        groups[_SPACES.sub(" ", label.query.strip().lower())].append(label)
    kept: list[RoutingLabel] = []
    merged = dropped = 0
    for group in groups.values():
        if len(group) == 1:
            kept.append(group[0])
            continue
        strength: dict[str, tuple[int, float]] = {}
        for label in group:
            rank, total = strength.get(label.agent, (0, 0.0))
            strength[label.agent] = (max(rank, _SOURCE_RANK.get(label.source, 0)), total + label.weight)
        ranked = sorted(strength.items(), key=lambda kv: kv[1], reverse=True)
        if len(ranked) > 1 and ranked[0][1] == ranked[1][1]:
            dropped += len(group)
            continue
        winner = ranked[0][0]
        best = max((label for label in group if label.agent == winner), key=lambda label: label.weight)
        kept.append(best)
        merged += len(group) - 1
    order = {id(label): i for i, label in enumerate(labels)}
    kept.sort(key=lambda label: order[id(label)])
    return kept, merged, dropped


def _held_out_groups(groups: list[str], validation_split: float, seed: int) -> set[str]:
    """The sessions held out for validation: ``validation_split`` of them, at least one when there are two."""
    if len(groups) < 2:
        return set()
    splitter = GroupShuffleSplit(n_splits=1, test_size=validation_split, random_state=seed)
    _, test = next(splitter.split(np.zeros(len(groups)), groups=np.arange(len(groups))))
    return {groups[i] for i in test}


def label_contexts(labels: Sequence[RoutingLabel]) -> list[Mapping[str, Any]]:
    """The routing context of each label (empty when it carries none)."""
    return [label.context or {} for label in labels]
