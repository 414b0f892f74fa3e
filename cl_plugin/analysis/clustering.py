"""Clustering of failed queries: similar failures grouped and named by their terms and queries.

Texts are vectorised with TF-IDF over words (1-2 grams, English stop words out) and character n-grams (3-5,
within word boundaries), or with any LangChain ``Embeddings`` object (``embed_documents``). Then:

1. DBSCAN with cosine distance (``eps = 1 - similarity_threshold``, ``min_samples = min_cluster_size``)
   finds groups of near-identical failures. Identical texts are counted once with their multiplicity as
   DBSCAN's sample weight.
2. People describe one problem in several wordings, which DBSCAN keeps apart. Groups are merged greedily
   while the merge raises the modularity of the similarity graph (Clauset, Newman and Moore, 2004): two
   groups join when the similarity between them exceeds what their overall similarity to everything else
   predicts, so groups sharing a topic join and groups sharing only generic words ("urgent", "please help")
   do not.
3. Above ``max_exact`` texts, steps 1 and 2 run on a seeded sample and every other text joins the group whose
   centroid it is closest to, when it is at least as close as the group's own least typical member; otherwise
   it is noise (-1). Centroid similarities use a TruncatedSVD reduction of TF-IDF to ``n_components``
   dimensions, so assigning a million texts costs one sparse projection and a small matrix product.

Each cluster is summarised by its most distinctive words and the queries closest to its centroid.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import sparse
from sklearn.cluster import DBSCAN
from sklearn.decomposition import TruncatedSVD
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.preprocessing import normalize

if TYPE_CHECKING:
    from langchain_core.embeddings import Embeddings

__all__ = ["FailureClusterer", "QueryCluster"]

_TOKEN = r"(?u)\b[^\W\d_][\w'-]*\b"  # words that start with a letter: numbers and ids are not topics
_CHUNK = 20_000


@dataclass(frozen=True, slots=True)
class QueryCluster:
    """A group of similar failed queries.

    Attributes:
        cluster_id: the label its members carry (0 is the largest cluster).
        size: how many of the clustered texts belong to it.
        top_terms: its most distinctive words, most distinctive first.
        representatives: distinct member queries closest to its centroid.
        cohesion: mean cosine similarity of its members to its centroid.
    """

    cluster_id: int
    size: int
    top_terms: tuple[str, ...]
    representatives: tuple[str, ...]
    cohesion: float

    @property
    def name(self) -> str:
        """The cluster's top terms joined, for messages: ``"refund, eur, billing"``."""
        return ", ".join(self.top_terms[:3]) or f"cluster {self.cluster_id}"


class FailureClusterer:
    """Groups similar texts (failed queries) with DBSCAN and a modularity merge.

    Args:
        min_cluster_size: DBSCAN's ``min_samples``: texts (counting repeats) a dense group needs.
        similarity_threshold: cosine similarity at which two texts are neighbours (``eps = 1 - it``).
        embeddings: a LangChain ``Embeddings``; None uses TF-IDF over words and character n-grams.
        max_exact: above this many texts, fit on a seeded sample of this size and assign the rest.
        n_components: dimensions of the reduction used to assign texts to clusters.
        random_state: seed of the sample and the reduction.

    Attributes:
        labels_: cluster of each fitted text (-1: noise).
        clusters_: the clusters, largest first.
        sampled_: whether the fit used a sample (``len(texts) > max_exact``).

    Example:
        >>> texts = ["refund in EUR not credited"] * 6 + ["pods evicted on node worker-3"] * 6 + ["hello"]
        >>> model = FailureClusterer(min_cluster_size=3).fit(texts)
        >>> model.labels_.tolist()
        [0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, -1]
        >>> model.predict(["refund in EUR still not credited"]).tolist()
        [0]
    """

    def __init__(
        self,
        *,
        min_cluster_size: int = 5,
        similarity_threshold: float = 0.7,
        embeddings: Embeddings | None = None,
        max_exact: int = 4000,
        n_components: int = 100,
        random_state: int = 0,
    ) -> None:
        self.min_cluster_size = min_cluster_size
        self.similarity_threshold = similarity_threshold
        self.embeddings = embeddings
        self.max_exact = max_exact
        self.n_components = n_components
        self.random_state = random_state

    # --- fitting ----------------------------------------------------------------------------------------

    def fit(self, texts: Sequence[str], vectors: Any = None) -> FailureClusterer:
        """Cluster ``texts``.

        Args:
            texts: the failed queries.
            vectors: their embeddings as computed by the application (one row per text), used instead of
                ``embeddings`` or TF-IDF; texts that repeat take the first one's vector. The words of the
                texts still name the clusters.

        Returns:
            self, with ``labels_``, ``clusters_`` and ``sampled_`` set.
        """
        texts = [t if isinstance(t, str) else "" for t in texts]
        n = len(texts)
        self._given = vectors is not None
        if self._given:
            vectors = _given_vectors(vectors, n)
        self.labels_ = np.full(n, -1, dtype=np.int64)
        self.clusters_: list[QueryCluster] = []
        self.sampled_ = n > self.max_exact
        self._centroids = np.empty((0, 0))
        self._radius = np.empty(0)
        self._micro_to_final = np.empty(0, dtype=np.int64)
        if n < self.min_cluster_size:
            return self
        rng = np.random.default_rng(self.random_state)
        sample = np.sort(rng.choice(n, self.max_exact, replace=False)) if self.sampled_ else np.arange(n)
        uniq, inverse, counts = _dedupe([texts[i] for i in sample])
        x, words = self._vectorize_fit(uniq, None if vectors is None else vectors[sample[_firsts(inverse)]])
        if x is None:
            return self
        micro = DBSCAN(
            eps=1.0 - self.similarity_threshold, min_samples=self.min_cluster_size, metric="cosine"
        ).fit_predict(x, sample_weight=counts)
        if micro.max() < 0:
            return self
        groups = _merge_by_modularity(x, micro, counts)
        self._micro_to_final = groups
        self._fit_assignment(x, micro, counts)
        self.labels_[sample] = np.where(micro >= 0, groups[np.maximum(micro, 0)], -1)[inverse]
        if self.sampled_:
            rest = np.setdiff1d(np.arange(n), sample, assume_unique=True)
            self.labels_[rest] = self.predict(
                [texts[i] for i in rest], None if vectors is None else vectors[rest]
            )
        # Number the clusters by size, largest first.
        order = np.argsort(
            -np.bincount(self.labels_[self.labels_ >= 0], minlength=groups.max() + 1), kind="stable"
        )
        rank = np.empty_like(order)
        rank[order] = np.arange(len(order))
        self._micro_to_final = rank[groups]
        self.labels_ = np.where(self.labels_ >= 0, rank[np.maximum(self.labels_, 0)], -1)
        final_u = np.where(micro >= 0, self._micro_to_final[np.maximum(micro, 0)], -1)
        self.clusters_ = self._summaries(uniq, x, words, final_u, counts)
        return self

    def _vectorize_fit(self, uniq: list[str], given: np.ndarray | None) -> tuple[Any, Any]:
        """Fit the vectorisers on the distinct texts; return their unit vectors and word TF-IDF."""
        self._word = TfidfVectorizer(
            ngram_range=(1, 2), sublinear_tf=True, stop_words="english", token_pattern=_TOKEN
        )
        try:
            words = self._word.fit_transform(uniq)
        except ValueError:  # no word survives (only numbers or stop words)
            self._word, words = None, None
        if given is not None or self.embeddings is not None:
            x = normalize(given) if given is not None else self._embed(uniq)
            self._svd = None
            return x, words
        self._char = TfidfVectorizer(analyzer="char_wb", ngram_range=(3, 5), sublinear_tf=True)
        try:
            chars = self._char.fit_transform(uniq)
        except ValueError:  # only empty texts
            return None, None
        x = normalize(sparse.hstack([b for b in (words, chars) if b is not None]).tocsr())
        k = min(self.n_components, x.shape[1] - 1, x.shape[0] - 1)
        self._svd = TruncatedSVD(k, random_state=self.random_state).fit(x) if k >= 2 else None
        return x, words

    def _embed(self, texts: list[str]) -> np.ndarray:
        assert self.embeddings is not None
        return normalize(np.asarray(self.embeddings.embed_documents(texts), dtype=np.float64))

    def _transform(self, texts: list[str]) -> Any:
        """Unit vectors of ``texts`` in the fitted space."""
        if self.embeddings is not None:
            return self._embed(texts)
        blocks = [v.transform(texts) for v in (self._word, self._char) if v is not None]
        return normalize(sparse.hstack(blocks).tocsr())

    def _reduce(self, x: Any) -> np.ndarray:
        """Dense vectors whose dot product with a unit centroid is the cosine in the full space."""
        if self._svd is not None:
            return self._svd.transform(x)
        return x.toarray() if sparse.issparse(x) else np.asarray(x)

    def _fit_assignment(self, x: Any, micro: np.ndarray, counts: np.ndarray) -> None:
        """Micro-cluster centroids, and how close a text must be to join one (its least typical member)."""
        z = self._reduce(x)
        members = micro >= 0
        m = int(micro.max()) + 1
        ind = sparse.csr_matrix(
            (counts[members], (micro[members], np.flatnonzero(members))), shape=(m, len(z))
        )
        centroids = normalize(np.asarray(ind @ z))
        sims = np.einsum("ij,ij->i", z[members], centroids[micro[members]])
        radius = np.full(m, np.inf)
        np.minimum.at(radius, micro[members], sims)
        self._centroids, self._radius = centroids, radius

    def _summaries(
        self, uniq: list[str], x: Any, words: Any, final_u: np.ndarray, counts: np.ndarray
    ) -> list[QueryCluster]:
        n_final = int(final_u.max()) + 1
        sizes = np.bincount(self.labels_[self.labels_ >= 0], minlength=n_final)
        members = final_u >= 0
        ind = sparse.csr_matrix(
            (counts[members], (final_u[members], np.flatnonzero(members))), shape=(n_final, len(uniq))
        )
        sums = ind @ x
        centroids = normalize(sums.toarray() if sparse.issparse(sums) else np.asarray(sums))
        terms: list[tuple[str, ...]] = [() for _ in range(n_final)]
        if words is not None and self._word is not None:
            vocab = self._word.get_feature_names_out()
            overall = np.asarray(words.T @ counts).ravel() / counts.sum()
            inside = np.asarray((ind @ words).todense()) / np.maximum(ind.sum(axis=1), 1)
            lift = np.asarray(inside) - overall
            terms = [tuple(vocab[j] for j in np.argsort(-row)[:5] if row[j] > 0) for row in lift]
        out = []
        for c in range(n_final):
            idx = np.flatnonzero(final_u == c)
            sims = np.asarray(x[idx] @ centroids[c]).ravel()
            best = idx[np.argsort(-sims)[:3]]
            out.append(
                QueryCluster(
                    cluster_id=c,
                    size=int(sizes[c]),
                    top_terms=terms[c],
                    representatives=tuple(uniq[i] for i in best),
                    cohesion=float(np.average(sims, weights=counts[idx])),
                )
            )
        return out

    # --- assignment -------------------------------------------------------------------------------------

    def predict(self, texts: Sequence[str], vectors: Any = None) -> np.ndarray:
        """The cluster each text belongs to, or -1 when it is not close enough to any.

        Args:
            texts: any texts (failed or not).
            vectors: their embeddings; required when the model was fitted on given vectors.

        Returns:
            An int array of cluster ids.

        Raises:
            ValueError: the model was fitted on given vectors and none are given (or the other way round).
        """
        labels = np.full(len(texts), -1, dtype=np.int64)
        if (vectors is not None) != getattr(self, "_given", False):
            raise ValueError(
                "predict needs vectors exactly when fit had them: the clusters live in that vector space"
            )
        if not len(self._radius) or not len(texts):
            return labels
        uniq, inverse, _ = _dedupe([t if isinstance(t, str) else "" for t in texts])
        given = None if vectors is None else normalize(_given_vectors(vectors, len(texts))[_firsts(inverse)])
        out = np.full(len(uniq), -1, dtype=np.int64)
        for start in range(0, len(uniq), _CHUNK):
            stop = start + _CHUNK
            z = self._reduce(given[start:stop] if given is not None else self._transform(uniq[start:stop]))
            sims = z @ self._centroids.T
            best = sims.argmax(axis=1)
            close = sims[np.arange(len(best)), best] >= self._radius[best]
            out[start : start + len(best)] = np.where(close, self._micro_to_final[best], -1)
        labels[:] = out[inverse]
        return labels


def _given_vectors(vectors: Any, n: int) -> np.ndarray:
    x = np.asarray(vectors, dtype=np.float64)
    if x.ndim != 2 or len(x) != n or not np.isfinite(x).all():
        raise ValueError(f"vectors must be a finite {n} x d array, one row per text (got shape {x.shape})")
    return x


def _firsts(inverse: np.ndarray) -> np.ndarray:
    """For each distinct text (numbered by :func:`_dedupe`), the position of its first occurrence."""
    _, first = np.unique(inverse, return_index=True)
    return first


def _dedupe(texts: list[str]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Distinct texts in first-seen order, each text's index among them, and their counts."""
    index: dict[str, int] = {}
    inverse = np.fromiter((index.setdefault(t, len(index)) for t in texts), dtype=np.int64, count=len(texts))
    return list(index), inverse, np.bincount(inverse, minlength=len(index)).astype(np.float64)


def _merge_by_modularity(x: Any, micro: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Greedy modularity agglomeration of DBSCAN groups; returns each group's merged id.

    The graph joins every pair of texts with their cosine similarity, so the weight between two groups is
    the dot product of their (count-weighted) vector sums and a node's degree is its dot product with the
    sum of all texts. Noise points count in the degrees but are never merged.
    """
    m = int(micro.max()) + 1
    members = micro >= 0
    ind = sparse.csr_matrix(
        (counts[members], (micro[members], np.flatnonzero(members))), shape=(m, x.shape[0])
    )
    sums = ind @ x
    total = np.asarray(x.T @ counts).ravel()
    w = float(total @ total)
    e = sums @ sums.T
    e = (e.toarray() if sparse.issparse(e) else np.asarray(e)) / w
    a = np.asarray(sums @ total).ravel() / w
    group = np.arange(m)
    active = np.ones(m, dtype=bool)
    while active.sum() > 1:
        gain = e - np.outer(a, a)
        np.fill_diagonal(gain, -np.inf)
        gain[~active, :] = -np.inf
        gain[:, ~active] = -np.inf
        i, j = np.unravel_index(int(np.argmax(gain)), gain.shape)
        if gain[i, j] <= 0:
            break
        e[i, :] += e[j, :]
        e[:, i] += e[:, j]
        a[i] += a[j]
        active[j] = False
        group[group == j] = i
    _, dense = np.unique(group, return_inverse=True)
    return dense
