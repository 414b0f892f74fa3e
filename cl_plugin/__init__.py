"""cl_plugin: continual learning for LangGraph agent systems.

Capture production traffic, analyse failures, select what to label, retrain, A/B test and deploy.
"""

from typing import Any

from cl_plugin.analysis.metrics import (
    MetricOptions,
    interaction_metrics,
    metrics_by_window,
    point_metrics,
    router_metrics,
    store_metrics,
    store_metrics_by_window,
)
from cl_plugin.capture import CaptureHandler, arecord_decision, record_decision
from cl_plugin.capture.langsmith import (
    ExportResult,
    FeedbackMirror,
    FeedbackMirrorStats,
    export_to_dataset,
    sanitizing_client,
    sanitizing_tracer,
)
from cl_plugin.capture.logger import ProductionInteractionLogger
from cl_plugin.config import ContinualLearningConfig, load_config
from cl_plugin.errors import (
    ABTestEndedError,
    ABTestError,
    ArtifactIntegrityError,
    ClPluginError,
    ConfigError,
    DriftInputError,
    InvalidRecordError,
    MissingDependencyError,
    PrivacyConfigError,
    RegistryError,
    StoreError,
    StoreSchemaError,
    StoreUnavailableError,
    UnknownABTestError,
    UnknownInteractionError,
    UntrustedArtifactError,
)
from cl_plugin.privacy import DataQualityValidator, PIIRedactor
from cl_plugin.records import ActiveLearningCandidate, FailurePattern, PointRef, ProductionInteraction
from cl_plugin.store import Store

__all__ = [
    "ADWIN",
    "DDM",
    "EDDM",
    "KSWIN",
    "ABTestEndedError",
    "ABTestError",
    "ABTestFramework",
    "ActiveLearningCandidate",
    "ActiveLearningSelector",
    "ArtifactIntegrityError",
    "Attribution",
    "CaptureHandler",
    "ClPluginError",
    "ConfigError",
    "ContinualLearningConfig",
    "DataQualityValidator",
    "DriftDetector",
    "DriftInputError",
    "DriftReport",
    "ExportResult",
    "FailureAnalysis",
    "FailurePattern",
    "FailurePatternAnalyzer",
    "FeedbackMirror",
    "FeedbackMirrorStats",
    "IncrementalRetrainingPipeline",
    "InvalidRecordError",
    "LearnedRouter",
    "MetaRouter",
    "MetricOptions",
    "MissingDependencyError",
    "ModelRegistry",
    "ModelSet",
    "PIIRedactor",
    "PageHinkley",
    "PointRef",
    "PrivacyConfigError",
    "ProductionInteraction",
    "ProductionInteractionLogger",
    "RagIndex",
    "RegistryError",
    "ReplayBuffer",
    "RoutingDecision",
    "RoutingLabel",
    "Store",
    "StoreError",
    "StoreSchemaError",
    "StoreUnavailableError",
    "UnknownABTestError",
    "UnknownInteractionError",
    "UntrustedArtifactError",
    "arecord_decision",
    "build_report",
    "compare_columns",
    "export_to_dataset",
    "interaction_metrics",
    "load_config",
    "metrics_by_window",
    "point_metrics",
    "probabilities_from_decisions",
    "record_decision",
    "required_sample_size",
    "router_metrics",
    "routing_labels",
    "sanitizing_client",
    "sanitizing_tracer",
    "statistical_power",
    "store_metrics",
    "store_metrics_by_window",
    "text_drift",
]

__version__ = "0.1.0"

# Names whose modules import scikit-learn load on first use, so that capture and logging start fast.
_LAZY = {
    "ABTestFramework": "cl_plugin.abtest",
    "ADWIN": "cl_plugin.drift",
    "ActiveLearningSelector": "cl_plugin.analysis.selection",
    "Attribution": "cl_plugin.analysis",
    "DDM": "cl_plugin.drift",
    "DriftDetector": "cl_plugin.drift",
    "DriftReport": "cl_plugin.drift",
    "EDDM": "cl_plugin.drift",
    "FailureAnalysis": "cl_plugin.analysis",
    "FailurePatternAnalyzer": "cl_plugin.analysis",
    "IncrementalRetrainingPipeline": "cl_plugin.learning.retraining",
    "KSWIN": "cl_plugin.drift",
    "LearnedRouter": "cl_plugin.serving",
    "MetaRouter": "cl_plugin.learning.router",
    "ModelRegistry": "cl_plugin.learning.registry",
    "ModelSet": "cl_plugin.learning.modelset",
    "PageHinkley": "cl_plugin.drift",
    "RagIndex": "cl_plugin.learning.rag",
    "ReplayBuffer": "cl_plugin.learning.labels",
    "RoutingDecision": "cl_plugin.learning.router",
    "RoutingLabel": "cl_plugin.learning.labels",
    "build_report": "cl_plugin.report",
    "compare_columns": "cl_plugin.drift",
    "probabilities_from_decisions": "cl_plugin.analysis.selection",
    "required_sample_size": "cl_plugin.abtest",
    "routing_labels": "cl_plugin.learning.labels",
    "statistical_power": "cl_plugin.abtest",
    "text_drift": "cl_plugin.drift",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'cl_plugin' has no attribute {name!r}")
