"""The maintenance graph's steps, one module per step or small group of steps.

Each step is a module-level ``step(state, runtime)``: ``runtime.context`` is the
:class:`~cl_plugin.graphs.maintenance.context.MaintenanceContext`. A step returns an
:class:`~cl_plugin.graphs.maintenance.context.Outcome` (its report and state update); the wrapper that wires it
(:func:`cl_plugin.graphs.maintenance.graph.step`) renews the lease, times it and saves its report to the run's record.
"""
