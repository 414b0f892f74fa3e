"""The model sets the maintenance steps read and move in the registry, and how an A/B test names them."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from .context import AGENTS, MODEL_NAMES, TEST_PREFIX


def register_starting_models(registry: Any, *, actor: str | None = None) -> dict[str, int]:
    """Register the example graph's starting model set (:func:`cl_plugin.graphs.mcts_agents.starting_model_set`) and
    put it in production, unless the registry has a production router already.

    Returns:
        The production version of each role (router, rag_index, replay) that was registered; empty when a
        production router existed.
    """
    from cl_plugin.graphs.mcts_agents import starting_model_set

    if registry.get_alias(MODEL_NAMES["router"], "production") is not None:
        return {}
    versions = starting_model_set().register(registry, names=MODEL_NAMES, alias=None)
    return promote_versions(registry, versions, "starting model", actor=actor)


def production_router(registry: Any) -> Any:
    """The production router, or None when the registry has none yet (selection then uses confidences)."""
    if registry.get_alias(MODEL_NAMES["router"], "production") is None:
        return None
    return registry.load(MODEL_NAMES["router"], alias="production")


def classic_agents(registry: Any) -> list[str]:
    """The agents a classic routing label may name: the production router's classes, else the example's."""
    if registry.get_alias(MODEL_NAMES["router"], "production") is not None:
        return [str(c) for c in registry.load(MODEL_NAMES["router"], alias="production").classes_]
    return list(AGENTS)


def promote_versions(
    registry: Any,
    versions: Mapping[str, int],
    reason: str,
    *,
    actor: str | None = "maintenance",
    names: Mapping[str, str] | None = None,
) -> dict[str, int]:
    """Promote each role's version to ``production``; the versions promoted."""
    names = names or MODEL_NAMES
    promoted = {}
    for role, version in versions.items():
        registry.promote(names[role], version, reason=reason, actor=actor)
        promoted[role] = version
    return promoted


def describe(versions: Mapping[str, int]) -> str:
    """A model set as an A/B test's arm names it: ``rag_index v1, router v2``."""
    return ", ".join(f"{role} v{version}" for role, version in sorted(versions.items()))


def versions_of(description: str) -> dict[str, int]:
    """The versions an arm's :func:`describe` names."""
    return {role: int(v) for role, v in re.findall(r"([a-z_]+) v(\d+)", description)}


def point_names(test_name: str) -> dict[str, str] | None:
    """The registry names of the point a maintenance A/B test is about (None for the classic router's)."""
    match = re.match(rf"{re.escape(TEST_PREFIX)}point ([A-Za-z0-9_.-]+): ", test_name)
    if match is None:
        return None
    return {"router": match.group(1), "replay": f"{match.group(1)}-replay"}
