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
from cl_plugin.privacy import DataQualityValidator, PIIRedactor
from cl_plugin.records import ProductionInteraction
from cl_plugin.store import Store

__all__ = [
    "CaptureHandler",
    "ClPluginError",
    "ConfigError",
    "ContinualLearningConfig",
    "DataQualityValidator",
    "ExportResult",
    "FeedbackMirror",
    "FeedbackMirrorStats",
    "InvalidRecordError",
    "MetaRouter",
    "MissingDependencyError",
    "PIIRedactor",
    "PrivacyConfigError",
    "ProductionInteraction",
    "ProductionInteractionLogger",
    "RagIndex",
    "RoutingDecision",
    "Store",
    "StoreError",
    "StoreUnavailableError",
    "UnknownInteractionError",
    "arecord_decision",
    "export_to_dataset",
    "load_config",
    "record_decision",
    "sanitizing_client",
    "sanitizing_tracer",
]

__version__ = "0.1.0"

# Names whose modules import scikit-learn load on first use, so that capture and logging start fast.
_LAZY = {"MetaRouter": "cl_plugin.router", "RoutingDecision": "cl_plugin.router", "RagIndex": "cl_plugin.rag"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'cl_plugin' has no attribute {name!r}")
