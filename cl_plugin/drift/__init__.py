"""Drift detection: batch tests by column type, streaming detectors, text drift, and the spec's DriftDetector.

One module per detector family, like ``river.drift``: :mod:`~cl_plugin.drift.adwin`,
:mod:`~cl_plugin.drift.binary` (DDM, EDDM), :mod:`~cl_plugin.drift.page_hinkley`,
:mod:`~cl_plugin.drift.kswin`, :mod:`~cl_plugin.drift.stattests` (KS, PSI, chi-square, Wasserstein,
Jensen-Shannon), :mod:`~cl_plugin.drift.text`, and :mod:`~cl_plugin.drift.detector` on top: the spec's
``DriftDetector`` runs either a batch test of a sample window at three scales, or one streaming detector per
feature on every sample (``detection_method="adwin"``, ``"page_hinkley"``, ``"kswin"``; ``"ddm"`` and
``"eddm"`` for 0/1 features).
"""

from __future__ import annotations

from cl_plugin.drift.adwin import ADWIN
from cl_plugin.drift.base import StreamingDetector
from cl_plugin.drift.binary import DDM, EDDM
from cl_plugin.drift.detector import DriftDetector, DriftReport
from cl_plugin.drift.kswin import KSWIN
from cl_plugin.drift.page_hinkley import PageHinkley
from cl_plugin.drift.stattests import (
    ColumnDrift,
    DatasetDrift,
    adjust_p_values,
    choose_method,
    compare_columns,
)
from cl_plugin.drift.text import TextDriftResult, text_drift

__all__ = [
    "ADWIN",
    "DDM",
    "EDDM",
    "KSWIN",
    "ColumnDrift",
    "DatasetDrift",
    "DriftDetector",
    "DriftReport",
    "PageHinkley",
    "StreamingDetector",
    "TextDriftResult",
    "adjust_p_values",
    "choose_method",
    "compare_columns",
    "text_drift",
]
