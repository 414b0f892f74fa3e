"""A run paused for human labels: which interactions it waits for, and its resumption with the labels the
annotation queue holds for them.

The ``annotate`` step in ``human`` mode pauses the run with :func:`~langgraph.types.interrupt`; people label
the queue (``cl-plugin annotate`` in a terminal, or the web app's annotation page), then the run is resumed
with ``Command(resume={interaction_id: option})`` built here from the queue, by the CLI and the web app alike.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from typing import Any

from cl_plugin.errors import MissingDependencyError
from cl_plugin.store import Store

from .graph import run_maintenance

__all__ = ["checkpointer", "is_paused", "queue_labels", "resume_paused_run", "waiting_for"]


def checkpointer(path: str | None) -> contextlib.AbstractContextManager[Any]:
    """A SQLite checkpointer at ``path`` (so a paused run can resume in another process), else in memory.

    Raises:
        MissingDependencyError: ``path`` is given and the SQLite checkpointer is not installed.
    """
    from langgraph.checkpoint.memory import InMemorySaver

    if path is None:
        return contextlib.nullcontext(InMemorySaver())
    try:
        from langgraph.checkpoint.sqlite import SqliteSaver
    except ImportError:
        raise MissingDependencyError(
            "--checkpoints needs the SQLite checkpointer: pip install 'cl-plugin[sqlite]'"
        ) from None
    return SqliteSaver.from_conn_string(path)


def _latest(saver: Any, thread_id: str) -> Any:
    return saver.get_tuple({"configurable": {"thread_id": thread_id}})


def waiting_for(saver: Any, thread_id: str) -> list[str] | None:
    """The interaction ids the run on ``thread_id`` selected for labels, in order; None when the
    checkpoints hold no such thread."""
    found = _latest(saver, thread_id)
    if found is None:
        return None
    return [item["interaction_id"] for item in found.checkpoint["channel_values"].get("selected", [])]


def is_paused(saver: Any, thread_id: str) -> bool:
    """Whether the run on ``thread_id`` is paused for labels (its last checkpoint holds an interrupt)."""
    found = _latest(saver, thread_id)
    return found is not None and any(write[1] == "__interrupt__" for write in found.pending_writes or ())


def queue_labels(store: Store, interaction_ids: Iterable[str]) -> dict[str, str]:
    """The labels the annotation queue holds for some interactions: ``{interaction_id: option}`` (an
    option label, or an agent label), for those labeled so far."""
    waiting = set(interaction_ids)
    found = {}
    for item in store.queue.items("labeled"):
        label = item.get("label")
        if item["interaction_id"] in waiting and isinstance(label, dict):
            choice = label.get("option", label.get("agent"))
            if isinstance(choice, str):
                found[item["interaction_id"]] = choice
    return found


def resume_paused_run(store: Store, saver: Any, thread_id: str, **kwargs: Any) -> dict[str, Any]:
    """Resume the run paused on ``thread_id`` with the queue's labels for the items it waits for.

    Args:
        store: the store the run works on.
        saver: the checkpointer holding the run's checkpoints.
        thread_id: the run's thread.
        **kwargs: passed to :func:`~.graph.run_maintenance` (``config``, ``registry``, ``judge``, ...).

    Returns:
        The run's final state, as :func:`~.graph.run_maintenance` returns it.

    Raises:
        LookupError: the checkpoints hold no run on ``thread_id``.
    """
    waiting = waiting_for(saver, thread_id)
    if waiting is None:
        raise LookupError(f"no maintenance run with thread {thread_id!r} in the checkpoints")
    labels = queue_labels(store, waiting)
    return run_maintenance(store, checkpointer=saver, thread_id=thread_id, resume=labels, **kwargs)
