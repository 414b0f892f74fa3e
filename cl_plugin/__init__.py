"""cl_plugin: continual learning for LangGraph agent systems.

Capture production traffic, analyse failures, select what to label, retrain, A/B test and deploy.
"""

from typing import Any

from cl_plugin.capture import CaptureHandler, arecord_decision, record_decision
from cl_plugin.config import ContinualLearningConfig, load_config
from cl_plugin.errors import (
    ClPluginError,
    ConfigError,
    InvalidRecordError,
    MissingDependencyError,
    PrivacyConfigError,
    StoreError,
    StoreUnavailableError,
    UnknownInteractionError,
)
from cl_plugin.langsmith import (
    ExportResult,
    FeedbackMirror,
    FeedbackMirrorStats,
    export_to_dataset,
    sanitizing_client,
    sanitizing_tracer,
)
from cl_plugin.logger import ProductionInteractionLogger
from cl_plugin.metrics import (
    MetricOptions,
    interaction_metrics,
    metrics_by_window,
    router_metrics,
    store_metrics,
    store_metrics_by_window,
)
from cl_plugin.privacy import DataQualityValidator, PIIRedactor
from cl_plugin.records import ActiveLearningCandidate, FailurePattern, ProductionInteraction
from cl_plugin.store import Store

__all__ = [
    "ActiveLearningCandidate",
    "ActiveLearningSelector",
    "Attribution",
    "CaptureHandler",
    "ClPluginError",
    "ConfigError",
    "ContinualLearningConfig",
    "DataQualityValidator",
    "ExportResult",
    "FailureAnalysis",
    "FailurePattern",
    "FailurePatternAnalyzer",
    "FeedbackMirror",
    "FeedbackMirrorStats",
    "IncrementalRetrainingPipeline",
    "InvalidRecordError",
    "MetaRouter",
    "MetricOptions",
    "MissingDependencyError",
    "ModelRegistry",
    "ModelSet",
    "PIIRedactor",
    "PrivacyConfigError",
    "ProductionInteraction",
    "ProductionInteractionLogger",
    "RagIndex",
    "ReplayBuffer",
    "RoutingDecision",
    "RoutingLabel",
    "Store",
    "StoreError",
    "StoreUnavailableError",
    "UnknownInteractionError",
    "arecord_decision",
    "export_to_dataset",
    "interaction_metrics",
    "load_config",
    "metrics_by_window",
    "probabilities_from_decisions",
    "record_decision",
    "router_metrics",
    "routing_labels",
    "sanitizing_client",
    "sanitizing_tracer",
    "store_metrics",
    "store_metrics_by_window",
]

__version__ = "0.1.0"

# Names whose modules import scikit-learn load on first use, so that capture and logging start fast.
_LAZY = {
    "ActiveLearningSelector": "cl_plugin.selection",
    "Attribution": "cl_plugin.analysis",
    "FailureAnalysis": "cl_plugin.analysis",
    "FailurePatternAnalyzer": "cl_plugin.analysis",
    "IncrementalRetrainingPipeline": "cl_plugin.retraining",
    "MetaRouter": "cl_plugin.router",
    "ModelRegistry": "cl_plugin.registry",
    "ModelSet": "cl_plugin.modelset",
    "RagIndex": "cl_plugin.rag",
    "ReplayBuffer": "cl_plugin.labels",
    "RoutingLabel": "cl_plugin.labels",
    "routing_labels": "cl_plugin.labels",
    "RoutingDecision": "cl_plugin.router",
    "probabilities_from_decisions": "cl_plugin.selection",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'cl_plugin' has no attribute {name!r}")
