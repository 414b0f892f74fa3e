"""The annotation page: the queue one item at a time, labels written to the store at once, and the
resumption of a maintenance run paused for those labels.

An item is labeled as ``cl-plugin annotate`` labels it: at the decision point the interaction decided at
(:func:`~cl_plugin.learning.points.label_point`), with that point's options, or else with the agents the
store has seen. A run paused for labels is resumed with the queue's labels for the items it waits for
(:func:`~cl_plugin.graphs.maintenance.resume_paused_run`, the code path of ``cl-plugin maintain --resume``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from cl_plugin.graphs.maintenance import checkpointer, is_paused, resume_paused_run, waiting_for
from cl_plugin.learning.points import choice_label, label_point
from cl_plugin.records import PointRef
from cl_plugin.web.security import form

if TYPE_CHECKING:
    from cl_plugin.web.app import Web

__all__ = ["ANNOTATOR", "paused_runs", "routes"]

ANNOTATOR = "web"
_KEYS = "123456789"


def routes(web: Web) -> list[Route]:
    async def page(request: Request) -> Response:
        wanted = request.query_params.get("item")
        found = await run_in_threadpool(_current, web, wanted)
        runs = await run_in_threadpool(paused_runs, web)
        resumed = request.query_params.get("resumed")
        done = await run_in_threadpool(web.store.runs.get, resumed) if resumed else None
        return web.page(request, "annotate.html", title="Annotation", paused=runs, done=done, **found)

    async def label(request: Request) -> Response:
        fields = await form(request)
        if fields is None:
            return PlainTextResponse("the form's CSRF token is missing or wrong: reload the page", 403)
        item_id = request.path_params["item_id"]
        choice = fields.get("choice", "")
        error = await run_in_threadpool(_label, web, item_id, choice)
        if error is not None:
            return PlainTextResponse(error, 400)
        return RedirectResponse("/annotate", status_code=303)

    async def resume(request: Request) -> Response:
        fields = await form(request)
        if fields is None:
            return PlainTextResponse("the form's CSRF token is missing or wrong: reload the page", 403)
        if web.checkpoints is None:
            return PlainTextResponse("start cl-plugin serve with --checkpoints to resume runs", 400)
        thread = fields.get("thread", "")
        try:
            state = await run_in_threadpool(_resume, web, thread)
        except LookupError as exc:
            return PlainTextResponse(str(exc), 404)
        return RedirectResponse(f"/annotate?resumed={quote(str(state.get('run_id', '')))}", status_code=303)

    return [
        Route("/annotate", page),
        Route("/annotate/{item_id}", label, methods=["POST"]),
        Route("/maintenance/resume", resume, methods=["POST"]),
    ]


def _current(web: Web, wanted: str | None) -> dict[str, Any]:
    """The item to label (``wanted``, else the first pending one) with its interaction, trace and choices."""
    store = web.store
    pending = store.queue.items("pending")
    item = next((i for i in pending if i["item_id"] == wanted), pending[0] if pending else None)
    if item is None:
        return {"item": None, "pending": 0}
    row = store.get_interaction(item["interaction_id"]) or {}
    points = {p.key: p for p in store.decision_points()}
    found = label_point(store, row, points)
    if found is None:
        choices = sorted(a for a in store.statistics()["agent_distribution"] if a)
        noun, said = "agent", f"routed to {row.get('agent_selected')}"
    else:
        point, chosen = found
        choices, noun = list(point.all_options), "option"
        said = f"chose {chosen} at {PointRef.parse(point)}"
    return {
        "item": item,
        "row": row,
        "runs": store.node_runs(item["interaction_id"]) if row else [],
        "choices": [(key, choice) for key, choice in zip(_KEYS, choices, strict=False)],
        "more": choices[len(_KEYS) :],
        "noun": noun,
        "said": said,
        "pending": len(pending),
    }


def _label(web: Web, item_id: str, choice: str) -> str | None:
    """Label or skip one item; an error message when the item or the choice is unknown."""
    store = web.store
    item = next((i for i in store.queue.items() if i["item_id"] == item_id), None)
    if item is None:
        return "no such queue item"
    if choice == "skip":
        store.queue.update(item_id, status="skipped", annotator=ANNOTATOR)
        return None
    row = store.get_interaction(item["interaction_id"]) or {}
    found = label_point(store, row, {p.key: p for p in store.decision_points()})
    if found is None:
        if choice not in {a for a in store.statistics()["agent_distribution"] if a}:
            return f"{choice!r} is not an agent of this store"
    elif choice not in found[0].all_options:
        return f"{choice!r} is not an option of this decision point"
    label = choice_label(found and found[0], choice)
    store.queue.update(item_id, status="labeled", label=label, annotator=ANNOTATOR)
    return None


def paused_runs(web: Web) -> list[dict[str, Any]]:
    """The maintenance runs paused for labels: each with the items it waits for, how many are still
    pending, and whether it can be resumed now (none is pending). Empty without checkpoints."""
    if web.checkpoints is None:
        return []
    status = {i["interaction_id"]: i["status"] for i in web.store.queue.items()}
    out = []
    with checkpointer(web.checkpoints) as saver:
        for run in web.store.runs.list(limit=50):
            if run["status"] != "running" or not is_paused(saver, run["thread_id"]):
                continue
            waiting = waiting_for(saver, run["thread_id"]) or []
            pending = sum(status.get(iid) == "pending" for iid in waiting)
            labeled = sum(status.get(iid) == "labeled" for iid in waiting)
            out.append(run | {"waiting": len(waiting), "pending": pending, "labeled": labeled})
    return out


def _resume(web: Web, thread: str) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"config": web.config}
    if web.registry is not None:
        kwargs["registry"] = web.registry
    with checkpointer(web.checkpoints) as saver:
        if not is_paused(saver, thread):
            raise LookupError(f"no maintenance run paused for labels on thread {thread!r}")
        return resume_paused_run(web.store, saver, thread, **kwargs)
