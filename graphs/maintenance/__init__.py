"""The maintenance graph: one LangGraph run of the continual-learning loop over a store.

::

    START -> begin -> review_ab_tests -> load_window -> validate -> drift_check -> analyze_failures
          -> select -> annotate -> retrain -> evaluate -> (ab_test | promote) -> finish -> END

Each node is a short function of the state to a partial update; the state holds only small, JSON-ready
values (counts, ids, summaries), and every node re-reads what it needs from the store, so a checkpoint is
cheap and a resumed run sees the store as it is. Conditional edges skip what is not due: a window with too
few valid interactions goes straight to ``finish``, and so does a retrain that was skipped or failed, or a
candidate that did not pass the gate.

* ``begin`` takes the store's ``maintenance`` lease (two replicas never run at once) and records the run;
  every later node renews the lease and updates the run's record, so a crash shows where it stopped.
* ``review_ab_tests`` concludes A/B tests started by earlier runs: ``Deploy B`` promotes the candidate.
* ``annotate`` labels the selected interactions: ``human`` pauses the graph with :func:`~langgraph.types.interrupt`
  (resume with ``Command(resume={interaction_id: agent, ...})``), ``llm`` asks a judge chat model,
  ``feedback`` derives labels from ratings, ``none`` skips it.
* ``retrain`` runs :class:`~cl_plugin.learning.retraining.IncrementalRetrainingPipeline` against the registry's
  ``production`` model set; ``evaluate`` applies the gate; ``ab_test`` starts a test of production against
  the candidate, or ``promote`` moves ``production`` when A/B testing is off and ``auto_promote`` is on.

Where each step lives (``steps/``, each a module-level ``step(state, runtime)``):

========================================  ================================
``begin``, ``finish``                     :mod:`.steps.run`
``review_ab_tests``                       :mod:`.steps.review`
``load_window``, ``validate``             :mod:`.steps.window`
``drift_check``                           :mod:`.steps.drift`
``analyze_failures``                      :mod:`.steps.analysis`
``select``                                :mod:`.steps.selection`
``annotate``                              :mod:`.steps.annotation`
``retrain``                               :mod:`.steps.retraining`
``evaluate``                              :mod:`.steps.evaluation`
``ab_test``                               :mod:`.steps.abtest`
``promote``                               :mod:`.steps.promotion`
========================================  ================================

A step's dependencies (store, registry, configuration, judge, clock, the learned graphs' declared options)
are a :class:`~.context.MaintenanceContext`, LangGraph's runtime context (``context_schema``): it is passed
to ``invoke(..., context=...)`` on every call (a resume's too: LangGraph does not checkpoint it), or it is
the graph's default (:func:`build_maintenance_graph` binds the one its arguments make; the graph LangGraph's
server loads, :func:`~.graph.maintenance`, builds one from the environment). :mod:`.graph` only wires the
steps: one wrapper (:func:`~.graph.step`) around each renews the lease, times it and saves its report to the
run's record, and the edges stop the run once a step set ``status``. The decision points' work is in
:mod:`.points`, the registry's in :mod:`.models`.

What is learned (``maintenance.points``):

* a list of decision points (``"graph/node/kind"``, see :class:`~cl_plugin.records.PointRef`) or ``"auto"``
  (every point but a ``Send`` fan-out with 2 to 20 options): each point gets its own router, trained on its
  decisions' labels (ratings, annotations, complement labels from bad ratings, inverse-propensity weights;
  see :func:`cl_plugin.learning.labels.routing_labels`), registered under the point's names, gated against its
  incumbent (the point's production router, or before there is one the graph's own policy as recorded; a
  tie does not pass, and a candidate that only ratings say may gain needs an A/B test), A/B tested through
  the decisions a :class:`~cl_plugin.serving.LearnedRouter` serves, and promoted on its own; every step
  reports per point under ``points``;
* unset: the classic model set (``router``, ``rag_index``, ``router-replay``, trained on the interactions'
  routed agents) when the registry holds a production ``router`` or when the window holds no decision point
  to learn (interactions logged with the classic logger), else ``"auto"``.

A run killed anywhere resumes on its thread from the step it was in, and that step's second attempt
leaves the store as one attempt would: it finishes the A/B verdicts the first recorded, keeps the items the
first queued, takes the candidate the first registered, and reuses the A/B test the first started.

:func:`build_maintenance_graph` returns the uncompiled graph: compile it with any checkpointer (a
checkpointer is needed for human annotation and for resuming after a crash; invoke it with
``durability="sync"`` so that every step's checkpoint is written before the next starts).
:func:`run_maintenance` compiles it (with an in-memory checkpointer by default) and runs one cycle that way.
"""

from __future__ import annotations

from .context import (
    LEASE,
    MODEL_NAMES,
    RECORDED_POLICY,
    LeaseLostError,
    MaintenanceContext,
    MaintenanceState,
)
from .graph import build_maintenance_graph, maintenance, maintenance_graph, run_maintenance
from .models import register_starting_models
from .paused import checkpointer, is_paused, queue_labels, resume_paused_run, waiting_for

__all__ = [
    "LEASE",
    "MODEL_NAMES",
    "RECORDED_POLICY",
    "LeaseLostError",
    "MaintenanceContext",
    "MaintenanceState",
    "build_maintenance_graph",
    "checkpointer",
    "is_paused",
    "maintenance",
    "maintenance_graph",
    "queue_labels",
    "register_starting_models",
    "resume_paused_run",
    "run_maintenance",
    "waiting_for",
]
