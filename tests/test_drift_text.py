"""Text drift of queries: the domain classifier's AUC and the embedding centroid test."""

from __future__ import annotations

import hashlib
import random

import numpy as np
import pytest
from langchain_core.embeddings import Embeddings

from cl_plugin.drift import text_drift
from cl_plugin.errors import DriftInputError

WORDS = ["route", "plan", "search", "tree", "answer", "retrieve", "document", "math", "sum", "agent"]
BILLING = ["invoice", "refund", "billing", "charge"]


class HashingEmbeddings(Embeddings):
    """A bag of hashed words: similar texts get similar vectors, with no model to download."""

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [self.embed_query(t) for t in texts]

    def embed_query(self, text: str) -> list[float]:
        v = np.zeros(64)
        for word in text.split():
            v[int(hashlib.sha1(word.encode()).hexdigest(), 16) % 64] += 1.0
        return (v / (np.linalg.norm(v) or 1.0)).tolist()


def _queries(rng: random.Random, n: int, vocabulary: list[str]) -> list[str]:
    return [" ".join(rng.choices(vocabulary, k=6)) for _ in range(n)]


def test_queries_from_the_same_distribution_do_not_drift() -> None:
    rng = random.Random(0)
    result = text_drift(_queries(rng, 300, WORDS), _queries(rng, 300, WORDS), embeddings=HashingEmbeddings())
    assert not result.drifted
    assert result.roc_auc < result.auc_threshold == 0.55
    assert result.centroid_p_value > 0.05


def test_a_new_topic_drifts_and_its_words_top_the_list() -> None:
    rng = random.Random(1)
    result = text_drift(
        _queries(rng, 300, WORDS), _queries(rng, 300, WORDS + BILLING), embeddings=HashingEmbeddings()
    )
    assert result.drifted and result.roc_auc > 0.8
    assert set(result.top_terms[:4]) == set(BILLING)
    assert result.centroid_p_value < 0.05 and result.centroid_distance > 0


def test_small_samples_need_more_than_the_large_sample_auc_to_drift() -> None:
    rng = random.Random(2)
    result = text_drift(_queries(rng, 20, WORDS), _queries(rng, 20, WORDS))
    assert result.auc_threshold > 0.55 and result.n_reference == result.n_current == 20


@pytest.mark.parametrize(("reference", "field"), [(["a b"] * 5, "reference"), ("one long text", "reference")])
def test_too_few_texts_name_the_argument(reference, field) -> None:
    with pytest.raises(DriftInputError, match="at least 10 strings") as info:
        text_drift(reference, ["x y"] * 20)
    assert info.value.field == field
