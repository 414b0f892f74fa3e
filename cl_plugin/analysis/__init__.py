"""Analysis: what the captured traffic says, and which of it to learn from next.

* :mod:`~cl_plugin.analysis.failures`: :class:`FailurePatternAnalyzer`, which reads each interaction once
  (:mod:`~cl_plugin.analysis.signals`, :mod:`~cl_plugin.analysis.tally`), then tests and ranks what it
  counted (:mod:`~cl_plugin.analysis.patterns`) into a :class:`FailureAnalysis`
  (:mod:`~cl_plugin.analysis.findings`): patterns, attribution, diagnostics;
* :mod:`~cl_plugin.analysis.clustering`: grouping failed queries by their text;
* :mod:`~cl_plugin.analysis.metrics`: satisfaction, failure, latency and routing figures over a store;
* :mod:`~cl_plugin.analysis.selection`: active selection of the interactions worth a label
  (:class:`ActiveLearningSelector`).

Analysis may import capture, the store and privacy, never a later stage. The failure analysis loads
scikit-learn, so its names load on first use: ``from cl_plugin.analysis import FailureAnalysis`` works, and
importing :mod:`~cl_plugin.analysis.metrics` does not pay for it.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "DIAGNOSTIC_SIGNALS",
    "LOW_CONFIDENCE",
    "OUTCOME_SIGNALS",
    "POOR_RETRIEVAL_QUALITY",
    "SIGNALS",
    "Attribution",
    "Diagnostic",
    "FailureAnalysis",
    "FailurePatternAnalyzer",
    "failure_signals",
]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("cl_plugin.analysis.failures"), name)
    raise AttributeError(f"module 'cl_plugin.analysis' has no attribute {name!r}")
