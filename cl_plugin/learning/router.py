"""The meta-controller: a calibrated classifier that picks the agent for a query.

:class:`MetaRouter` is a scikit-learn style estimator: the constructor stores parameters, :meth:`~MetaRouter.fit`
learns, learned state ends in ``_``. It sees two kinds of features, both known before any agent runs:

* the query text: word (1-2)-gram and character (2-4)-gram TF-IDF vectors with digits folded to ``0`` (the
  numbers of a problem say little about who should solve it);
* the routing context (:func:`context_features`): the query's length in characters and words, how many
  numbers it holds, whether context was retrieved and how relevant the best passage was, and the confidences
  of earlier routing decisions for the same request.

Nothing observed after routing (latency, errors, the answer, the user's rating) is a feature, so the router
cannot learn from the outcome it is meant to predict.

The model is a logistic-loss :class:`~sklearn.linear_model.SGDClassifier`, so :meth:`~MetaRouter.partial_fit`
updates it with new labelled decisions without a full retrain; the vocabulary is fixed by the first fit.
Probabilities are calibrated by temperature scaling: :meth:`~MetaRouter.fit` learns one temperature from
out-of-fold scores (so the model never grades its own training data), and :meth:`~MetaRouter.calibrate`
relearns it on held-out labels after incremental updates. Temperature changes how sure the router is, never
which agent it ranks first.

:meth:`~MetaRouter.route` turns the probabilities into a decision: the most likely agent, or
:data:`PARALLEL` (run every agent and compare) when the top probability is below ``parallel_threshold``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from scipy import sparse
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax, softmax
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import SGDClassifier
from sklearn.model_selection import StratifiedKFold

from cl_plugin.records import is_finite_number

__all__ = ["CONTEXT_FEATURES", "PARALLEL", "MetaRouter", "RoutingDecision", "Scorer", "context_features"]

#: The route that runs every agent and lets them vote.
PARALLEL = "parallel"

#: Names of the routing-context features, in the column order of :func:`context_features`.
CONTEXT_FEATURES = (
    "log_chars",
    "log_words",
    "numbers",
    "retrieved",
    "retrieval_quality",
    "earlier_confidence",
    "has_earlier",
)

_DIGITS = re.compile(r"\d")
_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_CALIBRATION_FOLDS = 3
_MIN_PER_CLASS_TO_CALIBRATE = _CALIBRATION_FOLDS
_TEMPERATURE_BOUNDS = (-4.0, 4.0)  # natural log of the temperature

Context = Mapping[str, Any]


def _fold(text: str) -> str:
    return _DIGITS.sub("0", text.lower())


def context_features(queries: Sequence[str], contexts: Sequence[Context | None] | None = None) -> np.ndarray:
    """The routing-context features of each query, scaled to about [0, 1] (columns: :data:`CONTEXT_FEATURES`).

    Args:
        queries: query texts.
        contexts: one mapping (or None) per query with what was known when routing:
            ``retrieval_quality`` (relevance of the best retrieved passage, in [0, 1]), ``retrieved``
            (whether any context was found; by default, whether ``retrieval_quality`` is a number) and
            ``earlier_confidences`` (the confidences of earlier routing decisions for the same request).
            Missing keys count as unknown: nothing retrieved, no earlier decision.

    Returns:
        An array of shape ``(len(queries), len(CONTEXT_FEATURES))``.

    Raises:
        ValueError: if ``contexts`` is given with a different length than ``queries``.
    """
    if contexts is not None and len(contexts) != len(queries):
        raise ValueError(
            f"contexts needs one entry (a mapping or None) per query: got {len(contexts)} for "
            f"{len(queries)} queries"
        )
    out = np.zeros((len(queries), len(CONTEXT_FEATURES)))
    for i, query in enumerate(queries):
        ctx = (contexts[i] if contexts is not None else None) or {}
        quality = ctx.get("retrieval_quality")
        quality = min(max(float(quality), 0.0), 1.0) if is_finite_number(quality) else None
        retrieved = ctx.get("retrieved")
        retrieved = bool(retrieved) if retrieved is not None else quality is not None
        earlier = [float(c) for c in ctx.get("earlier_confidences") or () if is_finite_number(c)]
        out[i] = (
            math.log1p(len(query)) / 6.0,
            math.log1p(len(query.split())) / 4.0,
            min(len(_NUMBER.findall(query)), 10) / 10.0,
            float(retrieved),
            quality if (retrieved and quality is not None) else 0.0,
            float(np.mean(earlier)) if earlier else 0.0,
            float(bool(earlier)),
        )
    return out


@dataclass(frozen=True)
class RoutingDecision:
    """What the router decided for one query.

    Attributes:
        agent: the chosen agent, or :data:`PARALLEL`.
        confidence: the calibrated probability of the most likely agent.
        probabilities: probability per agent; they sum to 1.
        features: a few readable facts about what the router saw: length, numbers, the routing context,
            and the words that pushed hardest towards the chosen agent.
    """

    agent: str
    confidence: float
    probabilities: dict[str, float]
    features: dict[str, Any] = field(default_factory=dict)


class MetaRouter:
    """Route queries to agents from TF-IDF n-grams and the routing context, with calibrated probabilities.

    Args:
        parallel_threshold: below this top probability, :meth:`route` answers :data:`PARALLEL`; 0 disables it.
        alpha: L2 regularisation strength of the classifier.
        max_iter: passes over the data in :meth:`fit`.
        context_weight: scale of the routing-context features beside the text features; 0 ignores them.
        calibration: ``"temperature"`` learns a temperature in :meth:`fit`; None keeps the raw scores
            (temperature 1).
        random_state: seed of the classifier's shuffling and of the calibration folds.

    Attributes:
        classes_: the agent names, in the column order of :meth:`predict_proba`.
        word_vectorizer_: the fitted word n-gram vectorizer.
        char_vectorizer_: the fitted character n-gram vectorizer.
        classifier_: the fitted :class:`~sklearn.linear_model.SGDClassifier`.
        temperature_: the calibration temperature (1.0 when not calibrated).
        n_samples_seen_: how many labelled queries the model has learned from.

    Example:
        >>> router = MetaRouter().fit(["square root of 2 to 4 decimals", "order jobs B and C"], ["TRM", "HRM"])
        >>> router.predict(["cube root of 9 to 3 decimals"]).tolist()
        ['TRM']
    """

    def __init__(
        self,
        *,
        parallel_threshold: float = 0.45,
        alpha: float = 1e-4,
        max_iter: int = 50,
        context_weight: float = 1.0,
        calibration: Literal["temperature"] | None = "temperature",
        random_state: int = 0,
    ) -> None:
        self.parallel_threshold = parallel_threshold
        self.alpha = alpha
        self.max_iter = max_iter
        self.context_weight = context_weight
        self.calibration = calibration
        self.random_state = random_state

    def fit(
        self,
        queries: Sequence[str],
        agents: Sequence[str],
        sample_weight: Sequence[float] | None = None,
        *,
        contexts: Sequence[Context | None] | None = None,
    ) -> MetaRouter:
        """Learn the vocabulary, the model and its temperature from labelled queries, replacing what was learned.

        The temperature is fitted on out-of-fold scores of a 3-fold split when every agent has at least three
        labels; otherwise it stays 1.

        Args:
            queries: query texts.
            agents: the agent that should answer each query.
            sample_weight: how much each label counts (e.g. :attr:`cl_plugin.learning.labels.RoutingLabel.weight`:
                an annotation more than a rating); equal by default.
            contexts: the routing context of each query (see :func:`context_features`).

        Returns:
            The router itself.

        Raises:
            ValueError: if the inputs are empty, of different lengths, or name fewer than two agents.
        """
        queries, agents = self._check(queries, agents)
        if len(set(agents)) < 2:
            raise ValueError(f"fit needs queries for at least two agents; got only {sorted(set(agents))}")
        weights = _weights(sample_weight, len(queries))
        self._fit_vectorizers(queries)
        x, y = self._transform(queries, contexts), np.asarray(agents)
        self.classifier_ = self._new_classifier(self.max_iter).fit(x, y, sample_weight=weights)
        self.classes_ = self.classifier_.classes_
        self.temperature_ = 1.0
        if self.calibration == "temperature":
            self.temperature_ = self._out_of_fold_temperature(x, y, weights)
        self.n_samples_seen_ = len(queries)
        return self

    def partial_fit(
        self,
        queries: Sequence[str],
        agents: Sequence[str],
        classes: Sequence[str] | None = None,
        sample_weight: Sequence[float] | None = None,
        *,
        contexts: Sequence[Context | None] | None = None,
    ) -> MetaRouter:
        """Update the model with one more batch of labelled queries (one pass of SGD).

        The temperature is kept; call :meth:`calibrate` with held-out labels to refresh it.

        Args:
            queries: query texts.
            agents: the agent that should answer each query.
            classes: every agent the model may ever predict; required on the first call only.
            sample_weight: how much each label counts; equal by default.
            contexts: the routing context of each query (see :func:`context_features`).

        Returns:
            The router itself.

        Raises:
            ValueError: if the inputs are empty or of different lengths, ``classes`` is missing on the first
                call, or a label is not one of the known classes.
        """
        queries, agents = self._check(queries, agents)
        if not hasattr(self, "classifier_"):
            if classes is None:
                raise ValueError("the first partial_fit needs classes=[...], every agent the router may pick")
            self._fit_vectorizers(queries)
            self.classifier_ = self._new_classifier(1000)
            self.temperature_ = 1.0
            self.n_samples_seen_ = 0
        known = (
            set(self.classifier_.classes_) if hasattr(self.classifier_, "classes_") else set(classes or ())
        )
        unknown = sorted(set(agents) - known)
        if unknown:
            raise ValueError(f"labels {unknown} are not among the router's classes {sorted(known)}")
        self.classifier_.partial_fit(
            self._transform(queries, contexts),
            agents,
            classes=classes,
            sample_weight=_weights(sample_weight, len(queries)),
        )
        self.classes_ = self.classifier_.classes_
        self.n_samples_seen_ += len(queries)
        return self

    def calibrate(
        self,
        queries: Sequence[str],
        agents: Sequence[str],
        *,
        contexts: Sequence[Context | None] | None = None,
    ) -> MetaRouter:
        """Refit the temperature on labelled queries the model did not learn from (the model is unchanged).

        Args:
            queries: held-out query texts.
            agents: the agent that should answer each.
            contexts: their routing context.

        Returns:
            The router itself.

        Raises:
            ValueError: if the router is not fitted, the inputs are empty or of different lengths, or a
                label is not one of the router's classes.
        """
        self._check_fitted()
        queries, agents = self._check(queries, agents)
        unknown = sorted(set(agents) - set(self.classes_))
        if unknown:
            raise ValueError(f"labels {unknown} are not among the router's classes {sorted(self.classes_)}")
        logits = self._logits(self._transform(queries, contexts))
        self.temperature_ = _fit_temperature(logits, self._class_index(agents), None)
        return self

    def predict_proba(
        self, queries: Sequence[str], *, contexts: Sequence[Context | None] | None = None
    ) -> np.ndarray:
        """Calibrated probability of each agent (columns in :attr:`classes_` order) per query; rows sum to 1."""
        self._check_fitted()
        return softmax(self._logits(self._transform(list(queries), contexts)) / self.temperature_, axis=1)

    def predict(
        self, queries: Sequence[str], *, contexts: Sequence[Context | None] | None = None
    ) -> np.ndarray:
        """The most likely agent for each query."""
        proba = self.predict_proba(queries, contexts=contexts)
        return self.classes_[np.argmax(proba, axis=1)]

    def score(
        self,
        queries: Sequence[str],
        agents: Sequence[str],
        *,
        contexts: Sequence[Context | None] | None = None,
    ) -> float:
        """Share of queries routed to the given agent."""
        return float(np.mean(self.predict(queries, contexts=contexts) == np.asarray(agents)))

    def route(self, query: str, context: Context | None = None) -> RoutingDecision:
        """Decide which agent answers one query.

        Args:
            query: the query text.
            context: what was known when routing (see :func:`context_features`).

        Returns:
            The decision: the top agent, or :data:`PARALLEL` when its probability is below
            ``parallel_threshold``, with every agent's probability and the features the router saw.
        """
        self._check_fitted()
        folded = [_fold(query)]
        words = self.word_vectorizer_.transform(folded)
        ctx = context_features([query], [context])
        x = self._stack(words, self.char_vectorizer_.transform(folded), ctx)
        proba = softmax(self._logits(x)[0] / self.temperature_)
        best = int(np.argmax(proba))
        confidence = float(proba[best])
        agent = str(self.classes_[best]) if confidence >= self.parallel_threshold else PARALLEL
        features: dict[str, Any] = {
            "n_chars": len(query),
            "n_words": len(query.split()),
            "n_numbers": len(_NUMBER.findall(query)),
            "retrieved": bool(ctx[0, 3]),
            "retrieval_quality": round(float(ctx[0, 4]), 4),
            "earlier_confidence": round(float(ctx[0, 5]), 4) if ctx[0, 6] else None,
            "top_terms": self._top_terms(words, best),
        }
        probabilities = {str(c): float(p) for c, p in zip(self.classes_, proba, strict=True)}
        return RoutingDecision(
            agent=agent, confidence=confidence, probabilities=probabilities, features=features
        )

    def scorer(self) -> Scorer:
        """A fast scorer of one query at a time, for serving (see :class:`Scorer`)."""
        self._check_fitted()
        return Scorer(self)

    # -- internals ------------------------------------------------------------------------------------

    def _new_classifier(self, max_iter: int) -> SGDClassifier:
        return SGDClassifier(
            loss="log_loss",
            alpha=self.alpha,
            max_iter=max_iter,
            tol=None,
            random_state=self.random_state,
        )

    def _out_of_fold_temperature(self, x: sparse.csr_matrix, y: np.ndarray, w: np.ndarray | None) -> float:
        """The temperature that best explains labels the model did not see, or 1 when too few labels."""
        _, counts = np.unique(y, return_counts=True)
        if counts.min() < _MIN_PER_CLASS_TO_CALIBRATE:
            return 1.0
        folds = StratifiedKFold(_CALIBRATION_FOLDS, shuffle=True, random_state=self.random_state)
        logits = np.zeros((len(y), len(self.classes_)))
        for train, held_out in folds.split(np.zeros(len(y)), y):
            part = self._new_classifier(self.max_iter).fit(
                x[train], y[train], sample_weight=None if w is None else w[train]
            )
            if len(part.classes_) != len(self.classes_):
                return 1.0
            logits[held_out] = _logits_of(part, x[held_out])
        return _fit_temperature(logits, self._class_index(y), w)

    def _class_index(self, agents: Sequence[str] | np.ndarray) -> np.ndarray:
        return np.searchsorted(self.classes_, np.asarray(agents))

    def _logits(self, x: sparse.csr_matrix) -> np.ndarray:
        return _logits_of(self.classifier_, x)

    def _top_terms(self, words: sparse.csr_matrix, best: int, n: int = 5) -> list[str]:
        """The word n-grams of a query that pushed hardest towards the chosen agent."""
        coef = self.classifier_.coef_
        row = coef[best] if coef.shape[0] > 1 else (coef[0] if best == 1 else -coef[0])
        push = words.data * row[: len(self._word_names)][words.indices]
        order = np.argsort(-push, kind="stable")[:n]
        return [str(self._word_names[words.indices[j]]) for j in order if push[j] > 0]

    def _check(self, queries: Sequence[str], agents: Sequence[str]) -> tuple[list[str], list[str]]:
        if not 0.0 <= self.parallel_threshold <= 1.0:
            raise ValueError(f"parallel_threshold must be in [0, 1] (got {self.parallel_threshold!r})")
        if not (is_finite_number(self.context_weight) and self.context_weight >= 0):
            raise ValueError(f"context_weight must be a finite number >= 0 (got {self.context_weight!r})")
        if self.calibration not in ("temperature", None):
            raise ValueError(f"calibration must be 'temperature' or None (got {self.calibration!r})")
        queries, agents = list(queries), [str(a) for a in agents]
        if not queries or len(queries) != len(agents):
            raise ValueError(
                f"need one agent label per query and at least one query (got {len(queries)} queries, "
                f"{len(agents)} labels)"
            )
        return queries, agents

    def _fit_vectorizers(self, queries: list[str]) -> None:
        folded = [_fold(q) for q in queries]
        self.word_vectorizer_ = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True).fit(folded)
        self.char_vectorizer_ = TfidfVectorizer(
            analyzer="char_wb", ngram_range=(2, 4), sublinear_tf=True
        ).fit(folded)
        self._word_names = self.word_vectorizer_.get_feature_names_out()

    def _transform(self, queries: list[str], contexts: Sequence[Context | None] | None) -> sparse.csr_matrix:
        folded = [_fold(q) for q in queries]
        return self._stack(
            self.word_vectorizer_.transform(folded),
            self.char_vectorizer_.transform(folded),
            context_features(queries, contexts),
        )

    def _stack(self, words: sparse.spmatrix, chars: sparse.spmatrix, ctx: np.ndarray) -> sparse.csr_matrix:
        return sparse.hstack([words, chars, sparse.csr_matrix(ctx * self.context_weight)]).tocsr()

    def _check_fitted(self) -> None:
        if not hasattr(self, "classes_"):
            raise ValueError("this MetaRouter is not fitted yet; call fit() or partial_fit() first")


class Scorer:
    """A fitted router's probabilities for one query at a time, without building sparse matrices.

    Serving decides one request at a time, where scikit-learn's per-call overhead (vectorizer transforms,
    sparse stacking) costs milliseconds. The scorer computes the same numbers directly: the vectorizers'
    analyzers give the n-grams, their vocabulary and idf give the TF-IDF values, and the classifier's
    weights are read column by column. :meth:`proba` equals :meth:`MetaRouter.predict_proba` for the query
    to rounding. It holds a copy of the weights (a few MB at most); build one per model version.
    """

    def __init__(self, router: MetaRouter) -> None:
        self.classes = [str(c) for c in router.classes_]
        self._parts = []
        for vectorizer in (router.word_vectorizer_, router.char_vectorizer_):
            self._parts.append(
                (
                    vectorizer.build_analyzer(),
                    vectorizer.vocabulary_,
                    vectorizer.idf_,
                    vectorizer.sublinear_tf,
                )
            )
        self._word_size = len(router.word_vectorizer_.vocabulary_)
        coef = np.asarray(router.classifier_.coef_, dtype=float)
        intercept = np.asarray(router.classifier_.intercept_, dtype=float)
        if coef.shape[0] == 1:  # two classes: the model scores the second against the first
            coef = np.vstack([np.zeros_like(coef[0]), coef[0]])
            intercept = np.array([0.0, intercept[0]])
        self._coef_t = np.ascontiguousarray(coef.T)  # one row per feature
        self._intercept = intercept
        self._context_weight = float(router.context_weight)
        self._temperature = float(router.temperature_)

    def proba(self, query: str, context: Context | None = None) -> np.ndarray:
        """The calibrated probability of each class (in :attr:`classes` order) for one query."""
        folded = _fold(query)
        logits = self._intercept.copy()
        offset = 0
        for analyze, vocabulary, idf, sublinear in self._parts:
            counts: dict[int, int] = {}
            for gram in analyze(folded):
                j = vocabulary.get(gram)
                if j is not None:
                    counts[j] = counts.get(j, 0) + 1
            if counts:
                index = np.fromiter(counts, dtype=np.intp, count=len(counts))
                tf = np.fromiter(counts.values(), dtype=float, count=len(counts))
                values = (np.log(tf) + 1.0 if sublinear else tf) * idf[index]
                values /= math.sqrt(float(values @ values))
                logits += values @ self._coef_t[index + offset]
            offset += len(vocabulary)
        if self._context_weight:
            if context is None:  # only the query's own features; the rest are 0
                logits += self._context_weight * (
                    math.log1p(len(query)) / 6.0 * self._coef_t[offset]
                    + math.log1p(len(query.split())) / 4.0 * self._coef_t[offset + 1]
                    + min(len(_NUMBER.findall(query)), 10) / 10.0 * self._coef_t[offset + 2]
                )
            else:
                ctx = context_features([query], [context])[0] * self._context_weight
                logits += ctx @ self._coef_t[offset:]
        z = logits / self._temperature
        e = np.exp(z - z.max())
        return e / e.sum()


def _logits_of(classifier: SGDClassifier, x: sparse.csr_matrix) -> np.ndarray:
    """Per-class scores whose softmax is the model's probability (two classes: ``[0, z]``)."""
    z = classifier.decision_function(x)
    if z.ndim == 1:
        return np.column_stack([np.zeros_like(z), z])
    return z


def _fit_temperature(logits: np.ndarray, target: np.ndarray, weights: np.ndarray | None) -> float:
    """The temperature minimising the (weighted) negative log-likelihood of the true classes (MAP)."""
    rows = np.arange(len(target))
    w = np.ones(len(target)) if weights is None else weights

    # A standard normal prior on log T keeps a handful of labels, all predicted right, from driving the
    # temperature to zero and every probability to exactly 1; with many labels the data decide.
    def nll(log_t: float) -> float:
        fit = -np.sum(w * log_softmax(logits / math.exp(log_t), axis=1)[rows, target])
        return float(fit + 0.5 * log_t**2)

    best = minimize_scalar(nll, bounds=_TEMPERATURE_BOUNDS, method="bounded")
    return float(math.exp(best.x))


def _weights(sample_weight: Sequence[float] | None, n: int) -> np.ndarray | None:
    """Checked sample weights: one finite, non-negative number per query, not all zero."""
    if sample_weight is None:
        return None
    w = np.asarray(sample_weight, dtype=float)
    if w.shape != (n,):
        raise ValueError(f"sample_weight needs one weight per query ({n}); got shape {w.shape}")
    if not np.all(np.isfinite(w)) or np.any(w < 0) or not np.any(w > 0):
        raise ValueError("sample_weight must be finite, non-negative and not all zero")
    return w
