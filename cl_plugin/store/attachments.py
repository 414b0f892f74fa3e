"""Feedback attachments in the store: their bytes by SHA-256, and which feedback carries which.

Reached as ``store.attachments``. Attachments are written with their feedback, in the same batch and
transaction (:func:`~cl_plugin.store.rows.feedback_rows`); this module reads them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from sqlalchemy import Table, select

from cl_plugin.store.tables import AttachmentRow, FeedbackAttachment

if TYPE_CHECKING:
    from cl_plugin.store.store import Store

__all__ = ["ATTACHMENT_LOCK", "Attachments"]

_ATTACHMENTS: Table = AttachmentRow.__table__  # type: ignore[assignment]
_LINKS: Table = FeedbackAttachment.__table__  # type: ignore[assignment]
#: A PostgreSQL advisory lock: writes of attachments hold it shared, retention's sweep of unreferenced
#: attachments exclusively, so the sweep never deletes an attachment whose link is being committed.
ATTACHMENT_LOCK = 0x636C5F617474  # "cl_att"


class Attachments:
    """The store's feedback attachments (``store.attachments``).

    Args:
        store: the store whose ``attachments`` and ``feedback_attachments`` tables this reads.
    """

    def __init__(self, store: Store) -> None:
        self._store = store

    def get(self, sha256: str) -> dict[str, Any] | None:
        """One attachment by its SHA-256: ``sha256``, ``kind``, ``media_type``, ``size``, ``created_at`` and
        ``content`` (the stored, sanitized bytes), or None when no attachment has this address."""
        if not isinstance(sha256, str):
            return None
        rows = self._store.read_rows(select(_ATTACHMENTS).where(_ATTACHMENTS.c.sha256 == sha256.lower()))
        if not rows:
            return None
        row = rows[0]
        row["content"] = bytes(row["content"])
        return row

    def for_interaction(self, interaction_id: str) -> list[dict[str, Any]]:
        """The attachments of an interaction's feedback, oldest feedback first, each as its metadata.

        Returns:
            Dicts with ``feedback_id``, ``position``, ``sha256``, ``kind``, ``media_type``, ``size``,
            ``filename``, ``language`` and ``created_at``; no bytes (read those with :meth:`get`).
        """
        return self.for_interactions([interaction_id]).get(interaction_id, [])

    def for_interactions(self, interaction_ids: Iterable[str]) -> dict[str, list[dict[str, Any]]]:
        """The attachment metadata of many interactions at once (as :meth:`for_interaction`), by interaction;
        interactions without attachments are left out."""
        ids = list(dict.fromkeys(interaction_ids))
        link, att = _LINKS.c, _ATTACHMENTS.c
        out: dict[str, list[dict[str, Any]]] = {}
        for start in range(0, len(ids), 500):
            stmt = (
                select(
                    link.interaction_id,
                    link.feedback_id,
                    link.position,
                    link.sha256,
                    link.kind,
                    att.media_type,
                    att.size,
                    link.filename,
                    link.language,
                    link.created_at,
                )
                .join(_ATTACHMENTS, att.sha256 == link.sha256)
                .where(link.interaction_id.in_(ids[start : start + 500]))
                .order_by(link.interaction_id, link.created_at, link.feedback_id, link.position)
            )
            for row in self._store.read_rows(stmt):
                out.setdefault(row.pop("interaction_id"), []).append(row)
        return out
