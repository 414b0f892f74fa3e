"""Routing labels from stored interactions, and a replay buffer that keeps old traffic in training.

:func:`routing_labels` turns the rows the store returns (interactions and annotation-queue items) into one
``(query, agent, weight)`` label per interaction, from the strongest evidence available:

1. ``"annotation"``: a labeled annotation-queue item whose ``label`` names the agent (weight 1.0);
2. ``"metadata"``: the interaction's metadata names the best agent (weight 1.0);
3. ``"feedback"``: a good rating credits the agent that answered (weight 0.7): the routed agent, or, when the
   graph escalated or ran agents in parallel, the one agent whose answer was returned (metadata
   ``answered_by``, which :class:`~cl_plugin.capture.CaptureHandler` records); several agents agreeing on an
   answer the router did not send the query to are no evidence for any one of them. A bad rating only says
   which agent was wrong, so the interaction is labeled with another agent only when a similar query
   answered by that agent was rated well (weight 0.5), and is left unlabeled otherwise.

With ``complement=True`` (the decision points of any graph), a bad rating that no similar query relabels
still counts, as evidence *against* the option chosen: a ``"complement"`` label for each other option,
sharing the weight (0.5) between them. A rating only says how the chosen option did (bandit feedback), so
labels derived from ratings are weighted by the inverse of the propensity with which the serving policy
chose that option (a row's ``propensity``, clipped at ``max_ips_weight``): an option explored with
probability 0.05 and rated well says more about what the policy does not yet know than one it picks every
time.

A correction says the answer was wrong, not who should have answered: it counts as a bad rating (and
contradicts a good one), so a corrected interaction is relabeled only through similar, well-rated queries.
A label carries the query and its routing context (what retrieval found before routing, see
:func:`cl_plugin.learning.router.context_features`) and nothing else: nothing observed after routing (latency,
errors, the answer, the rating) becomes a feature, so a router trained on these labels cannot learn from the
outcome it is meant to predict.

:class:`ReplayBuffer` keeps a class-balanced reservoir of earlier labels; :meth:`ReplayBuffer.mix` adds
some of them to each new batch so a retrained router does not forget agents that recent traffic rarely
reaches. This module does no I/O.
"""

from __future__ import annotations

import random
import re
from collections.abc import Container, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import orjson
from sklearn.feature_extraction.text import TfidfVectorizer

from cl_plugin.records import ProductionInteraction, is_finite_number, rating_outcome

__all__ = ["ReplayBuffer", "RoutingLabel", "routing_context", "routing_labels"]

LabelSource = Literal["annotation", "metadata", "feedback", "complement"]

ANNOTATION_WEIGHT = 1.0
METADATA_WEIGHT = 1.0
GOOD_RATING_WEIGHT = 0.7
NEIGHBOUR_WEIGHT = 0.5
COMPLEMENT_WEIGHT = 0.5

_METADATA_KEYS = ("best_agent", "correct_agent", "expected_agent")
_ANNOTATION_KEYS = ("option", "agent", "best_agent")
_N_NEIGHBOURS = 5
_MIN_SIMILARITY = 0.5
_DIGITS = re.compile(r"\d")

Row = ProductionInteraction | Mapping[str, Any]


@dataclass(frozen=True)
class RoutingLabel:
    """The agent that should have answered one query.

    Attributes:
        interaction_id: the interaction the label comes from.
        query: the user's query.
        agent: the agent that should answer it.
        weight: how much to trust the label, in (0, 1].
        source: the evidence: ``"annotation"``, ``"metadata"``, ``"feedback"``, or ``"complement"`` (a bad
            rating of another option: "not that one").
        context: what was known when the query was routed (``retrieval_quality``, ``retrieved``), the
            router's only input besides the query.
    """

    interaction_id: str
    query: str
    agent: str
    weight: float
    source: LabelSource
    context: Mapping[str, Any] = field(default_factory=dict, compare=False)


def routing_context(row: Row) -> dict[str, Any]:
    """The routing context of a stored interaction: what retrieval found before the router ran.

    Args:
        row: an interaction record or row.

    Returns:
        ``{"retrieval_quality": float | None, "retrieved": bool}``.
    """
    quality = _get(row, "retrieval_quality")
    quality = float(quality) if is_finite_number(quality) else None
    failed = _get(row, "retrieval_failed")
    retrieved = (not bool(failed)) if failed is not None else quality is not None
    return {"retrieval_quality": quality, "retrieved": retrieved}


class _Agents:
    """The agents a label may name: those given, or any non-empty name. Anything not a string is none."""

    def __init__(self, names: Iterable[str] | None) -> None:
        self.names = None if names is None else frozenset(names)

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        return bool(name.strip()) if self.names is None else name in self.names

    def __repr__(self) -> str:
        return "every agent" if self.names is None else repr(sorted(self.names))


def allowed_agents(agents: Sequence[str] | None) -> Container[str]:
    """The agents a label may name: ``agents``, or every agent when it is None.

    Raises:
        ValueError: ``agents`` is given but empty.
    """
    if agents is not None and (isinstance(agents, str) or not agents):
        raise ValueError(
            f"agents must be None (every agent the data names) or a non-empty list of names (got {agents!r})"
        )
    return _Agents(agents)


def routing_labels(
    interactions: Iterable[Row],
    *,
    annotations: Iterable[Mapping[str, Any]] = (),
    agents: Sequence[str] | None = None,
    min_score: float = 4.0,
    max_score: float = 2.0,
    neighbours: Mapping[str, Sequence[str]] | None = None,
    complement: bool = False,
    max_ips_weight: float = 10.0,
) -> list[RoutingLabel]:
    """One routing label per interaction that has evidence for one, strongest source first.

    Args:
        interactions: :class:`~cl_plugin.records.ProductionInteraction` records or interaction rows as the
            store returns them. Rows without an id or a query are skipped.
        annotations: annotation-queue rows (``interaction_id``, ``status``, ``label``); only ``labeled``
            items whose ``label`` dict names an agent in ``agents`` under ``agent`` or ``best_agent`` count.
        agents: the agents a label may name; anything else is ignored. None (the default) allows every
            agent the data names.
        min_score: a feedback score at or above this is a good rating.
        max_score: a feedback score at or below this is a bad rating.
        neighbours: interaction id -> ids of similar interactions, to relabel badly rated ones. None
            computes them: the top 5 by TF-IDF cosine over this batch's queries, above 0.5 similarity.
        complement: label a badly rated interaction that no neighbour relabels with every other option of
            ``agents`` (``"complement"`` labels); needs ``agents``.
        max_ips_weight: the largest inverse-propensity factor a rating-derived label gets.

    Returns:
        The labels, in the order of ``interactions``.

    Raises:
        ValueError: if ``agents`` is empty or ``max_score`` is not below ``min_score``.
    """
    allowed = allowed_agents(agents)
    if complement and (agents is None or len(set(agents)) < 2):
        raise ValueError("complement=True needs agents=[...]: the options a bad rating's label spreads over")
    if not (is_finite_number(max_ips_weight) and max_ips_weight >= 1.0):
        raise ValueError(f"max_ips_weight must be a number >= 1 (got {max_ips_weight!r})")
    if not max_score < min_score:
        raise ValueError(
            f"max_score (bad ratings) must be below min_score (good ratings); got {max_score} and {min_score}"
        )
    rows = _usable(interactions)
    annotated = _annotated_agents(annotations, allowed)
    rating = {iid: _rating(row, min_score, max_score) for iid, row in rows.items()}

    labels: list[RoutingLabel] = []
    pending_bad: list[str] = []
    for iid, row in rows.items():
        query = _get(row, "user_query")
        routed = _credited_agent(row, allowed)
        if iid in annotated:
            labels.append(
                RoutingLabel(
                    iid, query, annotated[iid], ANNOTATION_WEIGHT, "annotation", routing_context(row)
                )
            )
        elif (agent := _metadata_agent(row, allowed)) is not None:
            labels.append(RoutingLabel(iid, query, agent, METADATA_WEIGHT, "metadata", routing_context(row)))
        elif rating[iid] == "good" and routed in allowed:
            weight = GOOD_RATING_WEIGHT * _ips(row, max_ips_weight)
            labels.append(RoutingLabel(iid, query, routed, weight, "feedback", routing_context(row)))
        elif rating[iid] == "bad" and routed in allowed:
            pending_bad.append(iid)
    if not pending_bad:
        return labels

    similar = neighbours if neighbours is not None else _tfidf_neighbours(rows, pending_bad)
    relabeled: dict[str, RoutingLabel] = {}
    for iid in pending_bad:
        wrong = _credited_agent(rows[iid], allowed)
        better = {
            _credited_agent(rows[n], allowed)
            for n in similar.get(iid, ())
            if n in rows and n != iid and rating[n] == "good"
        } - {wrong, None}
        better = {agent for agent in better if agent in allowed}
        # Neighbours that disagree on the better agent are no evidence for either.
        query = _get(rows[iid], "user_query")
        if len(better) == 1:
            relabeled[iid] = RoutingLabel(
                iid, query, better.pop(), NEIGHBOUR_WEIGHT, "feedback", routing_context(rows[iid])
            )
        elif complement and wrong is not None:
            others = [o for o in dict.fromkeys(agents or ()) if o != wrong]
            weight = COMPLEMENT_WEIGHT * _ips(rows[iid], max_ips_weight) / len(others)
            labels.extend(
                RoutingLabel(iid, query, other, weight, "complement", routing_context(rows[iid]))
                for other in others
            )
    labels.extend(relabeled.values())
    order = {iid: i for i, iid in enumerate(rows)}
    return sorted(labels, key=lambda label: order[label.interaction_id])


def _get(row: Row, name: str) -> Any:
    if isinstance(row, Mapping):
        return row.get(name)
    return getattr(row, name, None)


def _ips(row: Row, cap: float) -> float:
    """The clipped inverse propensity of the option a row's policy chose (1.0 when it was not served)."""
    propensity = _get(row, "propensity")
    if not is_finite_number(propensity) or propensity <= 0:
        return 1.0
    return min(1.0 / float(propensity), cap)


def _credited_agent(row: Row, allowed: Container[str]) -> str | None:
    """The agent whose answer the user saw: the routed one, unless the graph says someone else answered."""
    routed = _get(row, "agent_selected")
    answered = _metadata(row).get("answered_by")
    if not isinstance(answered, list) or not answered:
        return routed if routed in allowed else None
    if routed in answered and routed in allowed:
        return routed
    return answered[0] if len(answered) == 1 and answered[0] in allowed else None


def _metadata(row: Row) -> Mapping[str, Any]:
    metadata = _get(row, "metadata")
    if isinstance(metadata, str | bytes):
        try:
            metadata = orjson.loads(metadata) if metadata else None
        except orjson.JSONDecodeError:
            return {}
    return metadata if isinstance(metadata, Mapping) else {}


def _usable(interactions: Iterable[Row]) -> dict[str, Row]:
    """Rows with a string id and a non-empty query, by id (the first row of an id wins)."""
    rows: dict[str, Row] = {}
    for row in interactions:
        iid, query = _get(row, "interaction_id"), _get(row, "user_query")
        if isinstance(iid, str) and iid and isinstance(query, str) and query.strip() and iid not in rows:
            rows[iid] = row
    return rows


def _annotated_agents(annotations: Iterable[Mapping[str, Any]], allowed: Container[str]) -> dict[str, str]:
    """Interaction id -> agent named by its labeled annotation; a later item overrides an earlier one."""
    found: dict[str, str] = {}
    for item in annotations:
        label = item.get("label")
        if item.get("status") != "labeled" or not isinstance(label, Mapping):
            continue
        agent = next((label[k] for k in _ANNOTATION_KEYS if label.get(k) in allowed), None)
        iid = item.get("interaction_id")
        if agent is not None and isinstance(iid, str):
            found[iid] = agent
    return found


def _metadata_agent(row: Row, allowed: Container[str]) -> str | None:
    metadata = _metadata(row)
    return next((metadata[k] for k in _METADATA_KEYS if metadata.get(k) in allowed), None)


def _rating(row: Row, min_score: float, max_score: float) -> str | None:
    """The row's :func:`~cl_plugin.records.rating_outcome`."""
    return rating_outcome(
        _get(row, "user_feedback_score"),
        _get(row, "thumbs_up_down"),
        _get(row, "corrections"),
        min_score=min_score,
        max_score=max_score,
    )


def _tfidf_neighbours(rows: Mapping[str, Row], targets: Sequence[str]) -> dict[str, list[str]]:
    """Up to 5 most similar other interactions of each target, above the similarity threshold."""
    ids = list(rows)
    texts = [_DIGITS.sub("0", _get(rows[iid], "user_query").lower()) for iid in ids]
    try:
        matrix = TfidfVectorizer(sublinear_tf=True).fit_transform(texts)
    except ValueError:  # no word survives tokenisation: no query is similar to another
        return {}
    position = {iid: i for i, iid in enumerate(ids)}
    rows_at = [position[iid] for iid in targets]
    # TF-IDF rows are L2-normalised, so the dot product is the cosine similarity.
    similarity = (matrix[rows_at] @ matrix.T).toarray()
    out: dict[str, list[str]] = {}
    for k, iid in enumerate(targets):
        sims = similarity[k]
        sims[position[iid]] = -1.0
        top = np.argsort(-sims, kind="stable")[:_N_NEIGHBOURS]
        out[iid] = [ids[j] for j in top if sims[j] > _MIN_SIMILARITY]
    return out


class ReplayBuffer:
    """A class-balanced reservoir of earlier routing labels, replayed beside new ones when retraining.

    Each agent gets an equal share of ``capacity`` (the share shrinks as agents appear) and keeps a uniform
    random sample of every label of that agent it was given (reservoir sampling), so old traffic stays
    represented and a frequent agent cannot crowd out a rare one.

    Args:
        capacity: most labels kept, over all agents.
        seed: seed of the reservoir and of :meth:`sample`; the same adds and samples give the same results.

    Raises:
        ValueError: if ``capacity`` is not a positive integer.

    Example:
        >>> labels = [RoutingLabel(str(i), f"q{i}", "HRM" if i % 3 else "TRM", 1.0, "metadata") for i in range(9)]
        >>> buffer = ReplayBuffer(capacity=4).add(labels)
        >>> len(buffer), sorted(buffer.counts().items())
        (4, [('HRM', 2), ('TRM', 2)])
    """

    def __init__(self, capacity: int = 5000, *, seed: int = 0) -> None:
        if not isinstance(capacity, int) or isinstance(capacity, bool) or capacity < 1:
            raise ValueError(f"capacity must be a positive integer (got {capacity!r})")
        self.capacity = capacity
        self.seed = seed
        self._rng = random.Random(seed)
        self._reservoirs: dict[str, list[RoutingLabel]] = {}
        self._seen: dict[str, int] = {}

    def __len__(self) -> int:
        return sum(len(r) for r in self._reservoirs.values())

    def counts(self) -> dict[str, int]:
        """Labels kept per agent."""
        return {agent: len(r) for agent, r in self._reservoirs.items()}

    def add(self, labels: Iterable[RoutingLabel]) -> ReplayBuffer:
        """Offer labels to the reservoir of their agent.

        Args:
            labels: labels to remember.

        Returns:
            The buffer itself.
        """
        for label in labels:
            if label.agent not in self._reservoirs:
                self._reservoirs[label.agent] = []
                self._seen[label.agent] = 0
                self._shrink()
            reservoir = self._reservoirs[label.agent]
            self._seen[label.agent] += 1
            if len(reservoir) < self._quota():
                reservoir.append(label)
            else:
                j = self._rng.randrange(self._seen[label.agent])
                if j < len(reservoir):
                    reservoir[j] = label
        return self

    def sample(self, n: int | None = None) -> list[RoutingLabel]:
        """Draw stored labels without replacement, spread as evenly over the agents as they allow.

        Args:
            n: how many; None (or more than stored) for every stored label.

        Returns:
            The labels, shuffled.

        Raises:
            ValueError: if ``n`` is negative.
        """
        if n is not None and n < 0:
            raise ValueError(f"n must be >= 0 or None (got {n})")
        take = self._allocate(len(self) if n is None else min(n, len(self)))
        drawn = [
            label
            for agent in sorted(self._reservoirs)
            for label in self._rng.sample(self._reservoirs[agent], take[agent])
        ]
        self._rng.shuffle(drawn)
        return drawn

    def mix(self, new_labels: Sequence[RoutingLabel], ratio: float = 0.5) -> list[RoutingLabel]:
        """New labels plus replayed old ones, to train on together.

        The new labels are not added to the buffer: call :meth:`add` with them after training, so they are
        replayed in later rounds rather than twice in this one.

        Args:
            new_labels: the labels of the latest traffic.
            ratio: replayed labels per new label; the replay is capped by what the buffer holds.

        Returns:
            ``new_labels`` followed by ``round(ratio * len(new_labels))`` replayed labels (fewer if the
            buffer holds fewer).

        Raises:
            ValueError: if ``ratio`` is negative or not finite.
        """
        if not (is_finite_number(ratio) and ratio >= 0):
            raise ValueError(f"ratio must be a finite number >= 0 (got {ratio!r})")
        return [*new_labels, *self.sample(round(ratio * len(new_labels)))]

    def state(self) -> dict[str, Any]:
        """The buffer as plain data (JSON- and registry-serializable): :meth:`from_state` rebuilds it.

        The per-agent counts of labels seen travel with it, so the reservoir stays a uniform sample of
        everything ever added across save and load.
        """
        return {
            "capacity": self.capacity,
            "seed": self.seed,
            "seen": dict(self._seen),
            "labels": [
                [
                    label.interaction_id,
                    label.query,
                    label.agent,
                    label.weight,
                    label.source,
                    dict(label.context),
                ]
                for agent in sorted(self._reservoirs)
                for label in self._reservoirs[agent]
            ],
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> ReplayBuffer:
        """Rebuild a buffer saved with :meth:`state`.

        Raises:
            ValueError: if ``state`` is not a saved buffer.
        """
        try:
            buffer = cls(int(state["capacity"]), seed=int(state["seed"]))
            for iid, query, agent, weight, source, context in state["labels"]:
                label = RoutingLabel(iid, query, agent, float(weight), source, context or {})
                buffer._reservoirs.setdefault(agent, []).append(label)
            buffer._seen = {str(agent): int(n) for agent, n in state["seen"].items()}
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(
                f"not a saved ReplayBuffer state ({exc!r}); build it with ReplayBuffer.state()"
            ) from None
        for agent in buffer._reservoirs:
            buffer._seen.setdefault(agent, len(buffer._reservoirs[agent]))
        return buffer

    def _quota(self) -> int:
        return self.capacity // len(self._reservoirs)

    def _shrink(self) -> None:
        """Cut every reservoir to the current quota; a random subset of a uniform sample stays uniform."""
        quota = self._quota()
        for agent, reservoir in self._reservoirs.items():
            if len(reservoir) > quota:
                self._reservoirs[agent] = self._rng.sample(reservoir, quota)

    def _allocate(self, n: int) -> dict[str, int]:
        """Split ``n`` draws over the agents as evenly as their stored labels allow."""
        take = dict.fromkeys(self._reservoirs, 0)
        left = n
        while left > 0:
            open_agents = [a for a in sorted(take) if take[a] < len(self._reservoirs[a])]
            share, extra = divmod(left, len(open_agents))
            for i, agent in enumerate(open_agents):
                room = len(self._reservoirs[agent]) - take[agent]
                add = min(room, share + (1 if i < extra else 0))
                take[agent] += add
                left -= add
        return take
