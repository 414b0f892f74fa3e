"""RagIndex: TF-IDF retrieval that ranks the relevant document first, and its LangChain retriever."""

from __future__ import annotations

import doctest
from typing import Any

import pytest
from langchain_core.callbacks import BaseCallbackHandler

import cl_plugin.rag
from cl_plugin.rag import RagIndex
from graphs.tasks import SERVICES, default_corpus

DOCS = [
    "The billing service listens on port 8443.",
    "Team Falcon maintains the billing service.",
    "Newton's method refines an estimate of a square root.",
]


class RetrieverRuns(BaseCallbackHandler):
    """Counts retriever runs and keeps the documents they returned."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self.documents: list[Any] = []

    def on_retriever_start(self, serialized: Any, query: str, **kwargs: Any) -> None:
        self.started.append(query)

    def on_retriever_end(self, documents: Any, **kwargs: Any) -> None:
        self.documents.append(documents)


def test_an_empty_index_finds_nothing() -> None:
    index = RagIndex()
    assert len(index) == 0
    assert index.search("anything") == []


def test_the_most_relevant_document_ranks_first_with_a_cosine_score() -> None:
    index = RagIndex().add(DOCS)
    hits = index.search("which port does billing listen on", k=2)
    assert hits[0][0] == "doc-0"
    assert all(0.0 < score <= 1.0 for _, _, score in hits)
    assert [s for _, _, s in hits] == sorted((s for _, _, s in hits), reverse=True)


def test_k_caps_the_results_and_unrelated_documents_are_left_out() -> None:
    index = RagIndex().add(DOCS)
    assert len(index.search("billing", k=1)) == 1
    assert {doc_id for doc_id, _, _ in index.search("billing", k=10)} == {"doc-0", "doc-1"}
    assert index.search("zebra", k=3) == []


def test_documents_may_be_mappings_with_ids_and_metadata() -> None:
    index = RagIndex().add([{"id": "a", "text": DOCS[0], "metadata": {"source": "wiki"}}, {"text": DOCS[1]}])
    assert len(index) == 2
    assert "a" in index and "doc-1" in index
    assert index.metadata("a") == {"source": "wiki"}
    with pytest.raises(KeyError, match="no document"):
        index.metadata("missing")


def test_adding_documents_later_makes_their_words_searchable() -> None:
    index = RagIndex().add(DOCS[:1])
    assert index.search("Falcon") == []
    index.add(DOCS[1:], ids=["team", "note"])
    assert index.search("Falcon", k=1)[0][0] == "team"


@pytest.mark.parametrize(
    ("documents", "kwargs", "message"),
    [
        (["ok", ""], {}, "no text"),
        ([{"id": "x", "text": "a"}, {"id": "x", "text": "b"}], {}, "already in the index"),
        (["a", "b"], {"ids": ["only-one"]}, "one per document"),
    ],
)
def test_bad_documents_are_refused_with_the_fix(
    documents: list[Any], kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        RagIndex().add(documents, **kwargs)


def test_the_default_corpus_retrieves_the_documents_about_the_service_asked_for() -> None:
    index = RagIndex().add(default_corpus())
    assert len(index) == 2 * len(SERVICES) + 5
    hits = index.search("Which port does the ledger service listen on?", k=2)
    assert {doc_id for doc_id, _, _ in hits} == {"service-ledger", "team-osprey"}
    assert any(str(SERVICES["ledger"][1]) in text for _, text, _ in hits)


def test_the_retriever_fires_retriever_callbacks_and_returns_scored_documents() -> None:
    index = RagIndex().add(DOCS, ids=["port", "team", "newton"])
    runs = RetrieverRuns()
    docs = index.as_retriever(k=2).invoke("billing port", config={"callbacks": [runs]})
    assert runs.started == ["billing port"]
    assert len(runs.documents) == 1
    assert docs[0].id == "port"
    assert docs[0].metadata["id"] == "port"
    assert 0.0 < docs[0].metadata["score"] <= 1.0


def test_the_module_examples_run() -> None:
    assert doctest.testmod(cl_plugin.rag).failed == 0
