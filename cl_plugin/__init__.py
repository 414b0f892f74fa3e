"""cl_plugin: continual learning for LangGraph agent systems.

Capture production traffic, analyse failures, select what to label, retrain, A/B test and deploy.
"""

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
    "InvalidRecordError",
    "MissingDependencyError",
    "PIIRedactor",
    "PrivacyConfigError",
    "ProductionInteraction",
    "ProductionInteractionLogger",
    "Store",
    "StoreError",
    "StoreUnavailableError",
    "UnknownInteractionError",
    "arecord_decision",
    "load_config",
    "record_decision",
]

__version__ = "0.1.0"
