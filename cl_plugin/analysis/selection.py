"""ActiveLearningSelector: pick the interactions most worth a human's label.

Every interaction gets up to three scores, each in [0, 1]:

- **uncertainty**: the mean of normalised least confidence (``(1 - p1) * K / (K - 1)``), one minus the margin
  (``1 - (p1 - p2)``) and normalised entropy of the router's probabilities over its ``K`` agents. The
  probabilities come from the ``probabilities`` argument, else from the ``router``, else from a routing
  decision kept in the interaction's metadata (``router_probabilities``, ``routing`` or the last entry of
  ``routing_history``); without any of them, ``1 - agent_confidence`` (least confidence alone). A
  :class:`~cl_plugin.CaptureHandler` that samples (:mod:`cl_plugin.capture.sampling`) stores no ``decisions`` rows
  for runs outside its sample, but keeps their router's last probabilities in ``router_probabilities``, so
  those runs are scored on the same scale as the ones :func:`probabilities_from_decisions` covers.
- **failure**: a noisy-OR of the severity-weighted outcome failures of :mod:`cl_plugin.outcomes` (an error
  1.0, a hallucination 0.9, a user correction 0.8, thumbs down 0.7, a low star rating 0.5 for 2 stars and
  1.0 for 1 star), so several failures add up without passing 1. An error is ``error_occurred`` or a
  ``failed_node`` in the metadata. The score is known when any outcome can be seen (stars, thumbs, the
  error or hallucination flag, a correction); an item that shows none, however slow or poorly retrieved,
  has no failure score. Diagnostics (poor or failed retrieval, a slow answer) do not count: a slow right
  answer has not failed. They are named in the pick's reason, after its outcomes, as possible causes.
- **diversity**: cosine distance, clipped to [0, 1], to the nearest interaction already picked or already
  labeled (an interaction in ``exclude_ids`` that is also in the input).

Selection is one greedy loop for every strategy: each round picks the item with the highest
``(1 - w) * informativeness + w * diversity``, where informativeness is the uncertainty (``uncertainty``),
the failure score (``failure``) or ``1 - (1 - uncertainty) * (1 - failure)`` (``hybrid`` and, as a
tie-break only, ``diversity``), and ``w`` is 0, 0, ``diversity_weight`` and 1. Diversity is updated after
every pick, so each pick accounts for those before it. A pick removes its near-duplicates (cosine
similarity above ``duplicate_threshold``), and the most informative member of that group is the one kept.

Queries are compared as TF-IDF vectors (vocabulary capped at 16,384 terms) for near-duplicates and, for
distances, as those vectors reduced to 64 dimensions by a truncated SVD fitted on at most 3,000 of them;
with a LangChain ``Embeddings`` both use its vectors instead, and when every interaction carries the
``query_embedding`` its application logged (``Store.query_interactions(with_embeddings=True)``), those. Every interaction takes part: there is no
prefiltered pool, so the result is the exact greedy solution. ``tests/bench/bench_selection.py`` measures
the cost (hybrid, budget 50: about 0.1 s for 10k interactions and 1.1 s for 100k on one core, about
twice a plain ``TfidfVectorizer.fit_transform`` of the same queries). While it computes, BLAS is held to
one thread (``threadpoolctl``): at these sizes more threads only wait for busy cores.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, Protocol

import numpy as np
from scipy import sparse
from threadpoolctl import threadpool_limits

from cl_plugin.config import ActiveLearningConfig, ContinualLearningConfig, resolve_section
from cl_plugin.errors import ConfigError, InvalidRecordError
from cl_plugin.outcomes import POOR_RETRIEVAL_QUALITY, corrected
from cl_plugin.records import ActiveLearningCandidate, ProductionInteraction

__all__ = ["ActiveLearningSelector", "probabilities_from_decisions"]

_FIELDS = (
    "interaction_id",
    "user_query",
    "agent_selected",
    "agent_confidence",
    "user_feedback_score",
    "thumbs_up_down",
    "latency_ms",
    "error_occurred",
    "hallucination_detected",
    "retrieval_failed",
    "retrieval_quality",
    "corrections",
    "metadata",
    "query_embedding",
)
_SVD_DIMS = 64
_SVD_FIT_ROWS = 3000
_MAX_VOCABULARY = 16_384
# Labeled interactions present in the input that picks keep away from (the first ones of the input).
_MAX_REFERENCES = 500
_REFERENCE_BLOCK = 64
# Severity of each outcome failure, before the noisy-OR.
_ERROR, _HALLUCINATION, _CORRECTION, _THUMBS_DOWN = 1.0, 0.9, 0.8, 0.7
_THUMBS = {"down": 1.0, "up": 0.0}


class Embeddings(Protocol):
    """What the selector needs of a LangChain ``Embeddings``."""

    def embed_documents(self, texts: list[str]) -> list[list[float]]: ...


class ProbabilisticRouter(Protocol):
    """What the selector needs of a router such as :class:`cl_plugin.learning.router.MetaRouter`."""

    classes_: Any

    def predict_proba(self, queries: Sequence[str]) -> Any: ...


@dataclass(slots=True)
class _Columns:
    """The fields selection reads, one array or list per field."""

    ids: list[str]
    queries: list[str]
    agents: list[Any]
    confidence: np.ndarray
    stars: np.ndarray
    thumbs_down: np.ndarray
    latency: np.ndarray
    error: np.ndarray
    hallucination: np.ndarray
    retrieval_failed: np.ndarray
    retrieval_quality: np.ndarray
    corrected: np.ndarray
    metadata: list[Any]
    vectors: list[Any]

    def take(self, keep: np.ndarray) -> _Columns:
        """The rows where ``keep`` is True."""
        idx = np.flatnonzero(keep).tolist()
        values = {}
        for f in fields(self):
            column = getattr(self, f.name)
            values[f.name] = column[keep] if isinstance(column, np.ndarray) else [column[i] for i in idx]
        return _Columns(**values)


@dataclass(slots=True)
class _Pick:
    index: int
    score: float
    distance: float | None
    duplicates: int
    picked_before: int


def _floats(values: Sequence[Any]) -> np.ndarray:
    """Numbers as float64 with NaN for missing or non-numeric values."""
    try:
        return np.array(values, dtype=np.float64)
    except (TypeError, ValueError):
        return np.array(
            [float(v) if isinstance(v, int | float) else math.nan for v in values],
            dtype=np.float64,
        )


def _columns(interactions: Iterable[Mapping[str, Any] | ProductionInteraction]) -> _Columns:
    items = list(interactions)
    # One list per field: building a tuple per row measured about twice as slow on 100k rows.
    if all(type(x) is dict for x in items):
        cols = [[d.get(k) for d in items] for k in _FIELDS]
    else:
        cols = [[x.get(k) if isinstance(x, Mapping) else getattr(x, k, None) for x in items] for k in _FIELDS]
    ids, queries, agents, conf, stars, thumbs, latency, error, halluc, failed, quality, corr, md, vec = cols
    for i, iid in enumerate(ids):
        if type(iid) is not str or not iid:
            raise InvalidRecordError(
                f"interaction {i} of the input has no interaction_id (got {iid!r}); "
                "candidates need the id to be labeled",
                field="interaction_id",
            )
    return _Columns(
        ids=ids,
        queries=[q if type(q) is str else "" for q in queries],
        agents=agents,
        confidence=_floats(conf),
        stars=_floats(stars),
        thumbs_down=np.array([_THUMBS.get(t, math.nan) if isinstance(t, str) else math.nan for t in thumbs]),
        latency=_floats(latency),
        error=_errors(_floats(error), md),
        hallucination=_floats(halluc),
        retrieval_failed=_floats(failed),
        retrieval_quality=_floats(quality),
        corrected=np.array([corrected(c) for c in corr], dtype=bool),
        metadata=md,
        vectors=vec,
    )


def _errors(flags: np.ndarray, metadata: list[Any]) -> np.ndarray:
    """The error flags, with 1.0 where the metadata names a ``failed_node`` (a run that raised)."""
    for i, md in enumerate(metadata):
        if type(md) is dict and md.get("failed_node"):
            flags[i] = 1.0
    return flags


def _given_vectors(values: list[Any]) -> np.ndarray | None:
    """The logged query embeddings as one float32 matrix, or None unless every row has one of one size."""
    if not values or any(v is None for v in values):
        return None
    try:
        matrix = np.stack([np.asarray(v, dtype=np.float32) for v in values])
    except (TypeError, ValueError, OverflowError):
        return None
    return matrix if matrix.ndim == 2 and matrix.shape[1] and np.isfinite(matrix).all() else None


def _first_occurrences(ids: list[str]) -> np.ndarray:
    seen: set[str] = set()
    keep = np.zeros(len(ids), dtype=bool)
    for i, iid in enumerate(ids):
        if iid not in seen:
            seen.add(iid)
            keep[i] = True
    return keep


def _as_probabilities(value: Any) -> dict[str, float] | None:
    """A ``{agent: probability}`` mapping with finite, non-negative numbers, or None."""
    if not isinstance(value, Mapping) or not value:
        return None
    out: dict[str, float] = {}
    for agent, p in value.items():
        if isinstance(p, bool) or not isinstance(p, int | float) or not math.isfinite(p) or p < 0:
            return None
        out[str(agent)] = float(p)
    return out if sum(out.values()) > 0 else None


def _metadata_probabilities(md: Any) -> dict[str, float] | None:
    if type(md) is not dict:
        return None
    entry: Any = md.get("routing")
    history = md.get("routing_history")
    if entry is None and isinstance(history, list) and history:
        entry = history[-1]
    if isinstance(entry, Mapping):
        return _as_probabilities(entry.get("probabilities", entry.get("alternatives")))
    return _as_probabilities(md.get("router_probabilities"))


def probabilities_from_decisions(decisions: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, float]]:
    """The router's probabilities per interaction, from ``decisions`` rows (as :meth:`Store.decisions` gives).

    Only ``route`` decisions whose ``alternatives`` map agents to probabilities count; when an interaction
    has several, the last one wins (rows come in time order).

    Args:
        decisions: decision rows, oldest first.

    Returns:
        ``interaction_id -> {agent: probability}``, ready for the ``probabilities`` argument of
        :meth:`ActiveLearningSelector.select_for_annotation`.
    """
    out: dict[str, dict[str, float]] = {}
    for row in decisions:
        probs = _as_probabilities(row.get("alternatives")) if row.get("kind") == "route" else None
        if probs is not None and isinstance(row.get("interaction_id"), str):
            out[row["interaction_id"]] = probs
    return out


class _Space:
    """Unit vectors of the queries: ``dup`` for near-duplicate checks, ``dense`` for distances."""

    def __init__(self, dup: sparse.csr_matrix | np.ndarray, dense: np.ndarray | None) -> None:
        self.dup = dup
        self.dense = dense
        self.rows: int = dup.shape[0]

    def similarity(self, i: int) -> np.ndarray:
        """Cosine similarity of every row to row ``i``."""
        if isinstance(self.dup, np.ndarray):
            return self.dup @ self.dup[i]
        return self.dup @ self.dup[i].toarray().ravel()

    def distance(self, i: int) -> np.ndarray:
        """Cosine distance, clipped to [0, 1], of every row to row ``i``."""
        assert self.dense is not None
        return np.clip(1.0 - self.dense @ self.dense[i], 0.0, 1.0)

    def max_similarity(self, n: int, start: int, stop: int) -> np.ndarray:
        """Highest similarity of each of the first ``n`` rows to the rows ``start:stop``."""
        product = self.dup[:n] @ self.dup[start:stop].T
        if isinstance(product, np.ndarray):
            return product.max(axis=1)
        return product.max(axis=1).toarray().ravel()

    def min_distance(self, n: int, start: int, stop: int) -> np.ndarray:
        """Smallest distance of each of the first ``n`` rows to the rows ``start:stop``."""
        assert self.dense is not None
        return np.clip(1.0 - (self.dense[:n] @ self.dense[start:stop].T).max(axis=1), 0.0, 1.0)


def _unit_rows(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)


def _tfidf_space(texts: list[str], *, dense: bool) -> _Space:
    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import TfidfVectorizer

    try:
        x = TfidfVectorizer(max_features=_MAX_VOCABULARY, sublinear_tf=True, dtype=np.float32).fit_transform(
            texts
        )
    except ValueError:  # no text has a single word: nothing to compare
        x = sparse.csr_matrix((len(texts), 1), dtype=np.float32)
    if not dense:
        return _Space(x, None)
    if min(x.shape) <= 2 * _SVD_DIMS:
        return _Space(x, _unit_rows(x.toarray()))
    svd = TruncatedSVD(_SVD_DIMS, n_iter=2, random_state=0)
    if x.shape[0] > _SVD_FIT_ROWS:
        rows = np.random.default_rng(0).choice(x.shape[0], _SVD_FIT_ROWS, replace=False)
        svd.fit(x[rows])
    else:
        svd.fit(x)
    return _Space(x, _unit_rows(svd.transform(x).astype(np.float32)))


def _uncertainty(
    probs: list[dict[str, float] | None], confidence: np.ndarray
) -> tuple[np.ndarray, list[str], np.ndarray]:
    """Uncertainty per item (NaN when unknown), the agents, and the normalised probability matrix."""
    agents = sorted({a for p in probs if p for a in p})
    column = {a: j for j, a in enumerate(agents)}
    matrix = np.zeros((len(probs), len(agents)))
    for i, p in enumerate(probs):
        if p:
            for a, v in p.items():
                matrix[i, column[a]] = v
    totals = matrix.sum(axis=1, keepdims=True)
    has = totals[:, 0] > 0
    matrix = np.divide(matrix, totals, out=matrix, where=totals > 0)
    u = np.where(np.isfinite(confidence), 1.0 - np.clip(confidence, 0.0, 1.0), np.nan)
    k = len(agents)
    if k == 1:
        u[has] = 0.0
    elif k > 1 and has.any():
        q = matrix[has]
        top = -np.partition(-q, 1, axis=1)[:, :2]
        least = (1.0 - top[:, 0]) * k / (k - 1)
        logs = np.log(q, out=np.zeros_like(q), where=q > 0)
        entropy = -(q * logs).sum(axis=1) / math.log(k)
        u[has] = np.clip((least + 1.0 - (top[:, 0] - top[:, 1]) + entropy) / 3.0, 0.0, 1.0)
    return u, agents, np.where(has[:, None], matrix, np.nan)


class ActiveLearningSelector:
    """Selects the production interactions most worth a human's label.

    Args:
        config: the ``active_learning`` section as a dict or :class:`~cl_plugin.config.ActiveLearningConfig`,
            or a whole :class:`~cl_plugin.config.ContinualLearningConfig`. Keys: ``enabled``,
            ``budget_per_cycle``, ``selection_strategy`` (``uncertainty``, ``diversity``, ``failure`` or
            ``hybrid``) and ``diversity_weight``.
        embeddings: a LangChain ``Embeddings`` (anything with ``embed_documents``) whose vectors replace
            TF-IDF + SVD for distances and near-duplicates. It is called once per selection on every query.
        router: an object with ``predict_proba(queries)`` and ``classes_`` (such as
            :class:`~cl_plugin.learning.router.MetaRouter`), asked for the probabilities of the interactions that the
            ``probabilities`` argument does not cover.
        duplicate_threshold: cosine similarity above which two queries are near-duplicates.
        slow_response_ms: latency above which an answer counts as slow: a diagnostic, named in the reason
            of a pick and not scored.
        low_rating_threshold: star ratings below this count as failures (outcome ``low_rating``).
        **kwargs: ``active_learning`` keys that override ``config``.

    Raises:
        ConfigError: a key is unknown or a value is ill-typed or out of range; the message names the key.

    Example:
        >>> selector = ActiveLearningSelector({"selection_strategy": "failure"})
        >>> rows = [
        ...     {"interaction_id": "a", "user_query": "reset my password", "user_feedback_score": 1.0},
        ...     {"interaction_id": "b", "user_query": "export a PDF report", "user_feedback_score": 5.0},
        ... ]
        >>> [(c.interaction_id, c.selection_reason) for c in selector.select_for_annotation(rows, budget=1)]
        [('a', 'rated 1 star')]
    """

    def __init__(
        self,
        config: dict[str, Any] | ActiveLearningConfig | ContinualLearningConfig | None = None,
        *,
        embeddings: Embeddings | None = None,
        router: ProbabilisticRouter | None = None,
        duplicate_threshold: float = 0.95,
        slow_response_ms: float = 5000.0,
        low_rating_threshold: float = 3.0,
        **kwargs: Any,
    ) -> None:
        self.config = resolve_section(
            ActiveLearningConfig, config, component="ActiveLearningSelector", **kwargs
        )
        for key, value, low, high in (
            ("duplicate_threshold", duplicate_threshold, 0.0, 1.0),
            ("slow_response_ms", slow_response_ms, 0.0, math.inf),
            ("low_rating_threshold", low_rating_threshold, 1.0, math.inf),
        ):
            if isinstance(value, bool) or not isinstance(value, int | float) or not low < value <= high:
                raise ConfigError(f"{key} must be a number in ({low}, {high}] (got {value!r})", key=key)
        self.embeddings = embeddings
        self.router = router
        self.duplicate_threshold = float(duplicate_threshold)
        self.slow_response_ms = float(slow_response_ms)
        self.low_rating_threshold = float(low_rating_threshold)

    def select_for_annotation(
        self,
        interactions: Iterable[Mapping[str, Any] | ProductionInteraction],
        budget: int | None = None,
        *,
        exclude_ids: Iterable[str] = (),
        probabilities: Mapping[str, Mapping[str, float]] | None = None,
    ) -> list[ActiveLearningCandidate]:
        """Pick up to ``budget`` interactions to label, most valuable first.

        Args:
            interactions: dicts as :meth:`Store.query_interactions` returns them, or
                :class:`~cl_plugin.records.ProductionInteraction` records. Missing fields count as unknown.
                A repeated id counts once.
            budget: how many to pick (default: ``budget_per_cycle``).
            exclude_ids: ids already labeled or queued. They are never picked; those present in
                ``interactions`` (the first 500 of them) count as already covered, so picks keep away from
                them and their near-duplicates are dropped.
            probabilities: the router's probabilities per interaction id, ``{agent: p}``; they take
                precedence over ``router`` and metadata. See :func:`probabilities_from_decisions`.

        Returns:
            Candidates in pick order, each with a ``selection_reason`` naming the evidence. Empty when
            the config has ``enabled: false``.

        Raises:
            ValueError: ``budget`` is not an int >= 0.
            InvalidRecordError: an interaction has no ``interaction_id``.
        """
        if budget is None:
            budget = self.config.budget_per_cycle
        if isinstance(budget, bool) or not isinstance(budget, int) or budget < 0:
            raise ValueError(f"budget must be an int >= 0 (got {budget!r})")
        cols = _columns(interactions)
        if not self.config.enabled or budget == 0:
            return []
        excluded = {exclude_ids} if isinstance(exclude_ids, str) else set(exclude_ids)
        first = _first_occurrences(cols.ids)
        is_excluded = np.array([iid in excluded for iid in cols.ids], dtype=bool)
        covered = np.flatnonzero(first & is_excluded)[:_MAX_REFERENCES]
        references = [cols.queries[i] for i in covered]
        cand = cols.take(first & ~is_excluded)
        if not cand.ids:
            return []
        u, agents, matrix = _uncertainty(self._probabilities(cand, probabilities), cand.confidence)
        f = self._failure(cand)
        info, tiebreak, w = self._objective(u, f)
        # On a loaded two-core host, BLAS threads made the median 1.5x slower and the spread 5x wider.
        with threadpool_limits(limits=1, user_api="blas"):
            given = _given_vectors([*cand.vectors, *(cols.vectors[i] for i in covered)])
            space = self._space(cand.queries + references, dense=w > 0, given=given)
            picks = self._greedy(space, info, tiebreak, w, budget)
        return [
            ActiveLearningCandidate(
                interaction_id=cand.ids[p.index],
                user_query=cand.queries[p.index],
                agent_selected=cand.agents[p.index] if isinstance(cand.agents[p.index], str) else None,
                priority=p.score,
                selection_reason=self._reason(cand, p, u, matrix, agents, w, len(references)),
                strategy=self.config.selection_strategy,
                uncertainty=None if math.isnan(u[p.index]) else float(u[p.index]),
                diversity=p.distance,
                failure_score=None if math.isnan(f[p.index]) else float(f[p.index]),
            )
            for p in picks
        ]

    # -- scores -----------------------------------------------------------------------------------------

    def _probabilities(
        self, cols: _Columns, given: Mapping[str, Mapping[str, float]] | None
    ) -> list[dict[str, float] | None]:
        if given is not None and not isinstance(given, Mapping):
            raise TypeError(
                f"probabilities must map interaction ids to {{agent: probability}} (got {type(given).__name__})"
            )
        probs = [_as_probabilities(given.get(iid)) for iid in cols.ids] if given else [None] * len(cols.ids)
        missing = [i for i, p in enumerate(probs) if p is None]
        if not missing:
            return probs
        if self.router is not None:
            classes = [str(c) for c in self.router.classes_]
            proba = np.asarray(
                self.router.predict_proba([cols.queries[i] for i in missing]), dtype=np.float64
            )
            for i, row in zip(missing, proba.tolist(), strict=True):
                probs[i] = _as_probabilities(dict(zip(classes, row, strict=True)))
        else:
            for i in missing:
                probs[i] = _metadata_probabilities(cols.metadata[i])
        return probs

    def _failure(self, c: _Columns) -> np.ndarray:
        """Failure score per item: noisy-OR of its weighted outcome failures; NaN when no outcome is known.

        Diagnostics (retrieval, latency) take no part: an item that shows only them scores NaN, like an
        item with no signal at all.
        """
        low = self.low_rating_threshold
        signals = np.vstack(
            [
                np.clip((low - c.stars) / (low - 1.0), 0.0, 1.0),
                c.thumbs_down * _THUMBS_DOWN,
                c.error * _ERROR,
                c.hallucination * _HALLUCINATION,
                np.where(c.corrected, _CORRECTION, np.nan),
            ]
        )
        known = ~np.isnan(signals).all(axis=0)
        score = 1.0 - np.prod(1.0 - np.nan_to_num(signals), axis=0)
        return np.where(known, score, np.nan)

    def _objective(self, u: np.ndarray, f: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
        """Informativeness, its tie-break, and the weight of diversity for the configured strategy."""
        u0, f0 = np.nan_to_num(u), np.nan_to_num(f)
        strategy = self.config.selection_strategy
        if strategy == "uncertainty":
            return u0, f0, 0.0
        if strategy == "failure":
            return f0, u0, 0.0
        info = 1.0 - (1.0 - u0) * (1.0 - f0)
        return info, info, 1.0 if strategy == "diversity" else self.config.diversity_weight

    # -- picking ----------------------------------------------------------------------------------------

    def _space(self, texts: list[str], *, dense: bool, given: np.ndarray | None = None) -> _Space:
        if given is not None:  # the application's own query embeddings
            unit = _unit_rows(given)
            return _Space(unit, unit)
        if self.embeddings is None:
            return _tfidf_space(texts, dense=dense)
        vectors = np.asarray(self.embeddings.embed_documents(texts), dtype=np.float32)
        if vectors.ndim != 2 or len(vectors) != len(texts):
            raise ValueError(
                f"embeddings.embed_documents returned an array of shape {vectors.shape} for {len(texts)} "
                "texts; it must return one vector per text"
            )
        unit = _unit_rows(vectors)
        return _Space(unit, unit)

    def _greedy(
        self, space: _Space, info: np.ndarray, tiebreak: np.ndarray, w: float, budget: int
    ) -> list[_Pick]:
        n = len(info)
        threshold = self.duplicate_threshold
        rank = info + 1e-6 * tiebreak
        base = (1.0 - w) * info + 1e-6 * tiebreak
        alive = np.ones(n, dtype=bool)
        nearest = np.ones(n)
        has_references = space.rows > n
        for start in range(n, space.rows, _REFERENCE_BLOCK):
            stop = min(start + _REFERENCE_BLOCK, space.rows)
            alive &= space.max_similarity(n, start, stop) <= threshold
            if w > 0:
                nearest = np.minimum(nearest, space.min_distance(n, start, stop))
        picks: list[_Pick] = []
        while len(picks) < budget:
            score = np.where(alive, base + w * nearest if w > 0 else base, -np.inf)
            best = int(np.argmax(score))
            if not alive[best]:
                break
            group = alive & (space.similarity(best)[:n] > threshold)
            group[best] = True
            members = np.flatnonzero(group)
            keep = int(members[np.argmax(rank[members])])
            if rank[keep] <= rank[best]:
                keep = best
            else:
                group |= alive & (space.similarity(keep)[:n] > threshold)
            compared = w > 0 and (bool(picks) or has_references)
            picks.append(
                _Pick(
                    index=keep,
                    score=float(score[best]),
                    distance=float(nearest[keep]) if compared else None,
                    duplicates=int(group.sum()) - 1,
                    picked_before=len(picks),
                )
            )
            alive &= ~group
            if w > 0:
                nearest = np.minimum(nearest, space.distance(keep)[:n])
        return picks

    # -- reasons ----------------------------------------------------------------------------------------

    def _reason(
        self,
        c: _Columns,
        pick: _Pick,
        u: np.ndarray,
        matrix: np.ndarray,
        agents: list[str],
        w: float,
        references: int,
    ) -> str:
        i = pick.index
        strategy = self.config.selection_strategy
        unsure = _router_words(c, i, matrix, agents) if strategy in ("uncertainty", "hybrid") else None
        failures, diagnostics = self._failure_words(c, i) if strategy in ("failure", "hybrid") else ([], [])
        parts: list[str] = []
        if strategy == "uncertainty":
            parts.append(unsure or "no router probabilities or confidence recorded")
        elif strategy == "failure":
            parts.extend(failures or ["no outcome failure recorded"])
        elif strategy == "hybrid":
            if unsure and (u[i] >= 0.3 or not failures):
                parts.append(unsure)
            parts.extend(failures)
            if not parts:
                parts.append("no outcome failure or router uncertainty recorded")
        if diagnostics:
            many = len(diagnostics) > 1
            label = (
                ("diagnostics" if many else "diagnostic")
                if failures
                else ("diagnostics only, not failures" if many else "diagnostic only, not a failure")
            )
            parts.append(f"{label}: {', '.join(diagnostics)}")
        if w > 0:
            parts.append(_distance_words(pick, references))
        if pick.duplicates:
            parts.append(f"kept over {pick.duplicates} near-duplicate{'s' if pick.duplicates > 1 else ''}")
        return "; ".join(parts)

    def _failure_words(self, c: _Columns, i: int) -> tuple[list[str], list[str]]:
        """The item's outcome failures, then its diagnostics (possible causes, not failures), in words."""
        words = []
        if c.error[i] == 1:
            words.append("the run raised an error")
        if c.hallucination[i] == 1:
            words.append("hallucination detected")
        if c.corrected[i]:
            words.append("the user corrected the answer")
        stars = c.stars[i]
        if stars < self.low_rating_threshold:
            words.append(f"rated {stars:g} star{'' if stars == 1 else 's'}")
        if c.thumbs_down[i] == 1:
            words.append("thumbs down")
        diagnostics = []
        quality = c.retrieval_quality[i]
        shown = f" (quality {quality:.2f})" if not math.isnan(quality) else ""
        if c.retrieval_failed[i] == 1:
            diagnostics.append(f"retrieval failed{shown}")
        elif quality < POOR_RETRIEVAL_QUALITY:
            diagnostics.append(f"poor retrieval{shown}")
        if c.latency[i] > self.slow_response_ms:
            diagnostics.append(f"slow ({c.latency[i] / 1000:.1f} s)")
        return words, diagnostics


def _router_words(c: _Columns, i: int, matrix: np.ndarray, agents: list[str]) -> str | None:
    row = matrix[i] if matrix.size else np.array([np.nan])
    if not np.isnan(row).any():
        if len(agents) == 1:
            return f"router scored only {agents[0]}"
        first, second = np.argsort(-row, kind="stable")[:2]
        p1, p2 = row[first], row[second]
        label = "router unsure" if p1 - p2 < 0.3 else "router fairly sure"
        return f"{label}: {agents[first]} {p1:.2f} vs {agents[second]} {p2:.2f} (margin {p1 - p2:.2f})"
    confidence = c.confidence[i]
    if math.isnan(confidence):
        return None
    agent = f" in {c.agents[i]}" if isinstance(c.agents[i], str) else ""
    label = "router confidence only" if confidence < 0.7 else "router confidence"
    return f"{label} {confidence:.2f}{agent} (no probabilities for the alternatives)"


def _distance_words(pick: _Pick, references: int) -> str:
    if pick.distance is None:
        return "first pick: nothing picked or labeled yet to compare with"
    seen = []
    if pick.picked_before:
        seen.append(f"the {pick.picked_before} item{'s' if pick.picked_before > 1 else ''} already picked")
    if references:
        seen.append(f"{references} already labeled or queued")
    what = " and ".join(seen)
    if pick.distance >= 0.5:
        return f"far from {what} (distance {pick.distance:.2f})"
    return f"only {pick.distance:.2f} from the nearest of {what}"
