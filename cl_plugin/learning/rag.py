"""The retrieval index the agents read and that retraining extends.

:class:`RagIndex` keeps documents in memory and ranks them by one of three scorers: cosine similarity of
TF-IDF vectors (the default), Okapi BM25 over the same word n-grams, or cosine similarity of dense vectors
from any LangChain :class:`~langchain_core.embeddings.Embeddings`; or it keeps any LangChain
:class:`~langchain_core.vectorstores.VectorStore` in step with its documents and lets the store rank them. Documents can be added, removed and
corrected at any time; the index refits on the next search after a change, on the whole collection, which
is cheap at the sizes an example system or a retraining batch produces and keeps the IDF weights honest
(dense vectors are cached per document, so only new texts are embedded). :meth:`RagIndex.evaluate` measures
precision@k, recall@k and nDCG@k on held-out queries. No I/O: persist the index through the model registry.

>>> index = RagIndex().add(["The billing service listens on port 8443.", "Team Falcon maintains billing."])
>>> [(doc_id, round(score, 2)) for doc_id, _, score in index.search("billing port", k=1)]
[('doc-0', 0.35)]
>>> index.remove(["doc-0"])
1
>>> [doc_id for doc_id, _, _ in index.search("billing port")]
['doc-1']
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Collection, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp
from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.retrievers import BaseRetriever
from langchain_core.vectorstores import VectorStore
from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer

if TYPE_CHECKING:
    from cl_plugin.analysis.metrics.measures import RetrievalMetrics

__all__ = ["RagIndex", "RagRetriever"]

_SCORERS = ("tfidf", "bm25")

_Scores = Callable[[str], np.ndarray]


@dataclass(frozen=True, slots=True)
class _Fit:
    """The documents as of one refit and the function scoring a query against each of them."""

    ids: tuple[str, ...]
    texts: tuple[str, ...]
    scores: _Scores
    dense: bool


def _no_match(n: int) -> _Scores:
    return lambda query: np.zeros(n)


def _fit_tfidf(texts: Sequence[str], ngram_range: tuple[int, int], sublinear_tf: bool) -> _Scores:
    vectorizer = TfidfVectorizer(ngram_range=ngram_range, sublinear_tf=sublinear_tf)
    try:
        matrix = vectorizer.fit_transform(texts).tocsr()
    except ValueError:  # no text has a single token: nothing can match
        return _no_match(len(texts))
    return lambda query: (matrix @ vectorizer.transform([query]).T).toarray().ravel()


def _bm25_weights(counts: sp.csr_matrix, k1: float, b: float) -> sp.csr_matrix:
    """Each (document, term) entry's BM25 contribution, so a query's scores are one sparse product.

    ``idf(t) * tf * (k1 + 1) / (tf + k1 * (1 - b + b * |d| / avgdl))`` with the non-negative idf
    ``log(1 + (N - df + 0.5) / (df + 0.5))``.
    """
    n_docs = counts.shape[0]
    df = np.bincount(counts.indices, minlength=counts.shape[1])
    idf = np.log1p((n_docs - df + 0.5) / (df + 0.5))
    length = np.asarray(counts.sum(axis=1)).ravel()
    norm = k1 * (1 - b + b * length / length.mean())
    tf = counts.data.astype(float)
    rows = np.repeat(np.arange(n_docs), np.diff(counts.indptr))
    data = idf[counts.indices] * tf * (k1 + 1) / (tf + norm[rows])
    return sp.csr_matrix((data, counts.indices, counts.indptr), shape=counts.shape)


def _fit_bm25(texts: Sequence[str], ngram_range: tuple[int, int], k1: float, b: float) -> _Scores:
    vectorizer = CountVectorizer(ngram_range=ngram_range)
    try:
        counts = vectorizer.fit_transform(texts).tocsr()
    except ValueError:  # no text has a single token: nothing can match
        return _no_match(len(texts))
    weights = _bm25_weights(counts, k1, b)

    def scores(query: str) -> np.ndarray:
        terms = vectorizer.transform([query])
        terms.data[:] = 1  # each distinct query term counts once
        return (weights @ terms.T).toarray().ravel()

    return scores


def _unit_rows(vectors: Any) -> np.ndarray:
    matrix = np.atleast_2d(np.asarray(vectors, dtype=float))
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.where(norms > 0, norms, 1.0)


def _fit_dense(vectors: Sequence[np.ndarray], embeddings: Embeddings) -> _Scores:
    matrix = np.vstack(vectors)
    return lambda query: matrix @ _unit_rows(embeddings.embed_query(query))[0]


def _id_list(doc_ids: str | Iterable[str]) -> list[str]:
    return [doc_ids] if isinstance(doc_ids, str) else [str(d) for d in doc_ids]


class RagIndex:
    """An in-memory document index searched by TF-IDF cosine, Okapi BM25 or dense-embedding cosine.

    Args:
        scorer: ``"tfidf"`` (default) or ``"bm25"``; leave it unset when passing ``embeddings``.
        ngram_range: word n-gram range of the TF-IDF and BM25 features.
        sublinear_tf: TF-IDF uses ``1 + log(tf)`` instead of raw term counts.
        k1: BM25 term-frequency saturation (>= 0).
        b: BM25 document-length normalisation, in [0, 1].
        embeddings: rank by cosine similarity of ``embeddings.embed_documents`` and ``embed_query``
            instead of by terms.
        vector_store: a LangChain vector store that every add, remove and correction is mirrored to (with
            the document's id) and that ranks searches (``similarity_search_with_score``). The index still
            keeps the documents, so it can be evaluated, copied and versioned.

    Raises:
        ValueError: an unknown scorer, ``k1`` or ``b`` out of range, or more than one of ``scorer``,
            ``embeddings`` and ``vector_store``.
    """

    def __init__(
        self,
        *,
        scorer: str | None = None,
        ngram_range: tuple[int, int] = (1, 2),
        sublinear_tf: bool = True,
        k1: float = 1.5,
        b: float = 0.75,
        embeddings: Embeddings | None = None,
        vector_store: VectorStore | None = None,
    ) -> None:
        if scorer is not None and scorer not in _SCORERS:
            raise ValueError(f"scorer must be one of {list(_SCORERS)} (got {scorer!r})")
        if scorer is not None and embeddings is not None:
            raise ValueError("pass either scorer or embeddings: an index ranks by terms or by embeddings")
        if vector_store is not None and (scorer is not None or embeddings is not None):
            raise ValueError(
                "pass a vector_store alone: it ranks the documents itself (give it its embeddings when you build it)"
            )
        if not k1 >= 0:
            raise ValueError(f"k1 must be >= 0 (got {k1!r})")
        if not 0 <= b <= 1:
            raise ValueError(f"b must be in [0, 1] (got {b!r})")
        self.scorer = scorer
        self.ngram_range = ngram_range
        self.sublinear_tf = sublinear_tf
        self.k1 = k1
        self.b = b
        self.embeddings = embeddings
        self.vector_store = vector_store
        self._docs: dict[str, tuple[str, dict[str, Any]]] = {}
        self._vectors: dict[str, np.ndarray] = {}
        self._added = 0
        self._fit: _Fit | None = None
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._docs)

    def __contains__(self, doc_id: object) -> bool:
        return doc_id in self._docs

    def add(
        self, documents: Sequence[str] | Sequence[Mapping[str, Any]], *, ids: Sequence[str] | None = None
    ) -> RagIndex:
        """Add documents; the next search sees them.

        Args:
            documents: plain texts, or mappings with ``"text"`` and optionally ``"id"`` and ``"metadata"``.
            ids: identifiers for plain texts (default ``doc-<n>``); ignored for mappings that carry an id.

        Returns:
            The index itself.

        Raises:
            ValueError: if a document has no text, an id is already in the index, or ``ids`` has the wrong
                length. Nothing is added then.
        """
        if ids is not None and len(ids) != len(documents):
            raise ValueError(
                f"ids has {len(ids)} entries but documents has {len(documents)}; pass one per document"
            )
        parsed = []
        for i, doc in enumerate(documents):
            given = ids[i] if ids is not None else None
            if isinstance(doc, Mapping):
                text, given, meta = doc.get("text"), doc.get("id", given), dict(doc.get("metadata") or {})
            else:
                text, meta = doc, {}
            if not isinstance(text, str) or not text.strip():
                raise ValueError(
                    f"document {i} has no text; pass a non-empty string or a mapping with 'text'"
                )
            parsed.append((None if given is None else str(given), text, meta))
        with self._lock:
            new: dict[str, tuple[str, dict[str, Any]]] = {}
            for n, (doc_id, text, meta) in enumerate(parsed, start=self._added):
                doc_id = f"doc-{n}" if doc_id is None else doc_id
                if doc_id in self._docs or doc_id in new:
                    raise ValueError(f"document id {doc_id!r} is already in the index; ids must be unique")
                new[doc_id] = (text, meta)
            if new:
                self._mirror_add(new)
                self._docs.update(new)
                self._added += len(new)
                self._fit = None
        return self

    def remove(self, doc_ids: str | Iterable[str], *, missing_ok: bool = False) -> int:
        """Remove documents; the next search no longer finds them.

        Args:
            doc_ids: one id or several.
            missing_ok: skip ids that are not in the index instead of refusing.

        Returns:
            How many documents were removed.

        Raises:
            KeyError: some ids are not in the index (and ``missing_ok`` is False); nothing is removed then.
        """
        wanted = list(dict.fromkeys(_id_list(doc_ids)))
        with self._lock:
            unknown = [d for d in wanted if d not in self._docs]
            if unknown and not missing_ok:
                raise KeyError(
                    f"no documents with ids {unknown} in the index; nothing was removed "
                    "(pass missing_ok=True to remove the others)"
                )
            found = [d for d in wanted if d in self._docs]
            if found and self.vector_store is not None:
                self.vector_store.delete(found)
            for doc_id in found:
                del self._docs[doc_id]
                self._vectors.pop(doc_id, None)
            if found:
                self._fit = None
        return len(found)

    def add_correction(
        self,
        query: str,
        corrected_answer: str,
        *,
        interaction_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> str:
        """Turn a user's correction into a document that later searches for the same question find.

        The document's text is the query followed by the corrected answer. Its id is
        ``correction-<interaction_id>``, or ``correction-<hash of query and answer>`` without one, so adding
        the same correction again changes nothing, and a new answer for the same interaction replaces the
        old one in place.

        Args:
            query: the question the user asked.
            corrected_answer: the answer the user gave as right.
            interaction_id: the interaction that was corrected.
            metadata: extra metadata; ``source`` (``"correction"``), ``query`` and ``interaction_id`` are
                set by the index.

        Returns:
            The document id.

        Raises:
            ValueError: the query or the answer is empty.
        """
        if not query.strip() or not corrected_answer.strip():
            raise ValueError("a correction needs a non-empty query and corrected_answer")
        if interaction_id is None:
            digest = hashlib.sha256(f"{query}\x00{corrected_answer}".encode()).hexdigest()[:16]
            doc_id = f"correction-{digest}"
        else:
            doc_id = f"correction-{interaction_id}"
        meta = {**(metadata or {}), "source": "correction", "query": query}
        if interaction_id is not None:
            meta["interaction_id"] = interaction_id
        doc = (f"{query}\n{corrected_answer}", meta)
        with self._lock:
            if self._docs.get(doc_id) != doc:
                if self.vector_store is not None and doc_id in self._docs:
                    self.vector_store.delete([doc_id])
                self._mirror_add({doc_id: doc})
                self._docs[doc_id] = doc
                self._vectors.pop(doc_id, None)
                self._fit = None
        return doc_id

    def documents(self) -> list[dict[str, Any]]:
        """Every document as ``{"id", "text", "metadata"}``, in the order added; :meth:`add` takes them back."""
        with self._lock:
            return [{"id": d, "text": t, "metadata": dict(m)} for d, (t, m) in self._docs.items()]

    def metadata(self, doc_id: str) -> dict[str, Any]:
        """The metadata a document was added with.

        Raises:
            KeyError: if no document has that id.
        """
        with self._lock:
            if doc_id not in self._docs:
                raise KeyError(f"no document with id {doc_id!r} in the index")
            return dict(self._docs[doc_id][1])

    def search(self, query: str, k: int = 3) -> list[tuple[str, str, float]]:
        """The ``k`` documents most similar to a query.

        Args:
            query: free text.
            k: how many documents at most.

        Returns:
            ``(doc_id, text, score)`` triples, best first (ties in the order added). Scores are cosine
            similarities in [0, 1] for TF-IDF, BM25 scores (>= 0, unbounded) for BM25, and cosine
            similarities in [-1, 1] for embeddings; a vector store gives its own relevance scores, in its
            own order. With TF-IDF and BM25, documents that share no term with the query are left out.
        """
        if self.vector_store is not None:
            if k <= 0 or not self._docs:
                return []
            hits = self.vector_store.similarity_search_with_score(query, k=k)
            return [(d.id, d.page_content, float(score)) for d, score in hits if d.id in self._docs]
        fit = self._fitted()
        if not fit.ids or k <= 0:
            return []
        scores = fit.scores(query)
        top = np.argsort(-scores, kind="stable")[:k]
        return [(fit.ids[i], fit.texts[i], float(scores[i])) for i in top if fit.dense or scores[i] > 0.0]

    def evaluate(
        self,
        queries: Sequence[str],
        relevant: Sequence[Collection[Hashable] | Mapping[Hashable, float]],
        *,
        k: int = 3,
    ) -> RetrievalMetrics:
        """Precision@k, recall@k and nDCG@k of this index's top-``k`` results on held-out queries.

        Args:
            queries: the questions.
            relevant: for each query, the ids of its relevant documents, or ids mapped to graded relevance.
            k: cut-off.

        Returns:
            The means over queries, as :func:`cl_plugin.analysis.metrics.retrieval_metrics` computes them.

        Raises:
            ValueError: ``queries`` and ``relevant`` differ in length, or ``k < 1``.
        """
        # the metrics package loads the store layer; agents that only search never pay for it
        from cl_plugin.analysis.metrics.measures import retrieval_metrics

        if len(queries) != len(relevant):
            raise ValueError(
                f"queries and relevant differ in length ({len(queries)} != {len(relevant)}); "
                "pass one relevance judgement per query"
            )
        if not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be an int >= 1 (got {k!r})")
        ranked = [[doc_id for doc_id, _, _ in self.search(q, k)] for q in queries]
        return retrieval_metrics(zip(ranked, relevant, strict=True), k)

    def as_retriever(self, k: int = 3) -> RagRetriever:
        """This index as a LangChain retriever, so retriever callbacks see every search.

        Args:
            k: how many documents each call returns.
        """
        return RagRetriever(index=self, k=k)

    def _mirror_add(self, docs: Mapping[str, tuple[str, dict[str, Any]]]) -> None:
        """Add documents to the vector store, if there is one, before the index holds them."""
        if self.vector_store is not None:
            self.vector_store.add_documents(
                [
                    Document(page_content=text, metadata=meta, id=doc_id)
                    for doc_id, (text, meta) in docs.items()
                ],
                ids=list(docs),
            )

    def _fitted(self) -> _Fit:
        """The current fit, refitting first if documents changed since the last one."""
        with self._lock:
            if self._fit is None:
                self._fit = self._refit()
            return self._fit

    def _refit(self) -> _Fit:
        ids = tuple(self._docs)
        texts = tuple(text for text, _ in self._docs.values())
        if not ids:
            return _Fit(ids, texts, _no_match(0), dense=False)
        if self.embeddings is not None:
            missing = [d for d in ids if d not in self._vectors]
            if missing:
                vectors = self.embeddings.embed_documents([self._docs[d][0] for d in missing])
                self._vectors.update(zip(missing, _unit_rows(vectors), strict=True))
            return _Fit(ids, texts, _fit_dense([self._vectors[d] for d in ids], self.embeddings), dense=True)
        if self.scorer == "bm25":
            return _Fit(ids, texts, _fit_bm25(texts, self.ngram_range, self.k1, self.b), dense=False)
        return _Fit(ids, texts, _fit_tfidf(texts, self.ngram_range, self.sublinear_tf), dense=False)


class RagRetriever(BaseRetriever):
    """A LangChain retriever over a :class:`RagIndex`.

    Each document carries ``id`` and ``score`` in its metadata, next to the metadata it was added with.
    """

    index: Any
    k: int = 3

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun
    ) -> list[Document]:
        return [
            Document(
                page_content=text,
                id=doc_id,
                metadata={**self.index.metadata(doc_id), "id": doc_id, "score": score},
            )
            for doc_id, text, score in self.index.search(query, self.k)
        ]
