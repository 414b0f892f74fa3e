"""Capture: where production traffic enters the loop.

* :mod:`~cl_plugin.capture.handler`: :class:`CaptureHandler`, the LangChain callback handler attached to any
  LangGraph graph with one line, and :func:`record_decision`;
* :mod:`~cl_plugin.capture.runtree`: assembles a run's callback events into interaction, node-run and
  decision rows on the writer thread;
* :mod:`~cl_plugin.capture.sampling`: which runs keep their node-level detail;
* :mod:`~cl_plugin.capture.logger`: :class:`ProductionInteractionLogger`, the original design's logging API;
* :mod:`~cl_plugin.capture.langsmith`: the bridge that sends sanitized runs and feedback to LangSmith.

Capture may import the privacy layer and the store below it, never a later stage of the loop.
"""

from cl_plugin.capture.handler import DECISION_EVENT, CaptureHandler, arecord_decision, record_decision

__all__ = ["DECISION_EVENT", "CaptureHandler", "arecord_decision", "record_decision"]
