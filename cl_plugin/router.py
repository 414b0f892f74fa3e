"""The meta-controller: a text classifier that picks the agent for a query.

:class:`MetaRouter` is a scikit-learn style estimator: the constructor stores parameters, :meth:`~MetaRouter.fit`
learns, learned state ends in ``_``. Features are word (1-2)-gram and character (2-4)-gram TF-IDF vectors of
the query with digits folded to ``0`` (the numbers of a problem say little about who should solve it); the
model is a logistic-loss :class:`~sklearn.linear_model.SGDClassifier`, so :meth:`~MetaRouter.partial_fit`
updates it with new labelled decisions without a full retrain. The vocabulary is fixed by the first fit;
call :meth:`~MetaRouter.fit` again to relearn it.

:meth:`~MetaRouter.route` turns the probabilities into a decision: the most likely agent, or
:data:`PARALLEL` (run every agent and compare) when the top probability is below ``parallel_threshold``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import sparse
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import SGDClassifier

__all__ = ["PARALLEL", "MetaRouter", "RoutingDecision"]

#: The route that runs every agent and lets them vote.
PARALLEL = "parallel"

_DIGITS = re.compile(r"\d")


def _fold(text: str) -> str:
    return _DIGITS.sub("0", text.lower())


@dataclass(frozen=True)
class RoutingDecision:
    """What the router decided for one query.

    Attributes:
        agent: the chosen agent, or :data:`PARALLEL`.
        confidence: the probability of the most likely agent.
        probabilities: probability per agent; they sum to 1.
        features: a few readable facts about what the router saw: length, numbers, and the words that
            pushed hardest towards the chosen agent.
    """

    agent: str
    confidence: float
    probabilities: dict[str, float]
    features: dict[str, Any] = field(default_factory=dict)


class MetaRouter:
    """Route queries to agents with TF-IDF n-gram features and a logistic-loss linear model.

    Args:
        parallel_threshold: below this top probability, :meth:`route` answers :data:`PARALLEL`; 0 disables it.
        alpha: L2 regularisation strength of the classifier.
        max_iter: passes over the data in :meth:`fit`.
        random_state: seed of the classifier's shuffling.

    Attributes:
        classes_: the agent names, in the column order of :meth:`predict_proba`.
        word_vectorizer_: the fitted word n-gram vectorizer.
        char_vectorizer_: the fitted character n-gram vectorizer.
        classifier_: the fitted :class:`~sklearn.linear_model.SGDClassifier`.
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
        random_state: int = 0,
    ) -> None:
        self.parallel_threshold = parallel_threshold
        self.alpha = alpha
        self.max_iter = max_iter
        self.random_state = random_state

    def fit(
        self, queries: Sequence[str], agents: Sequence[str], sample_weight: Sequence[float] | None = None
    ) -> MetaRouter:
        """Learn the vocabulary and the model from labelled queries, replacing what was learned before.

        Args:
            queries: query texts.
            agents: the agent that should answer each query.
            sample_weight: how much each label counts (e.g. :attr:`cl_plugin.labels.RoutingLabel.weight`:
                an annotation more than a rating); equal by default.

        Returns:
            The router itself.

        Raises:
            ValueError: if the inputs are empty, of different lengths, or name fewer than two agents.
        """
        queries, agents = self._check(queries, agents)
        if len(set(agents)) < 2:
            raise ValueError(f"fit needs queries for at least two agents; got only {sorted(set(agents))}")
        self._fit_vectorizers(queries)
        self.classifier_ = SGDClassifier(
            loss="log_loss",
            alpha=self.alpha,
            max_iter=self.max_iter,
            tol=None,
            random_state=self.random_state,
        ).fit(self._transform(queries), agents, sample_weight=_weights(sample_weight, len(queries)))
        self.classes_ = self.classifier_.classes_
        self.n_samples_seen_ = len(queries)
        return self

    def partial_fit(
        self,
        queries: Sequence[str],
        agents: Sequence[str],
        classes: Sequence[str] | None = None,
        sample_weight: Sequence[float] | None = None,
    ) -> MetaRouter:
        """Update the model with one more batch of labelled queries (one pass of SGD).

        Args:
            queries: query texts.
            agents: the agent that should answer each query.
            classes: every agent the model may ever predict; required on the first call only.
            sample_weight: how much each label counts; equal by default.

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
            self.classifier_ = SGDClassifier(
                loss="log_loss", alpha=self.alpha, random_state=self.random_state
            )
            self.n_samples_seen_ = 0
        known = (
            set(self.classifier_.classes_) if hasattr(self.classifier_, "classes_") else set(classes or ())
        )
        unknown = sorted(set(agents) - known)
        if unknown:
            raise ValueError(f"labels {unknown} are not among the router's classes {sorted(known)}")
        self.classifier_.partial_fit(
            self._transform(queries),
            agents,
            classes=classes,
            sample_weight=_weights(sample_weight, len(queries)),
        )
        self.classes_ = self.classifier_.classes_
        self.n_samples_seen_ += len(queries)
        return self

    def predict_proba(self, queries: Sequence[str]) -> np.ndarray:
        """Probability of each agent (columns in :attr:`classes_` order) for each query; rows sum to 1."""
        self._check_fitted()
        return self.classifier_.predict_proba(self._transform(list(queries)))

    def predict(self, queries: Sequence[str]) -> np.ndarray:
        """The most likely agent for each query."""
        proba = self.predict_proba(queries)
        return self.classes_[np.argmax(proba, axis=1)]

    def score(self, queries: Sequence[str], agents: Sequence[str]) -> float:
        """Share of queries routed to the given agent."""
        return float(np.mean(self.predict(queries) == np.asarray(agents)))

    def route(self, query: str) -> RoutingDecision:
        """Decide which agent answers one query.

        Args:
            query: the query text.

        Returns:
            The decision: the top agent, or :data:`PARALLEL` when its probability is below
            ``parallel_threshold``, with every agent's probability and the features the router saw.
        """
        self._check_fitted()
        words = self.word_vectorizer_.transform([_fold(query)])
        x = sparse.hstack([words, self.char_vectorizer_.transform([_fold(query)])]).tocsr()
        proba = self.classifier_.predict_proba(x)[0]
        best = int(np.argmax(proba))
        confidence = float(proba[best])
        agent = str(self.classes_[best]) if confidence >= self.parallel_threshold else PARALLEL
        features = {
            "n_chars": len(query),
            "n_words": len(query.split()),
            "n_numbers": len(re.findall(r"\d+(?:\.\d+)?", query)),
            "top_terms": self._top_terms(words, best),
        }
        probabilities = {str(c): float(p) for c, p in zip(self.classes_, proba, strict=True)}
        return RoutingDecision(
            agent=agent, confidence=confidence, probabilities=probabilities, features=features
        )

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

    def _transform(self, queries: list[str]) -> sparse.csr_matrix:
        folded = [_fold(q) for q in queries]
        return sparse.hstack(
            [self.word_vectorizer_.transform(folded), self.char_vectorizer_.transform(folded)]
        ).tocsr()

    def _check_fitted(self) -> None:
        if not hasattr(self, "classes_"):
            raise ValueError("this MetaRouter is not fitted yet; call fit() or partial_fit() first")


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
