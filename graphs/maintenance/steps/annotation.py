"""``annotate``: label the selected interactions: ``human`` pauses the graph with
:func:`~langgraph.types.interrupt`, ``llm`` asks a judge chat model, ``feedback`` derives labels from
ratings, ``none`` skips it."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import HumanMessage, SystemMessage
from langgraph.runtime import Runtime
from langgraph.types import interrupt

from cl_plugin.store import Store

from ..context import MaintenanceContext, MaintenanceState, Outcome, hold
from ..models import classic_agents

JUDGE_PROMPT = (
    "You route user queries to one of three agents. HRM decomposes a problem hierarchically: ordering jobs "
    "with dependencies, and questions that need several facts looked up in turn. TRM refines an estimate "
    "step by step: roots and equations to a number of decimals. MCTS searches a tree of choices: picking "
    "numbers or items to get as close as possible to a limit. Answer with the agent's name only."
)


def annotate(state: MaintenanceState, runtime: Runtime[MaintenanceContext]) -> Outcome:
    """Label the selected items (a human's labels come as the resume value,
    ``Command(resume={interaction_id: option, ...})``) and store the labels in the annotation queue."""
    ctx = runtime.context
    mode = ctx.m.annotation
    items = state.get("selected", [])
    if mode == "none" or not items:
        return Outcome({"mode": mode, "labeled": 0, "skipped": len(items)})
    agents = classic_agents(ctx.registry)
    if mode == "human":
        answer = interrupt(
            {
                "kind": "annotation",
                "agents": agents,
                "items": items,
                "resume_with": "{interaction_id: option} for the items you labeled, each among its "
                "options (the agents for an item without); leave out the others",
            }
        )
        labels = _human_labels(answer)
    elif mode == "llm":
        labels = _judge_labels(ctx.judge, items, agents)
    else:
        labels = _feedback_labels(ctx.store, items)
    # The labels may have taken long (a human, a slow judge): the lease is renewed again before they are
    # written, so that a run that lost it meanwhile writes nothing.
    hold(ctx, state)
    annotator = {"human": "human", "llm": "llm-judge", "feedback": "feedback"}[mode]
    labeled = 0
    for item in items:
        choice = labels.get(item["interaction_id"])
        if "point" in item:
            points = [{"point": item["point"], "options": item["options"]}, *item.get("other_points", ())]
            at = next((p["point"] for p in points if choice in p["options"]), None)
            label = {"option": choice, "point": at} if at is not None else None
        else:
            label = {"agent": choice} if choice in agents else None
        if label is not None:
            ctx.store.queue.update(item["item_id"], status="labeled", label=label, annotator=annotator)
            labeled += 1
    return Outcome({"mode": mode, "labeled": labeled, "skipped": len(items) - labeled})


def _human_labels(answer: Any) -> dict[str, str]:
    """Labels from a resume value: ``{interaction_id: agent}`` or a list of ``{"interaction_id", "agent"}``."""
    if isinstance(answer, Mapping):
        return {str(k): str(v) for k, v in answer.items() if isinstance(v, str)}
    if isinstance(answer, list):
        return {
            str(a["interaction_id"]): str(a["agent"])
            for a in answer
            if isinstance(a, Mapping) and "agent" in a
        }
    return {}


def _judge_labels(judge: BaseChatModel, items: list[dict[str, Any]], agents: list[str]) -> dict[str, str]:
    """The judge's choice for each item: among its decision point's options (each described by the
    docstring of the node it leads to, when there is one), or among the agents for the classic router."""
    prompts = [
        [
            SystemMessage(_point_prompt(item) if "point" in item else JUDGE_PROMPT),
            HumanMessage(item["query"]),
        ]
        for item in items
    ]
    replies = judge.batch(prompts)
    labels = {}
    for item, reply in zip(items, replies, strict=True):
        choices = item["options"] if "point" in item else agents
        found = [a for a in choices if re.search(rf"(?<![\w-]){re.escape(a)}(?![\w-])", str(reply.content))]
        if len(found) == 1:
            labels[item["interaction_id"]] = found[0]
    return labels


def _point_prompt(item: Mapping[str, Any]) -> str:
    docs = item.get("docs") or {}
    lines = [f"- {option}" + (f": {docs[option]}" if docs.get(option) else "") for option in item["options"]]
    return (
        "Choose which of these options should handle the user's request below:\n"
        + "\n".join(lines)
        + "\nAnswer with the option's name only."
    )


def _feedback_labels(store: Store, items: list[dict[str, Any]]) -> dict[str, str]:
    from cl_plugin.learning.labels import routing_labels

    rows = []
    for item in items:
        row = store.get_interaction(item["interaction_id"])
        if row is not None and "point" in item:  # the option chosen at the point is what the rating judges
            row = {**row, "agent_selected": item["chosen"], "metadata": {}}
        if row is not None:
            rows.append(row)
    return {label.interaction_id: label.agent for label in routing_labels(rows) if label.source == "feedback"}
