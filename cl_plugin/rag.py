"""The retrieval index the agents read and that retraining extends.

:class:`RagIndex` keeps documents in memory and ranks them by cosine similarity of TF-IDF vectors (word
unigrams and bigrams). Adding documents refits the vectorizer on the whole collection, which is cheap at the
sizes an example system or a retraining batch produces and keeps the IDF weights honest. No I/O: persist the
documents elsewhere and :meth:`RagIndex.add` them back.

>>> index = RagIndex().add(["The billing service listens on port 8443.", "Team Falcon maintains billing."])
>>> [(doc_id, round(score, 2)) for doc_id, _, score in index.search("billing port", k=1)]
[('doc-0', 0.35)]
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from sklearn.feature_extraction.text import TfidfVectorizer

__all__ = ["RagIndex", "RagRetriever"]


class RagIndex:
    """An in-memory TF-IDF index with cosine-similarity search.

    Args:
        ngram_range: word n-gram range of the TF-IDF features.
        sublinear_tf: use ``1 + log(tf)`` instead of raw term counts.

    Attributes:
        vectorizer_: the fitted :class:`~sklearn.feature_extraction.text.TfidfVectorizer` (None while empty).
        matrix_: the L2-normalised document vectors, one row per document (None while empty).
    """

    def __init__(self, *, ngram_range: tuple[int, int] = (1, 2), sublinear_tf: bool = True) -> None:
        self.ngram_range = ngram_range
        self.sublinear_tf = sublinear_tf
        self.vectorizer_: TfidfVectorizer | None = None
        self.matrix_: Any = None
        self._ids: list[str] = []
        self._texts: list[str] = []
        self._metadata: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, doc_id: object) -> bool:
        return doc_id in self._ids

    def add(
        self, documents: Sequence[str] | Sequence[Mapping[str, Any]], *, ids: Sequence[str] | None = None
    ) -> RagIndex:
        """Add documents and refit the index.

        Args:
            documents: plain texts, or mappings with ``"text"`` and optionally ``"id"`` and ``"metadata"``.
            ids: identifiers for plain texts (default ``doc-<n>``); ignored for mappings that carry an id.

        Returns:
            The index itself.

        Raises:
            ValueError: if a document has no text, an id is already in the index, or ``ids`` has the wrong
                length.
        """
        if ids is not None and len(ids) != len(documents):
            raise ValueError(
                f"ids has {len(ids)} entries but documents has {len(documents)}; pass one per document"
            )
        new_ids, new_texts, new_meta = [], [], []
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
            doc_id = str(given) if given is not None else f"doc-{len(self._ids) + len(new_ids)}"
            if doc_id in self._ids or doc_id in new_ids:
                raise ValueError(f"document id {doc_id!r} is already in the index; ids must be unique")
            new_ids.append(doc_id)
            new_texts.append(text)
            new_meta.append(meta)
        if not new_ids:
            return self
        with self._lock:
            texts = self._texts + new_texts
            vectorizer = TfidfVectorizer(ngram_range=self.ngram_range, sublinear_tf=self.sublinear_tf)
            matrix = vectorizer.fit_transform(texts).tocsr()
            self._ids += new_ids
            self._texts = texts
            self._metadata += new_meta
            self.vectorizer_, self.matrix_ = vectorizer, matrix
        return self

    def search(self, query: str, k: int = 3) -> list[tuple[str, str, float]]:
        """The ``k`` documents most similar to a query.

        Args:
            query: free text.
            k: how many documents at most.

        Returns:
            ``(doc_id, text, score)`` triples, best first; scores are cosine similarities in [0, 1].
            Documents that share no term with the query are left out.
        """
        with self._lock:
            vectorizer, matrix, ids, texts = self.vectorizer_, self.matrix_, self._ids, self._texts
        if vectorizer is None or k <= 0:
            return []
        scores = np.asarray((matrix @ vectorizer.transform([query]).T).todense()).ravel()
        top = np.argsort(-scores, kind="stable")[:k]
        return [(ids[i], texts[i], float(scores[i])) for i in top if scores[i] > 0.0]

    def metadata(self, doc_id: str) -> dict[str, Any]:
        """The metadata a document was added with.

        Raises:
            KeyError: if no document has that id.
        """
        try:
            return dict(self._metadata[self._ids.index(doc_id)])
        except ValueError:
            raise KeyError(f"no document with id {doc_id!r} in the index") from None

    def as_retriever(self, k: int = 3) -> RagRetriever:
        """This index as a LangChain retriever, so retriever callbacks see every search.

        Args:
            k: how many documents each call returns.
        """
        return RagRetriever(index=self, k=k)


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
