"""Persistence: tables, the Store, the background writer and the gz JSONL backups."""

from cl_plugin.store.store import Batch, Store, WriteResult

__all__ = ["Batch", "Store", "WriteResult"]
