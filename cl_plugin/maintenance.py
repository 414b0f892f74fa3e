"""The maintenance graph, importable from the library: analysis, drift, selection, annotation, retraining,
evaluation, A/B testing and promotion as one LangGraph graph over a store.

It is built in :mod:`cl_plugin.graphs.maintenance` (the repository's ``graphs/maintenance/``); this module
gives every user the same names without reaching into the graphs package::

    from cl_plugin.maintenance import run_maintenance

    state = run_maintenance(store, config={"maintenance": {"annotation": "feedback"}})
"""

from __future__ import annotations

from cl_plugin.graphs.maintenance import (
    LeaseLostError,
    MaintenanceContext,
    MaintenanceState,
    build_maintenance_graph,
    run_maintenance,
)

__all__ = [
    "LeaseLostError",
    "MaintenanceContext",
    "MaintenanceState",
    "build_maintenance_graph",
    "run_maintenance",
]
