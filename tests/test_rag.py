"""RagIndex: TF-IDF, BM25 and embedding retrieval, updates and corrections, evaluation, and its retriever."""

from __future__ import annotations

import doctest
import math
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from cl_plugin.graphs.tasks import SERVICES, default_corpus
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.embeddings import DeterministicFakeEmbedding
from pydantic import Field

import cl_plugin.learning.rag
from cl_plugin.learning.rag import RagIndex

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
    assert doctest.testmod(cl_plugin.learning.rag).failed == 0


def _ids(hits: list[tuple[str, str, float]]) -> list[str]:
    return [doc_id for doc_id, _, _ in hits]


class CountingEmbeddings(DeterministicFakeEmbedding):
    """Deterministic embeddings that record every text embedded as a document."""

    embedded: list[str] = Field(default_factory=list)

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        self.embedded.extend(texts)
        return super().embed_documents(texts)


@pytest.mark.parametrize("scorer", ["tfidf", "bm25"])
def test_removed_documents_are_no_longer_found_and_added_ones_are(scorer: str) -> None:
    index = RagIndex(scorer=scorer).add(DOCS, ids=["port", "team", "newton"])
    assert set(_ids(index.search("billing", k=5))) == {"port", "team"}
    assert index.remove(["port"]) == 1
    assert "port" not in index and len(index) == 2
    assert _ids(index.search("billing port", k=5)) == ["team"]
    index.add(["The billing service moved to port 9443."], ids=["port"])
    assert _ids(index.search("port", k=5)) == ["port"]
    assert index.search("9443", k=1)[0][1] == "The billing service moved to port 9443."


def test_generated_ids_stay_unique_after_removals() -> None:
    index = RagIndex().add(DOCS[:2])
    index.remove("doc-0")
    index.add([DOCS[2]])
    assert [d["id"] for d in index.documents()] == ["doc-1", "doc-2"]


def test_removing_unknown_ids_is_refused_unless_missing_ok() -> None:
    index = RagIndex().add(DOCS, ids=["port", "team", "newton"])
    with pytest.raises(KeyError, match=r"\['ghost'\].*missing_ok=True"):
        index.remove(["port", "ghost"])
    assert len(index) == 3
    assert index.remove(["port", "ghost", "port"], missing_ok=True) == 1
    assert index.remove([]) == 0
    assert _ids(index.search("billing", k=5)) == ["team"]


def test_documents_returns_the_contents_and_rebuilds_an_equal_index() -> None:
    index = RagIndex().add([{"id": "a", "text": DOCS[0], "metadata": {"source": "wiki"}}, DOCS[1]])
    docs = index.documents()
    assert docs == [
        {"id": "a", "text": DOCS[0], "metadata": {"source": "wiki"}},
        {"id": "doc-1", "text": DOCS[1], "metadata": {}},
    ]
    docs[0]["metadata"]["source"] = "changed"
    assert index.metadata("a") == {"source": "wiki"}
    assert RagIndex().add(index.documents()).search("billing port") == index.search("billing port")


def test_a_correction_becomes_a_searchable_document_and_re_adding_it_changes_nothing() -> None:
    index = RagIndex().add(DOCS)
    doc_id = index.add_correction(
        "Which port does checkout use?",
        "Checkout listens on 9090.",
        interaction_id="i-1",
        metadata={"by": "u"},
    )
    assert doc_id == "correction-i-1"
    hit = index.search("checkout port", k=1)[0]
    assert hit[0] == doc_id and "9090" in hit[1]
    assert index.metadata(doc_id) == {
        "by": "u",
        "source": "correction",
        "query": "Which port does checkout use?",
        "interaction_id": "i-1",
    }
    before = index.documents()
    assert (
        index.add_correction(
            "Which port does checkout use?",
            "Checkout listens on 9090.",
            interaction_id="i-1",
            metadata={"by": "u"},
        )
        == doc_id
    )
    assert index.documents() == before
    index.add_correction("Which port does checkout use?", "Checkout listens on 9091.", interaction_id="i-1")
    assert len(index) == 4
    assert "9091" in index.search("checkout port", k=1)[0][1]


def test_a_correction_without_an_interaction_id_is_keyed_by_its_content() -> None:
    index = RagIndex()
    first = index.add_correction("Who owns ledger?", "Team Osprey.")
    assert index.add_correction("Who owns ledger?", "Team Osprey.") == first
    assert index.add_correction("Who owns ledger?", "Team Heron.") != first
    assert len(index) == 2
    with pytest.raises(ValueError, match="non-empty"):
        index.add_correction(" ", "x")


def test_bm25_ranks_the_document_with_the_keyword_first() -> None:
    index = RagIndex(scorer="bm25").add(DOCS, ids=["port", "team", "newton"])
    hits = index.search("who is Falcon", k=3)
    assert _ids(hits) == ["team"]
    assert _ids(index.search("square root estimate", k=1)) == ["newton"]


def test_bm25_scores_match_a_hand_computed_okapi_score() -> None:
    index = RagIndex(scorer="bm25", ngram_range=(1, 1), k1=1.5, b=0.75)
    index.add(["apple banana", "apple apple cherry", "banana cherry date"], ids=["d0", "d1", "d2"])
    # N = 3, df(banana) = 2, idf = ln(1 + 1.5 / 2.5); lengths 2, 3, 3, avgdl = 8/3
    idf = math.log(1.6)
    d0 = idf * 1 * 2.5 / (1 + 1.5 * (0.25 + 0.75 * 2 / (8 / 3)))
    d2 = idf * 1 * 2.5 / (1 + 1.5 * (0.25 + 0.75 * 3 / (8 / 3)))
    hits = index.search("banana banana", k=3)
    assert _ids(hits) == ["d0", "d2"]
    assert [s for _, _, s in hits] == pytest.approx([d0, d2])
    # apple: df 2 as well; d1 has it twice: tf = 2
    d1 = idf * 2 * 2.5 / (2 + 1.5 * (0.25 + 0.75 * 3 / (8 / 3)))
    assert index.search("apple", k=1)[0][2] == pytest.approx(d1)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"scorer": "bm26"}, r"scorer must be one of \['tfidf', 'bm25'\]"),
        ({"k1": -1.0}, "k1 must be >= 0"),
        ({"b": 1.5}, r"b must be in \[0, 1\]"),
        ({"scorer": "bm25", "embeddings": DeterministicFakeEmbedding(size=4)}, "either scorer or embeddings"),
    ],
)
def test_bad_parameters_are_refused_with_the_allowed_values(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RagIndex(**kwargs)


def test_embeddings_rank_by_dense_cosine_and_embed_each_document_once() -> None:
    embeddings = CountingEmbeddings(size=64)
    index = RagIndex(embeddings=embeddings).add(DOCS, ids=["port", "team", "newton"])
    hits = index.search(DOCS[2], k=3)
    assert _ids(hits)[0] == "newton" and hits[0][2] == pytest.approx(1.0)
    assert len(hits) == 3 and all(-1.0 <= s <= 1.0 + 1e-9 for _, _, s in hits)
    index.remove("newton")
    index.add(["Checkout retries three times."], ids=["retries"])
    assert index.search("Checkout retries three times.", k=1)[0][0] == "retries"
    assert embeddings.embedded == [*DOCS, "Checkout retries three times."]


def test_evaluate_gives_hand_checkable_precision_recall_and_ndcg() -> None:
    index = RagIndex().add(DOCS, ids=["port", "team", "newton"])
    assert _ids(index.search("billing port", k=2)) == ["port", "team"]
    assert _ids(index.search("who maintains billing", k=2)) == ["team", "port"]
    m = index.evaluate(
        ["billing port", "who maintains billing", "zebra"], [{"port"}, {"port": 2.0}, set()], k=2
    )
    assert (m.k, m.queries, m.judged) == (2, 3, 2)
    assert m.precision == pytest.approx((0.5 + 0.5 + 0.0) / 3)
    assert m.recall == pytest.approx(1.0)
    assert m.ndcg == pytest.approx((1.0 + 1 / math.log2(3)) / 2)
    with pytest.raises(ValueError, match="one relevance judgement per query"):
        index.evaluate(["billing"], [])


def test_concurrent_adds_removes_and_searches_stay_consistent() -> None:
    index = RagIndex(scorer="bm25").add(DOCS)

    def churn(worker: int) -> None:
        for i in range(20):
            doc_id = f"w{worker}-{i}"
            index.add([f"billing note {worker} {i}"], ids=[doc_id])
            assert doc_id in _ids(index.search(f"billing note {worker} {i}", k=50))
            assert index.remove(doc_id) == 1

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(churn, range(4)))
    assert [d["id"] for d in index.documents()] == ["doc-0", "doc-1", "doc-2"]


def test_a_vector_store_is_kept_in_step_with_the_index_and_ranks_its_searches() -> None:
    from langchain_core.vectorstores import InMemoryVectorStore

    store = InMemoryVectorStore(DeterministicFakeEmbedding(size=32))
    index = RagIndex(vector_store=store).add(
        [
            {"id": "port", "text": "The billing service listens on port 8443."},
            {"id": "team", "text": "Falcon."},
        ]
    )
    assert store.get_by_ids(["port", "team"])[0].page_content.startswith("The billing")
    assert (
        index.search("The billing service listens on port 8443.", k=1)[0][0] == "port"
    )  # exact text, same vector
    index.remove("team")
    assert store.get_by_ids(["team"]) == []
    doc_id = index.add_correction("Which port?", "Answer: 8443", interaction_id="i-1")
    index.add_correction("Which port?", "Answer: 9443", interaction_id="i-1")  # replaced in place
    [stored] = store.get_by_ids([doc_id])
    assert stored.page_content.endswith("9443") and len(index) == 2
    assert index.search("Which port?\nAnswer: 9443", k=1)[0][0] == doc_id
    with pytest.raises(ValueError, match="vector_store alone"):
        RagIndex(scorer="bm25", vector_store=store)
