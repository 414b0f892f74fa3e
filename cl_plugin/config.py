"""The ``continual_learning:`` configuration section as validated models.

Every key of the original design's YAML section is here with its documented default; a few keys the plugin
adds carry their own defaults. A misspelt or ill-typed key raises :class:`~cl_plugin.errors.ConfigError`
naming the key and what it accepts. The classic classes take either one section as a dict
(``ProductionInteractionLogger(config["logging"])``) or keyword arguments; both go through these models.
"""

from __future__ import annotations

import difflib
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from cl_plugin.errors import ConfigError, PrivacyConfigError

__all__ = [
    "ABTestingConfig",
    "ActiveLearningConfig",
    "ContinualLearningConfig",
    "DriftDetectionConfig",
    "FailureAnalysisConfig",
    "FeedbackConfig",
    "LoggingConfig",
    "MaintenanceConfig",
    "PrivacyConfig",
    "RetrainingConfig",
    "ValidationConfig",
    "load_config",
    "parse_section",
    "resolve_section",
    "split_config",
]

log = logging.getLogger("cl_plugin.config")

HASH_KEY_ENV = "CL_PLUGIN_HASH_KEY"


class _Section(BaseModel):
    # NaN and infinity are never meaningful settings (a threshold of inf silences a detector)
    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False, allow_inf_nan=False)


class LoggingConfig(_Section):
    """Production interaction logging (``continual_learning.logging``)."""

    enabled: bool = True
    storage: str = "./cache/production_logs"
    use_sqlite: bool = True
    use_compression: bool = True
    buffer_size: int = Field(1000, ge=1, le=1_000_000)
    sanitize_pii: bool = True
    use_langsmith: bool = False
    langsmith_project: str = "production-feedback"
    # Plugin keys.
    database_url: str | None = Field(
        None, description="SQLAlchemy URL; None means SQLite at <storage>/interactions.db"
    )
    flush_interval: float = Field(1.0, gt=0, le=3600, description="seconds between timed flushes")
    durability: Literal["batch", "sync"] = "batch"
    max_queue: int = Field(100_000, ge=1, description="records held in memory before callers wait")
    max_text_length: int = Field(100_000, ge=100, description="longer text fields are truncated")
    sample_rate: float = Field(
        1.0,
        gt=0,
        le=1,
        description="share of runs whose node runs and decisions a CaptureHandler on this logger keeps "
        "(every run keeps its interaction row; runs that raise keep everything); 0.1 keeps 10%",
    )
    strict: bool = Field(
        False,
        description="log_interaction raises InvalidRecordError for a record it cannot store, instead of "
        "returning False with a warning (for tests and batch imports)",
    )


class ValidationConfig(_Section):
    """Data quality checks of :class:`~cl_plugin.privacy.DataQualityValidator` (``continual_learning.validation``)."""

    min_query_length: int = Field(1, ge=0)
    max_query_length: int = Field(10_000, ge=1)
    min_response_length: int = Field(1, ge=0)
    max_response_length: int = Field(100_000, ge=1)
    min_feedback_score: float = 1.0
    max_feedback_score: float = 5.0
    blocked_patterns: list[str] = Field(default_factory=list)
    check_pii: bool = True


class PrivacyConfig(_Section):
    """Privacy and security (``continual_learning.privacy``)."""

    anonymize_user_ids: bool = True
    hash_session_ids: bool = True
    redact_sensitive_fields: bool = True
    retention_days: int = Field(90, ge=1)
    # Plugin keys.
    hash_key: str | None = Field(None, description=f"HMAC key; falls back to ${HASH_KEY_ENV}")
    hash_key_env: str = HASH_KEY_ENV

    def resolve_hash_key(self) -> str | None:
        """The HMAC key from config or environment, or None when neither has one."""
        return self.hash_key or os.environ.get(self.hash_key_env) or None

    def id_hashing(self) -> tuple[str | None, bool, bool]:
        """The id hashing in force: ``(key, hash_user_ids, hash_session_ids)``.

        ``anonymize_user_ids`` and ``hash_session_ids`` default to true, but a default applies only when a
        key exists: with no key and neither flag set explicitly, ids are kept as given (ids holding PII are
        hashed all the same, elsewhere). A flag set to true explicitly without a key is an error.

        Raises:
            PrivacyConfigError: hashing was asked for explicitly but no key is available.
        """
        key = self.resolve_hash_key()
        explicit = self.model_fields_set
        users = self.anonymize_user_ids and (key is not None or "anonymize_user_ids" in explicit)
        sessions = self.hash_session_ids and (key is not None or "hash_session_ids" in explicit)
        if (users or sessions) and key is None:
            asked = "anonymize_user_ids" if users else "hash_session_ids"
            raise PrivacyConfigError(
                f"privacy.{asked} is true, which needs a secret key: set privacy.hash_key or the environment "
                f"variable {self.hash_key_env}, or set privacy.{asked} to false",
                key="privacy.hash_key",
            )
        return key, users, sessions


class FeedbackConfig(_Section):
    """Feedback attachments: how many a feedback may carry and how large each may be
    (``continual_learning.feedback``)."""

    max_attachments: int = Field(5, ge=0, le=100, description="attachments one feedback may carry")
    max_image_bytes: int = Field(
        5_000_000, ge=1, description="largest image attachment in bytes, as sent and as re-encoded"
    )
    max_image_side: int = Field(4096, ge=1, description="widest and tallest image attachment in pixels")
    max_text_bytes: int = Field(
        200_000, ge=1, description="largest code or text attachment in bytes of UTF-8"
    )


class FailureAnalysisConfig(_Section):
    """Failure pattern analysis (``continual_learning.failure_analysis``)."""

    enabled: bool = True
    min_cluster_size: int = Field(5, ge=2)
    similarity_threshold: float = Field(0.7, gt=0, lt=1)
    analyze_frequency: Literal["hourly", "daily", "weekly", "monthly"] = "daily"
    slow_response_ms: float = Field(5000.0, gt=0)
    low_rating_threshold: float = 3.0


class ActiveLearningConfig(_Section):
    """Active learning selection (``continual_learning.active_learning``)."""

    enabled: bool = True
    budget_per_cycle: int = Field(50, ge=1)
    selection_strategy: Literal["uncertainty", "diversity", "hybrid", "failure"] = "hybrid"
    diversity_weight: float = Field(0.3, ge=0, le=1)


class RetrainingConfig(_Section):
    """Incremental retraining (``continual_learning.retraining``)."""

    schedule: Literal["daily", "weekly", "monthly"] = "weekly"
    min_new_samples: int = Field(100, ge=1)
    validation_split: float = Field(0.2, gt=0, lt=1)
    enable_ab_test: bool = True


class DriftDetectionConfig(_Section):
    """Data drift detection (``continual_learning.drift_detection``).

    ``threshold`` is the effect a feature must reach (KS statistic, PSI, total variation distance,
    normalised Wasserstein or Jensen-Shannon distance), and its p-value must pass ``alpha`` after the
    ``correction`` for testing several features and window lengths at once. The streaming methods (``adwin``,
    ``page_hinkley``, ``kswin``; ``ddm`` and ``eddm`` for 0/1 features) run one detector per feature on
    every sample, set by ``detector_params``.
    """

    enabled: bool = True
    window_size: int = Field(1000, ge=10)
    threshold: float = Field(0.1, gt=0)
    detection_method: Literal[
        "auto",
        "chi_square",
        "jensen_shannon",
        "wasserstein",
        "adwin",
        "page_hinkley",
        "kswin",
        "ddm",
        "eddm",
        "kolmogorov_smirnov",
        "psi",
    ] = "kolmogorov_smirnov"
    # Plugin keys.
    check_every: int = Field(100, ge=1, description="samples between two tests of the window")
    min_samples: int = Field(
        200,
        ge=10,
        description="samples in the window before the first test (wasserstein, jensen_shannon: full)",
    )
    alpha: float = Field(
        0.001,
        gt=0,
        lt=1,
        description="level of the corrected p-values of one check, which bounds its false-alarm chance: "
        "0.001 with a check every 100 samples is one false alarm in 100,000 samples at most",
    )
    correction: Literal["benjamini_hochberg", "bonferroni", "none"] = "benjamini_hochberg"
    psi_bins: int = Field(10, ge=2, le=1000, description="reference-quantile bins of PSI and Jensen-Shannon")
    persistence: int = Field(1, ge=1, description="drifted tests in a row before an alarm")
    cooldown: int | None = Field(
        None, ge=0, description="samples after a feature's alarm before its next one; None means window_size"
    )
    detector_params: dict[str, float | int | str | None] | None = Field(
        None,
        description="keyword arguments of the streaming detector (adwin, page_hinkley, kswin, ddm, eddm), "
        "on features standardised by the reference; None keeps its defaults (page_hinkley: delta 0.25; kswin: alpha 0.0001)",
    )

    @field_validator("detection_method", mode="before")
    @classmethod
    def _method_alias(cls, value: Any) -> Any:
        # Code written for the original design's reference implementation spells PSI out.
        return "psi" if value == "population_stability_index" else value


class ABTestingConfig(_Section):
    """A/B testing (``continual_learning.ab_testing``)."""

    enabled: bool = False
    traffic_split: float = Field(0.1, gt=0, lt=1, description="share of units assigned to group B")
    min_samples: int = Field(1000, ge=2, description="results per group before any recommendation")
    confidence_level: float = Field(0.95, gt=0.5, lt=1)
    # Plugin keys.
    metric_type: Literal["auto", "continuous", "binary"] = Field(
        "auto", description="auto: binary (two proportions) while every metric is 0 or 1, else Welch"
    )
    higher_is_better: bool = True
    minimum_detectable_effect: float | None = Field(
        None, gt=0, description="planned effect in metric units: sizes the test and stops it for futility"
    )
    power: float = Field(0.8, gt=0, lt=1, description="wanted chance to detect the planned effect")
    sequential_tuning: int = Field(
        5000, ge=10, description="total results at which the always-valid interval is narrowest"
    )
    durability: Literal["batch", "sync"] = Field(
        "batch", description="batch: results buffered and flushed; sync: each committed before returning"
    )
    buffer_size: int = Field(1000, ge=1, le=1_000_000, description="buffered results that trigger a flush")
    flush_interval: float = Field(1.0, gt=0, le=3600, description="seconds between timed flushes")


class MaintenanceConfig(_Section):
    """The maintenance graph (``continual_learning.maintenance``, a plugin section)."""

    window_hours: float = Field(168.0, gt=0, description="longest window of interactions one run reads")
    min_interactions: int = Field(
        100, ge=1, description="fewer valid interactions in the window: nothing runs"
    )
    max_interactions: int = Field(100_000, ge=1, description="newest interactions read at most")
    annotation: Literal["human", "llm", "feedback", "none"] = Field(
        "feedback",
        description="human: pause for labels (interrupt); llm: an LLM judge labels; feedback: labels derived "
        "from ratings; none: no annotation step",
    )
    annotation_budget: int | None = Field(
        None, ge=1, description="items selected per run; None uses active_learning.budget_per_cycle"
    )
    min_accuracy_gain: float = Field(
        0.0, description="routing accuracy the candidate must gain to pass the gate"
    )
    max_ece_increase: float = Field(0.05, ge=0, description="calibration error the candidate may add")
    min_validation_samples: int = Field(20, ge=1, description="fewer held-out labels: the gate does not pass")
    auto_promote: bool = Field(
        False, description="promote a candidate that passed the gate when no A/B test is set up"
    )
    lease_ttl_seconds: float = Field(3600.0, gt=0, description="a run that stops renewing loses the lease")
    model_dir: str = Field("./cache/models", description="registry artifacts and candidate model sets")
    report_path: str | None = Field(None, description="write the HTML report here after each run")
    points: Literal["auto"] | list[str] | None = Field(
        None,
        description="decision points to learn, as 'graph/node/kind' (see `cl-plugin stats`); 'auto': every "
        "point with two or more options; None: the classic router when the registry has one in production or "
        "no decision point was captured, else 'auto'",
    )
    max_gain_p_value: float = Field(
        0.05,
        gt=0,
        le=1,
        description="a decision point's candidate must be right more often than its incumbent where they "
        "disagree on held-out labels, at this one-sided sign-test p-value",
    )
    max_ips_weight: float = Field(
        10.0,
        ge=1.0,
        description="largest inverse-propensity weight of a label from a served decision's rating",
    )

    @field_validator("points")
    @classmethod
    def _point_specs(cls, value: Any) -> Any:
        if isinstance(value, list):
            from cl_plugin.records import PointRef

            for spec in value:
                PointRef.parse(spec)  # a ValueError naming the forms a point takes
        return value


class ContinualLearningConfig(_Section):
    """The whole ``continual_learning:`` section."""

    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    validation: ValidationConfig = Field(default_factory=ValidationConfig)
    failure_analysis: FailureAnalysisConfig = Field(default_factory=FailureAnalysisConfig)
    active_learning: ActiveLearningConfig = Field(default_factory=ActiveLearningConfig)
    retraining: RetrainingConfig = Field(default_factory=RetrainingConfig)
    drift_detection: DriftDetectionConfig = Field(default_factory=DriftDetectionConfig)
    ab_testing: ABTestingConfig = Field(default_factory=ABTestingConfig)
    privacy: PrivacyConfig = Field(default_factory=PrivacyConfig)
    maintenance: MaintenanceConfig = Field(default_factory=MaintenanceConfig)
    feedback: FeedbackConfig = Field(default_factory=FeedbackConfig)

    @field_validator("*", mode="before")
    @classmethod
    def _none_is_default(cls, value: Any) -> Any:
        # An empty YAML section (``logging:``) parses as None: treat it as "all defaults".
        return {} if value is None else value


S = TypeVar("S", bound=BaseModel)


def _describe_allowed(model: type[BaseModel], loc: tuple[Any, ...]) -> str:
    """Say what a key accepts: its type, range or allowed values, or the known keys."""
    target: Any = model
    for part in loc[:-1]:
        info = target.model_fields.get(part) if isinstance(part, str) else None
        if (
            info is None
            or not isinstance(info.annotation, type)
            or not issubclass(info.annotation, BaseModel)
        ):
            break
        target = info.annotation
    return ", ".join(sorted(target.model_fields))


def _shown(value: Any) -> str:
    """A value for an error message: its repr, shortened, or its type when even that fails."""
    try:
        text = repr(value)
    except Exception:  # an int past Python's digit limit, or a repr that raises
        return f"a {type(value).__name__}"
    return text if len(text) <= 200 else text[:200] + "..."


def did_you_mean(key: Any, known: Any) -> str:
    """`` (did you mean 'x'?)`` for the known name nearest to ``key``, or nothing when none is near."""
    near = difflib.get_close_matches(str(key), sorted(known), n=1, cutoff=0.6)
    return f" (did you mean {near[0]!r}?)" if near else ""


def _config_error(exc: ValidationError, model: type[BaseModel], prefix: str) -> ConfigError:
    lines = []
    first_key = None
    for err in exc.errors():
        loc = tuple(err["loc"])
        key = ".".join(str(p) for p in (prefix, *loc) if p != "")
        first_key = first_key or key
        if err["type"] == "extra_forbidden":
            allowed = _describe_allowed(model, loc)
            hint = did_you_mean(loc[-1], allowed.split(", "))
            lines.append(f"unknown key {key!r}{hint}; the keys allowed here are: {allowed}")
        else:
            lines.append(f"{key}: {err['msg']} (got {_shown(err.get('input'))})")
    return ConfigError("invalid configuration: " + "; ".join(lines), key=first_key)


def parse_section(model: type[S], data: Any = None, *, prefix: str = "", **overrides: Any) -> S:
    """Validate one config section given as a model, a dict, or keyword arguments.

    Args:
        model: the section's model class.
        data: an instance of ``model``, a dict, or None for defaults.
        prefix: the section's name, used in error messages (``"logging"``).
        **overrides: keys that replace those in ``data``.

    Returns:
        A validated instance of ``model``.

    Raises:
        ConfigError: a key is unknown or a value is ill-typed or out of range.
    """
    if isinstance(data, model) and not overrides:
        return data
    if isinstance(data, BaseModel):
        data = data.model_dump()
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{prefix or model.__name__} config must be a dict or {model.__name__}, got {type(data).__name__}",
            key=prefix or None,
        )
    merged = {**data, **overrides}
    try:
        return model.model_validate(merged)
    except ValidationError as exc:
        raise _config_error(exc, model, prefix) from None


#: Each section's model, by its name in the ``continual_learning:`` mapping.
SECTIONS: dict[str, type[_Section]] = {
    name: info.annotation  # type: ignore[misc]
    for name, info in ContinualLearningConfig.model_fields.items()
}
_SECTION_OF_MODEL = {model: name for name, model in SECTIONS.items()}
# Every key of every section, and the sections that have it (``enabled`` is in five).
_KEY_SECTIONS: dict[str, tuple[str, ...]] = {
    key: tuple(name for name, model in SECTIONS.items() if key in model.model_fields)
    for key in dict.fromkeys(k for model in SECTIONS.values() for k in model.model_fields)
}


def split_config(config: Any, *, component: str, section: str | None = None) -> dict[str, dict[str, Any]]:
    """Sort any accepted config shape into the keys it sets, section by section.

    The shapes users pass, all accepted by every classic class:

    * one section's dict (``{"window_size": 1000}``) or a flat dict mixing keys of several sections, as
      code that passes one dict to every component does (``{"storage": ..., "sanitize_pii": True,
      "window_size": 500}``). A key that several sections have (``enabled``, ``min_samples``) goes to each;
    * a dict of sections (``{"logging": {...}, "privacy": {...}}``), the whole ``continual_learning``
      mapping with or without that top key (other top-level keys of a loaded file are ignored), or flat
      keys beside sections (a section's own dict wins over a flat key);
    * a :class:`ContinualLearningConfig` or any section's model.

    Only key names are checked here; each component validates the values of its own sections.

    Args:
        config: the configuration in any of those shapes, or None.
        component: the class taking it, for error messages.
        section: the component's own section, which names an unknown flat key (``drift_detection.windwo``).

    Returns:
        ``{section name: {key: value}}`` with only the keys that were given.

    Raises:
        ConfigError: a key belongs to no section (the error suggests the nearest known key), a section is
            not a mapping, or ``config`` is not a dict or config model.
    """
    parts: dict[str, dict[str, Any]] = {}
    if config is None:
        return parts
    if isinstance(config, ContinualLearningConfig):
        return {
            name: getattr(config, name).model_dump(exclude_unset=True)
            for name in SECTIONS
            if name in config.model_fields_set
        }
    if isinstance(config, BaseModel):
        section = _SECTION_OF_MODEL.get(type(config))
        if section is None:
            raise ConfigError(
                f"{component} cannot take a {type(config).__name__} as config; pass a dict or a "
                "ContinualLearningConfig section model",
                key=None,
            )
        return {section: config.model_dump(exclude_unset=True)}
    if not isinstance(config, Mapping):
        raise ConfigError(
            f"{component} config must be a dict (one section, flat keys of several sections, or the whole "
            f"continual_learning mapping) or a config model, got {type(config).__name__}",
            key=None,
        )
    data = config
    if isinstance(data.get("continual_learning"), Mapping):  # a whole loaded YAML file
        data = data["continual_learning"]
    flat: dict[str, dict[str, Any]] = {}
    sections: dict[str, dict[str, Any]] = {}
    for key, value in data.items():
        if key in SECTIONS:
            if value is None:  # an empty YAML section
                continue
            if not isinstance(value, Mapping):
                raise ConfigError(
                    f"{component} config: section {key!r} must be a mapping of its keys, got "
                    f"{type(value).__name__}",
                    key=key,
                )
            for inner in value:
                if inner not in SECTIONS[key].model_fields:
                    raise ConfigError(
                        f"unknown key {key}.{inner}{did_you_mean(inner, SECTIONS[key].model_fields)}; the "
                        f"keys allowed in {key} are: {', '.join(sorted(SECTIONS[key].model_fields))}",
                        key=f"{key}.{inner}",
                    )
            sections[key] = dict(value)
        elif key in _KEY_SECTIONS:
            for section in _KEY_SECTIONS[key]:
                flat.setdefault(section, {})[key] = value
        else:
            name = f"{section}.{key}" if section else str(key)
            raise ConfigError(
                f"unknown key {name!r} for {component}{did_you_mean(key, [*_KEY_SECTIONS, *SECTIONS])}; "
                "a key must belong to a section of the continual_learning config (logging, validation, "
                "failure_analysis, active_learning, retraining, drift_detection, ab_testing, privacy, "
                "maintenance, feedback) or name one",
                key=name,
            )
    for name in SECTIONS:
        if name in flat or name in sections:
            parts[name] = {**flat.get(name, {}), **sections.get(name, {})}
    return parts


def resolve_section(
    model: type[S],
    config: Any = None,
    *,
    component: str,
    parts: Mapping[str, Any] | None = None,
    **overrides: Any,
) -> S:
    """One section's validated settings from any config shape a classic class accepts.

    Keys of other sections are ignored here (logged at DEBUG, since the same dict is often passed to every
    component); keys of no section are an error naming the nearest known key (see :func:`split_config`).

    Args:
        model: the section's model class.
        config: see :func:`split_config`; an instance of ``model`` is used as is.
        component: the class taking it, for error messages.
        parts: ``split_config(config)`` when the caller has it already.
        **overrides: keys of this section that replace those in ``config``.

    Returns:
        A validated instance of ``model``.

    Raises:
        ConfigError: an unknown key, or one of this section's values is ill-typed or out of range.
    """
    section = _SECTION_OF_MODEL[model]
    if isinstance(config, model):
        return parse_section(model, config, prefix=section, **overrides)
    if parts is None:
        parts = split_config(config, component=component, section=section)
    note_ignored_keys(parts, component=component, used=model.model_fields)
    return parse_section(model, parts.get(section), prefix=section, **overrides)


def note_ignored_keys(parts: Mapping[str, Mapping[str, Any]], *, component: str, used: Any) -> None:
    """Log at DEBUG the keys of ``parts`` (from :func:`split_config`) that ``component`` does not use."""
    others = sorted({key for keys in parts.values() for key in keys if key not in used})
    if others:
        log.debug("%s ignores keys of other config sections: %s", component, ", ".join(others))


def load_config(path: str | os.PathLike[str] | None = None, **overrides: Any) -> ContinualLearningConfig:
    """Read the ``continual_learning:`` section of a YAML file.

    Args:
        path: a YAML file holding a top-level ``continual_learning:`` key (other top-level keys are ignored,
            so a project's shared ``config.yaml`` can be passed as is). None gives every default.
        **overrides: whole sections to replace, as dicts (``logging={"buffer_size": 10}``).

    Returns:
        The validated configuration.

    Raises:
        ConfigError: the file is missing or not YAML, or a key is unknown or ill-typed.
    """
    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        try:
            loaded = yaml.safe_load(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(
                f"config file {str(p)!r} does not exist; pass the path of your YAML file"
            ) from None
        except UnicodeDecodeError:
            raise ConfigError(f"config file {str(p)!r} is not UTF-8 text; save it as UTF-8 YAML") from None
        except OSError as exc:
            raise ConfigError(
                f"config file {str(p)!r} cannot be read ({exc.strerror or type(exc).__name__}); "
                "pass the path of a readable YAML file"
            ) from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {str(p)!r} is not valid YAML: {exc}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict) or "continual_learning" not in loaded:
            raise ConfigError(
                f"config file {str(p)!r} has no top-level 'continual_learning:' key; "
                "put the settings under that key",
                key="continual_learning",
            )
        data = loaded["continual_learning"] or {}
        if not isinstance(data, dict):
            raise ConfigError("'continual_learning' must be a mapping of sections", key="continual_learning")
    for name, section in overrides.items():
        base = data.get(name) or {}
        both = isinstance(section, dict) and isinstance(base, dict)
        data[name] = {**base, **section} if both else section
    return parse_section(ContinualLearningConfig, data, prefix="continual_learning")
