"""Text drift of user queries: can a classifier tell production queries from the reference ones?

Two measures, after Evidently and Phoenix:

* **domain classifier**: TF-IDF and logistic regression trained to tell reference from current queries;
  its cross-validated ROC-AUC is 0.5 when the two are alike. Drift when the AUC passes
  ``max(0.55, 95th percentile of a random classifier's AUC)`` (Evidently's rule for both small and large
  samples); the words that most mark current queries say what changed.
* **embedding centroids** (when a LangChain ``Embeddings`` is given): cosine distance between the mean
  embeddings, with a permutation p-value.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from scipy import stats
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline

from cl_plugin.errors import DriftInputError

if TYPE_CHECKING:
    from langchain_core.embeddings import Embeddings

__all__ = ["TextDriftResult", "text_drift"]

_MIN_TEXTS = 10


@dataclass(frozen=True)
class TextDriftResult:
    """Whether production texts drifted from the reference texts.

    Attributes:
        drifted: the classifier's AUC passed its threshold, or the centroid distance is significant.
        roc_auc: cross-validated ROC-AUC of the domain classifier.
        auc_threshold: the AUC that counts as drift for these sample sizes.
        top_terms: words and bigrams that most mark the current texts.
        centroid_distance: cosine distance of the mean embeddings, or None without embeddings.
        centroid_p_value: its permutation p-value, or None without embeddings.
        n_reference: reference texts.
        n_current: current texts.
    """

    drifted: bool
    roc_auc: float
    auc_threshold: float
    top_terms: list[str]
    centroid_distance: float | None
    centroid_p_value: float | None
    n_reference: int
    n_current: int


def _texts(values: Sequence[str], name: str) -> list[str]:
    if isinstance(values, str) or len(values) < _MIN_TEXTS or not all(isinstance(v, str) for v in values):
        raise DriftInputError(
            f"{name} must be a list of at least {_MIN_TEXTS} strings (got {type(values).__name__} of "
            f"{len(values) if not isinstance(values, str) else 1})",
            field=name,
        )
    return list(values)


def _centroid_test(
    ref: np.ndarray, cur: np.ndarray, permutations: int, rng: np.random.Generator
) -> tuple[float, float]:
    def distance(a: np.ndarray, b: np.ndarray) -> float:
        ca, cb = a.mean(axis=0), b.mean(axis=0)
        return float(1 - ca @ cb / (np.linalg.norm(ca) * np.linalg.norm(cb) or 1.0))

    observed = distance(ref, cur)
    pooled = np.vstack([ref, cur])
    n = len(ref)
    exceed = 0
    for _ in range(permutations):
        order = rng.permutation(len(pooled))
        exceed += distance(pooled[order[:n]], pooled[order[n:]]) >= observed
    return observed, (1 + exceed) / (1 + permutations)


def text_drift(
    reference: Sequence[str],
    current: Sequence[str],
    *,
    embeddings: Embeddings | None = None,
    folds: int = 5,
    alpha: float = 0.05,
    permutations: int = 200,
    seed: int = 0,
) -> TextDriftResult:
    """Compare production texts (queries, say) with reference texts.

    Args:
        reference: the reference texts (for example the queries the router was trained on).
        current: recent production texts.
        embeddings: a LangChain ``Embeddings``; when given, the centroid distance is tested too.
        folds: cross-validation folds of the domain classifier.
        alpha: level of the centroid permutation test.
        permutations: label permutations of that test.
        seed: seed of the folds and permutations.

    Returns:
        The classifier's AUC against its threshold, the most telling terms, and the centroid test.

    Raises:
        DriftInputError: either side has fewer than 10 texts, or holds something other than strings.
    """
    ref, cur = _texts(reference, "reference"), _texts(current, "current")
    texts = ref + cur
    labels = np.r_[np.zeros(len(ref)), np.ones(len(cur))]
    model = make_pipeline(
        TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True), LogisticRegression(max_iter=1000)
    )
    splits = StratifiedKFold(n_splits=min(folds, len(ref), len(cur)), shuffle=True, random_state=seed)
    scores = cross_val_predict(model, texts, labels, cv=splits, method="decision_function")
    auc = float(roc_auc_score(labels, scores))
    n, m = len(ref), len(cur)
    # Under no drift the AUC is a Mann-Whitney statistic: mean 0.5, sd sqrt((n + m + 1) / (12 n m)).
    null_95 = 0.5 + float(stats.norm.ppf(0.95)) * float(np.sqrt((n + m + 1) / (12 * n * m)))
    threshold = max(0.55, null_95)
    model.fit(texts, labels)
    vocabulary = model[0].get_feature_names_out()
    top_terms = [str(vocabulary[i]) for i in np.argsort(model[1].coef_[0])[::-1][:10]]
    distance = p_value = None
    if embeddings is not None:
        vectors = np.asarray(embeddings.embed_documents(texts), dtype=float)
        distance, p_value = _centroid_test(
            vectors[:n], vectors[n:], permutations, np.random.default_rng(seed)
        )
    drifted = auc > threshold or (p_value is not None and p_value < alpha)
    return TextDriftResult(drifted, auc, threshold, top_terms, distance, p_value, n, m)
