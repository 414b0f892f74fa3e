"""Serving: the loop's deployment stage, inside the user's own graph.

:class:`LearnedRouter` wraps a decision point's rule: it serves the registry's production model (or the
candidate an A/B test assigns), falls back to the rule when unsure or when no model exists, and records
each decision it serves so the next cycle can learn from its ratings.

Serving may import every stage before it (the A/B test's assignment, the registry, capture).
"""

from cl_plugin.serving.learned_router import LearnedRouter, Routed, point_test_prefix

__all__ = ["LearnedRouter", "Routed", "point_test_prefix"]
