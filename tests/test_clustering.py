"""Clustering of failed queries: planted themes recovered, clusters named, new texts assigned."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from cl_plugin.graphs.failures import planted_failures
from langchain_core.embeddings import Embeddings
from sklearn.metrics import adjusted_rand_score

from cl_plugin.analysis.clustering import FailureClusterer


def _failures(n: int, seed: int = 0, themes: int = 5) -> tuple[list[str], list[str]]:
    rows, labels = planted_failures(n, seed=seed, themes=themes)
    pairs = [(r["user_query"], label) for r, label in zip(rows, labels, strict=True) if label]
    return [q for q, _ in pairs], [label for _, label in pairs]


@pytest.fixture(scope="module")
def fitted() -> tuple[FailureClusterer, list[str], list[str]]:
    texts, labels = _failures(3000, seed=0)
    return FailureClusterer().fit(texts), texts, labels


def test_planted_themes_are_recovered(fitted: tuple[FailureClusterer, list[str], list[str]]) -> None:
    model, _, labels = fitted
    ari = adjusted_rand_score(labels, model.labels_)
    assert ari >= 0.8, f"adjusted Rand index {ari:.3f}"
    assert len(model.clusters_) == 5 and not model.sampled_


def test_eight_themes_are_recovered_too() -> None:
    texts, labels = _failures(3000, seed=1, themes=8)
    assert adjusted_rand_score(labels, FailureClusterer().fit(texts).labels_) >= 0.8


def test_large_inputs_fit_on_a_sample_and_still_recover_the_themes() -> None:
    texts, labels = _failures(16000, seed=2)
    model = FailureClusterer(max_exact=2000).fit(texts)
    assert model.sampled_
    assert adjusted_rand_score(labels, model.labels_) >= 0.8


def test_clusters_are_named_by_their_theme_words(
    fitted: tuple[FailureClusterer, list[str], list[str]],
) -> None:
    model, texts, labels = fitted
    expected = {
        "billing refunds in EUR": "refund",
        "kubernetes pod eviction": "evicted",
        "password reset emails": "password",
        "PDF export timeouts": "pdf",
        "SQL join performance": "join",
    }
    for cluster in model.clusters_:
        members = [labels[i] for i in np.flatnonzero(model.labels_ == cluster.cluster_id)]
        theme = Counter(members).most_common(1)[0][0]
        assert expected[theme] in " ".join(cluster.top_terms)
        assert all(q in texts for q in cluster.representatives)
        assert cluster.size == len(members) and 0 < cluster.cohesion <= 1
    sizes = [c.size for c in model.clusters_]
    assert sizes == sorted(sizes, reverse=True)


def test_new_texts_join_their_theme_and_unrelated_texts_join_none(
    fitted: tuple[FailureClusterer, list[str], list[str]],
) -> None:
    model, texts, _ = fitted
    refund = model.labels_[texts.index(next(t for t in texts if "refund" in t))]
    got = model.predict(["my refund of 40 EUR was not credited back to my card", "recipe for banana bread"])
    assert got.tolist() == [refund, -1]


def test_too_few_or_empty_texts_give_no_clusters() -> None:
    assert FailureClusterer().fit(["a", "b"]).clusters_ == []
    model = FailureClusterer(min_cluster_size=2).fit(["", "", " ", None])  # type: ignore[list-item]
    assert model.clusters_ == [] and model.labels_.tolist() == [-1] * 4
    assert model.predict(["anything"]).tolist() == [-1]
    repeated = FailureClusterer(min_cluster_size=2).fit(["", "the", "the"])
    assert repeated.labels_.tolist() == [-1, 0, 0] and repeated.clusters_[0].top_terms == ()


def test_the_same_seed_gives_the_same_clusters() -> None:
    texts, _ = _failures(8000, seed=3)
    a = FailureClusterer(max_exact=1500, random_state=4).fit(texts)
    b = FailureClusterer(max_exact=1500, random_state=4).fit(texts)
    assert np.array_equal(a.labels_, b.labels_) and a.clusters_ == b.clusters_


class _KeywordEmbeddings(Embeddings):
    """Counts a few topic words: a stand-in for a sentence embedding model that also counts its calls."""

    words = ("refund", "pod", "password", "pdf", "join")

    def __init__(self) -> None:
        self.calls = 0

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        self.calls += 1
        return [[float(w in t.lower()) for w in self.words] + [0.1] for t in texts]

    def embed_query(self, text: str) -> list[float]:
        return self.embed_documents([text])[0]


def test_an_embeddings_object_replaces_tfidf() -> None:
    texts, labels = _failures(1500, seed=4)
    embeddings = _KeywordEmbeddings()
    model = FailureClusterer(embeddings=embeddings).fit(texts)
    assert embeddings.calls == 1
    assert adjusted_rand_score(labels, model.labels_) >= 0.8
    assert model.predict(["password reset mail never came"]).tolist() == [
        model.labels_[texts.index(next(t for t in texts if "password" in t))]
    ]
    assert embeddings.calls == 2
