"""The read-only pages: the interactions (search, filters, paging), one interaction, the A/B tests and the
maintenance runs."""

from __future__ import annotations

import math
import re
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from cl_plugin.abtest import ABTestFramework
from cl_plugin.analysis import FailurePatternAnalyzer
from cl_plugin.errors import InvalidRecordError
from cl_plugin.privacy import safe_identifier
from cl_plugin.report import html as report_html
from cl_plugin.report.data import ReportData, _period

if TYPE_CHECKING:
    from cl_plugin.web.app import Web

__all__ = ["PAGE_SIZE", "SIGNALS", "routes"]

PAGE_SIZE = 50
#: The failure signals the interactions page filters on, and the store filter each means.
SIGNALS: dict[str, dict[str, Any]] = {
    "error": {"error_occurred": True},
    "hallucination": {"hallucination_detected": True},
    "retrieval_failed": {"retrieval_failed": True},
    "low_rating": {"max_feedback_score": 2.0},
    "unrated": {"has_feedback": False},
}
_TEXT_FILTERS = {"agent": "agent", "session": "session_id", "graph": "graph_name"}
_SHOWN = 2000  # characters of a node run's inputs or outputs shown


#: Characters of a code or text attachment shown on an interaction's page.
_SHOWN_CHARS = 20_000
_SHA256 = re.compile(r"[0-9a-f]{64}")


def routes(web: Web) -> list[Route]:
    async def interactions(request: Request) -> Response:
        q = request.query_params
        try:
            filters = _filters(q)
            page = max(int(q.get("page") or 1), 1)
        except (ValueError, InvalidRecordError) as exc:
            return web.page(request, "error.html", 400, title="Bad request", message=str(exc))

        def read() -> tuple[list[dict[str, Any]], int]:
            rows = web.store.query_interactions(limit=PAGE_SIZE + 1, offset=(page - 1) * PAGE_SIZE, **filters)
            return rows, web.store.count_interactions(**filters)

        try:
            rows, total = await run_in_threadpool(read)
        except InvalidRecordError as exc:
            return web.page(request, "error.html", 400, title="Bad request", message=str(exc))
        kept = {k: v for k, v in q.items() if k != "page" and v}
        if "session_id" in filters:  # shown and linked as stored: an id holding PII only as its hash
            kept["session"] = filters["session_id"]
        return web.page(
            request,
            "interactions.html",
            title="Interactions",
            rows=rows[:PAGE_SIZE],
            total=total,
            page=page,
            pages=max(math.ceil(total / PAGE_SIZE), 1),
            prev=urlencode({**kept, "page": page - 1}) if page > 1 else None,
            next=urlencode({**kept, "page": page + 1}) if len(rows) > PAGE_SIZE else None,
            q=kept,
            signals=list(SIGNALS),
        )

    async def interaction(request: Request) -> Response:
        iid = request.path_params["interaction_id"]

        def read() -> dict[str, Any] | None:
            row = web.store.get_interaction(iid)
            if row is None:
                return None
            runs = web.store.node_runs(iid)
            began = min((r["start_time"] for r in runs), default=row["timestamp"])
            for r in runs:
                r["offset_ms"] = (r["start_time"] - began) * 1000.0
                r["inputs_text"], r["outputs_text"] = _shown(r["inputs"]), _shown(r["outputs"])
            span = max((r["offset_ms"] + (r["duration_ms"] or 0.0) for r in runs), default=0.0) or 1.0
            for r in runs:  # the run's place on the interaction's timeline, in percent
                r["bar_left"] = round(100.0 * r["offset_ms"] / span, 2)
                r["bar_width"] = max(round(100.0 * (r["duration_ms"] or 0.0) / span, 2), 0.5)
            decisions = web.store.decisions(iid)
            points = {p.key: p for p in web.store.decision_points(graph_name=row["graph_name"])}
            for d in decisions:
                point = points.get((row["graph_name"], d["node"], d["kind"]))
                declared = list(point.all_options) if point is not None else None
                d["options"] = _options(d["alternatives"] or declared, d["chosen"])
            groups = sorted(
                {
                    (s.get("ab_test"), s.get("ab_group"))
                    for d in decisions
                    if isinstance(s := d.get("statistics"), dict) and s.get("ab_group")
                }
            )
            attachments = web.store.attachments.for_interaction(iid)
            for a in attachments:  # code and text are shown inline (stored sanitized); images by address
                if a["kind"] != "image":
                    stored = web.store.attachments.get(a["sha256"])
                    text = stored["content"].decode("utf-8", "replace") if stored else ""
                    a["text"] = text if len(text) <= _SHOWN_CHARS else f"{text[:_SHOWN_CHARS]}…"
            return {
                "row": row,
                "runs": runs,
                "decisions": decisions,
                "feedback": web.store.feedback.history(iid),
                "attachments": attachments,
                "groups": groups,
                "metadata": _shown(row.get("metadata") or None),
            }

        found = await run_in_threadpool(read)
        if found is None:
            return web.page(request, "error.html", 404, title="Not found", message="no such interaction")
        return web.page(request, "interaction.html", title="Interaction", **found)

    async def attachment(request: Request) -> Response:
        """One attachment's stored bytes: an image as its re-encoded type, code and text as plain text."""
        sha = request.path_params["sha256"]
        found = await run_in_threadpool(web.store.attachments.get, sha) if _SHA256.fullmatch(sha) else None
        if found is None:
            return web.page(request, "error.html", 404, title="Not found", message="no such attachment")
        media = found["media_type"] if found["kind"] == "image" else "text/plain; charset=utf-8"
        return Response(found["content"], media_type=media, headers={"content-disposition": "inline"})

    async def ab(request: Request) -> Response:
        def read() -> tuple[list[dict[str, Any]], str]:
            tests = web.store.ab.list()
            framework = ABTestFramework(store=web.store)
            try:
                status = [framework.get_test_status(t["test_id"]) for t in tests]
            finally:
                framework.close()
            data = ReportData(web.store, None, None, None, FailurePatternAnalyzer(), 1, 50, 1)
            return status, report_html.abtests(data)

        tests, figure = await run_in_threadpool(read)
        return web.page(
            request,
            "ab.html",
            title="A/B tests",
            tests=[t for t in tests if t["status"] == "running"],
            ended=[t for t in tests if t["status"] != "running"],
            figure=web.markup(figure),
        )

    async def maintenance(request: Request) -> Response:
        runs = await run_in_threadpool(_runs, web)
        return web.page(
            request, "maintenance.html", title="Maintenance", runs=runs, checkpoints=web.checkpoints
        )

    return [
        Route("/interactions", interactions),
        Route("/interactions/{interaction_id}", interaction),
        Route("/attachments/{sha256}", attachment),
        Route("/ab", ab),
        Route("/maintenance", maintenance),
    ]


def _filters(q: Any) -> dict[str, Any]:
    """The store filters of the interactions page's query; a bad value raises ValueError."""
    out: dict[str, Any] = {}
    window = q.get("window") or "all"
    if window != "all":
        out["start_time"] = time.time() - _period(window, "window")[0]
    for key, name in _TEXT_FILTERS.items():
        if q.get(key):
            out[name] = q[key]
    if "session_id" in out:  # as the store keeps it: an id holding PII is kept as its keyed hash
        out["session_id"] = safe_identifier(out["session_id"])
    for key, name in (("min_rating", "min_feedback_score"), ("max_rating", "max_feedback_score")):
        if q.get(key):
            out[name] = float(q[key])
    signal = q.get("signal")
    if signal:
        if signal not in SIGNALS:
            raise ValueError(f"signal must be one of {', '.join(SIGNALS)} (got {signal!r})")
        out.update(SIGNALS[signal])
    return out


def _shown(value: Any) -> str:
    """A node run's inputs or outputs as text, cut to a readable length."""
    if value is None:
        return ""
    text = value if isinstance(value, str) else orjson.dumps(value, default=str).decode()
    return text if len(text) <= _SHOWN else text[:_SHOWN] + " ..."


def _options(alternatives: Any, chosen: str | None) -> list[tuple[str, float | None, bool]]:
    """A decision's options: name, probability (when it has them) and whether it was chosen."""
    if isinstance(alternatives, dict):
        items = [(str(k), v if isinstance(v, int | float) else None) for k, v in alternatives.items()]
        items.sort(key=lambda x: -(x[1] or 0.0))
    elif isinstance(alternatives, list):
        items = [(str(a), None) for a in alternatives]
    else:
        items = []
    return [(name, p, name == chosen) for name, p in items]


def _runs(web: Web) -> list[dict[str, Any]]:
    """The newest maintenance runs, each with whether it is paused for labels and what it waits for."""
    from cl_plugin.web.annotate import paused_runs

    paused = {p["thread_id"]: p for p in paused_runs(web)}
    out = []
    for run in web.store.runs.list(limit=50):
        steps = [(name, _report(report)) for name, report in (run.get("steps") or {}).items()]
        out.append(run | {"step_list": steps, "paused": paused.get(run["thread_id"])})
    return out


def _report(report: Any) -> str:
    """A step's report as one line of ``key: value``."""
    if not isinstance(report, dict):
        return str(report)
    parts = []
    for key, value in report.items():
        shown = orjson.dumps(value, default=str).decode() if isinstance(value, dict | list) else value
        parts.append(f"{key}: {shown}")
    text = "; ".join(str(p) for p in parts)
    return text if len(text) <= 600 else text[:600] + " ..."
