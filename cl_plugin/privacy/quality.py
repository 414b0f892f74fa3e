"""The ``DataQualityValidator`` of the original design: checks a record's fields and redacts its text."""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import re
from collections.abc import Mapping
from typing import Any

from cl_plugin.config import (
    SECTIONS,
    ContinualLearningConfig,
    LoggingConfig,
    PrivacyConfig,
    ValidationConfig,
    did_you_mean,
    note_ignored_keys,
    parse_section,
    split_config,
)
from cl_plugin.errors import ConfigError
from cl_plugin.privacy.detectors import PIIRedactor, default_redactor
from cl_plugin.privacy.ids import hash_identifier
from cl_plugin.privacy.sanitize import safe_identifier
from cl_plugin.records import ProductionInteraction

__all__ = ["DataQualityValidator"]

log = logging.getLogger("cl_plugin.privacy")

# ---------------------------------------------------------------------------------------------------------
# DataQualityValidator

_VALIDATION_KEYS = frozenset(ValidationConfig.model_fields)
_PRIVACY_KEYS = frozenset(PrivacyConfig.model_fields)
_VALIDATOR = "DataQualityValidator"
_FIELDS = tuple(f.name for f in dataclasses.fields(ProductionInteraction))
_REQUIRED_TEXT = ("interaction_id", "session_id", "user_query", "response")
_OPTIONAL_TEXT = ("agent_selected", "run_id", "graph_name", "user_id")
_FLAG_FIELDS = ("hallucination_detected", "retrieval_failed", "error_occurred")
_REDACTED_FIELDS = (
    "user_query",
    "response",
    "metadata",
    "corrections",
    "routing_decision",
    "retrieved_chunks",
    "response_metadata",
    "user_feedback_text",
    "user_corrections",
    "error_message",
)
_ID_FIELDS = ("session_id", "user_id", "interaction_id", "run_id")


def _split_config(config: Any, overrides: Mapping[str, Any]) -> tuple[ValidationConfig, PrivacyConfig]:
    """(validation, privacy) from any config shape, keeping which keys were set explicitly.

    The logging section's ``sanitize_pii`` governs redaction unless ``privacy.redact_sensitive_fields`` is
    given too, as the original design passes the logger's dict to the validator.
    """
    parts = split_config(config, component=_VALIDATOR)
    for key, value in overrides.items():
        section = next((s for s in ("validation", "privacy") if key in SECTIONS[s].model_fields), None)
        if section is None and key == "sanitize_pii":
            section = "logging"
        if section is None:
            raise ConfigError(
                f"unknown keyword {key!r} for {_VALIDATOR}"
                f"{did_you_mean(key, [*_VALIDATION_KEYS, *_PRIVACY_KEYS])}; the keywords allowed are: "
                f"{', '.join(sorted(_VALIDATION_KEYS | _PRIVACY_KEYS | {'sanitize_pii'}))}",
                key=key,
            )
        parts.setdefault(section, {})[key] = value
    note_ignored_keys(parts, component=_VALIDATOR, used=_VALIDATION_KEYS | _PRIVACY_KEYS | {"sanitize_pii"})
    privacy = dict(parts.get("privacy", {}))
    if "sanitize_pii" in parts.get("logging", {}) and "redact_sensitive_fields" not in privacy:
        sanitize = parse_section(
            LoggingConfig, {"sanitize_pii": parts["logging"]["sanitize_pii"]}, prefix="logging"
        ).sanitize_pii
        privacy["redact_sensitive_fields"] = sanitize
    return (
        parse_section(ValidationConfig, parts.get("validation"), prefix="validation"),
        parse_section(PrivacyConfig, privacy, prefix="privacy"),
    )


class DataQualityValidator:
    """Checks interactions for quality problems and strips PII and raw ids from them (the spec's API).

    Args:
        config: None for defaults, or any shape :func:`~cl_plugin.config.split_config` accepts: a flat dict
            of keys of any sections (the logger's dict, as the original design passes it, included: its
            ``sanitize_pii`` then turns redaction on or off unless ``redact_sensitive_fields`` is given), a
            dict of sections or the whole ``continual_learning`` mapping, or a config model. The
            ``validation`` and ``privacy`` keys are used; keys of other sections are ignored.
        redactor: the PII redactor to use; :func:`default_redactor` by default.
        **kwargs: ``validation`` and ``privacy`` keys (and ``sanitize_pii``) that override ``config``.

    Id hashing needs a key, from ``privacy.hash_key`` or the environment variable named by
    ``privacy.hash_key_env`` (``CL_PLUGIN_HASH_KEY``). ``anonymize_user_ids`` and ``hash_session_ids``
    default to true, but a default only applies when a key exists: with no key and neither flag set
    explicitly, ids are kept as given (so the spec's bare ``DataQualityValidator(config)`` works), and
    ``self.privacy`` shows both flags as false. Setting a flag to true explicitly without a key is an error.
    Whatever the flags, an id that holds PII is hashed while ``redact_sensitive_fields`` is on (see
    :meth:`sanitize_interaction`).

    Raises:
        ConfigError: an unknown or ill-typed key, min above max, or an invalid ``blocked_patterns`` regex.
        PrivacyConfigError: id hashing was asked for explicitly but no key is available.

    Example:
        >>> validator = DataQualityValidator({"max_query_length": 2000})
        >>> validator.validate_interaction({"interaction_id": "1", "timestamp": 0.0, "session_id": "s",
        ...                                 "user_query": "", "response": "ok"})
        (False, ['user_query: shorter than min_query_length=1 (got 0 characters)'])
    """

    def __init__(
        self,
        config: Mapping[str, Any] | ValidationConfig | PrivacyConfig | ContinualLearningConfig | None = None,
        *,
        redactor: PIIRedactor | None = None,
        **kwargs: Any,
    ) -> None:
        validation, privacy = _split_config(config, kwargs)
        for low, high in (
            ("min_query_length", "max_query_length"),
            ("min_response_length", "max_response_length"),
        ):
            if getattr(validation, low) > getattr(validation, high):
                raise ConfigError(
                    f"validation.{low} must not exceed validation.{high}", key=f"validation.{low}"
                )
        if validation.min_feedback_score >= validation.max_feedback_score:
            raise ConfigError(
                "validation.min_feedback_score must be below validation.max_feedback_score",
                key="validation.min_feedback_score",
            )
        blocked = []
        for pattern in validation.blocked_patterns:
            try:
                blocked.append((pattern, re.compile(pattern)))
            except re.error as exc:
                raise ConfigError(
                    f"validation.blocked_patterns: {pattern!r} is not a valid regular expression ({exc})",
                    key="validation.blocked_patterns",
                ) from None
        self._blocked = tuple(blocked)

        key, hash_users, hash_sessions = privacy.id_hashing()
        self._hash_key = key
        self.validation = validation
        self.privacy = privacy.model_copy(
            update={"anonymize_user_ids": hash_users, "hash_session_ids": hash_sessions}
        )
        self.redactor = redactor if redactor is not None else default_redactor()

    def __repr__(self) -> str:
        return f"DataQualityValidator(validation={self.validation!r}, redactor={self.redactor!r})"

    def validate_interaction(
        self, interaction: ProductionInteraction | Mapping[str, Any]
    ) -> tuple[bool, list[str]]:
        """Check one interaction; never raises for bad data.

        Args:
            interaction: a :class:`~cl_plugin.records.ProductionInteraction` or a dict with its fields.

        Returns:
            ``(is_valid, issues)``: one sentence per issue, starting with the field's name
            (``"user_query: shorter than min_query_length=1 (got 0 characters)"``). PII issues name the
            PII type, never the value.
        """
        if isinstance(interaction, ProductionInteraction):
            record: Mapping[str, Any] = {name: getattr(interaction, name) for name in _FIELDS}
        elif isinstance(interaction, Mapping):
            record = interaction
        else:
            return False, [
                f"interaction: expected a ProductionInteraction or a dict, got {type(interaction).__name__}"
            ]
        issues: list[str] = []
        try:
            self._check_types(record, issues)
            self._check_numbers(record, issues)
            self._check_feedback(record, issues)
            for name in ("user_query", "response"):
                if isinstance(record.get(name), str):
                    self._check_text(name, record[name], issues)
        except Exception as exc:
            # A hostile object (say, a str subclass whose __len__ raises) is bad data too.
            issues.append(f"interaction: could not be checked ({type(exc).__name__})")
        return not issues, issues

    def _check_types(self, record: Mapping[str, Any], issues: list[str]) -> None:
        for name in _REQUIRED_TEXT:
            value = record.get(name)
            if value is None:
                issues.append(f"{name}: missing")
            elif not isinstance(value, str):
                issues.append(f"{name}: expected a string, got {type(value).__name__}")
        for name in _OPTIONAL_TEXT:
            if record.get(name) is not None and not isinstance(record[name], str):
                issues.append(f"{name}: expected a string or None, got {type(record[name]).__name__}")
        for name in _FLAG_FIELDS:
            if record.get(name) is not None and not isinstance(record[name], bool):
                issues.append(f"{name}: expected true, false or None, got {type(record[name]).__name__}")
        if record.get("metadata") is not None and not isinstance(record["metadata"], Mapping):
            issues.append(f"metadata: expected a dict, got {type(record['metadata']).__name__}")
        corrections = record.get("corrections")
        if corrections is not None and not (
            isinstance(corrections, list | tuple) and all(isinstance(c, str) for c in corrections)
        ):
            issues.append("corrections: expected a list of strings")

    def _check_numbers(self, record: Mapping[str, Any], issues: list[str]) -> None:
        if "timestamp" not in record or record["timestamp"] is None:
            issues.append("timestamp: missing")
        else:
            _check_number("timestamp", record["timestamp"], issues, low=0.0)
        for name, low, high in (
            ("latency_ms", 0.0, None),
            ("cost", 0.0, None),
            ("agent_confidence", 0.0, 1.0),
            ("retrieval_quality", 0.0, 1.0),
        ):
            if record.get(name) is not None:
                _check_number(name, record[name], issues, low=low, high=high)
        tokens = record.get("tokens_used")
        if tokens is not None:
            if isinstance(tokens, bool) or not isinstance(tokens, int):
                issues.append(f"tokens_used: expected an integer, got {type(tokens).__name__}")
            elif tokens < 0:
                issues.append(f"tokens_used: negative (got {tokens})")

    def _check_feedback(self, record: Mapping[str, Any], issues: list[str]) -> None:
        v = self.validation
        score = record.get("user_feedback_score")
        score_ok = score is not None and _check_number("user_feedback_score", score, issues)
        if score_ok and not v.min_feedback_score <= score <= v.max_feedback_score:
            issues.append(
                f"user_feedback_score: outside [min_feedback_score={v.min_feedback_score}, "
                f"max_feedback_score={v.max_feedback_score}] (got {score})"
            )
            score_ok = False
        thumbs = record.get("thumbs_up_down")
        if thumbs is None or thumbs == "none":  # "none": the reference record's "no thumbs"
            return
        if thumbs not in ("up", "down"):
            issues.append(f"thumbs_up_down: must be 'up' or 'down' (got {thumbs!r:.20})")
            return
        if score_ok:
            # "Up" with 1-2 stars, or "down" with 4-5, on the default 1-5 scale; scaled to the configured range.
            span = v.max_feedback_score - v.min_feedback_score
            low, high = v.min_feedback_score + 0.25 * span, v.min_feedback_score + 0.75 * span
            if (thumbs == "up" and score <= low) or (thumbs == "down" and score >= high):
                cut = f"at or below {low:g}" if thumbs == "up" else f"at or above {high:g}"
                issues.append(
                    f"thumbs_up_down: {thumbs!r} contradicts user_feedback_score={score:g} ({cut} on the "
                    f"{v.min_feedback_score:g}-{v.max_feedback_score:g} scale)"
                )

    def _check_text(self, name: str, text: str, issues: list[str]) -> None:
        kind = "query" if name == "user_query" else "response"
        low, high = (
            getattr(self.validation, f"min_{kind}_length"),
            getattr(self.validation, f"max_{kind}_length"),
        )
        if len(text) < low:
            issues.append(f"{name}: shorter than min_{kind}_length={low} (got {len(text)} characters)")
        elif len(text) > high:
            issues.append(f"{name}: longer than max_{kind}_length={high} (got {len(text)} characters)")
        problem = _incoherence(text)
        if problem:
            issues.append(f"{name}: {problem}")
        for pattern, rx in self._blocked:
            if rx.search(text):
                issues.append(f"{name}: matches blocked pattern {pattern!r}")
        if self.validation.check_pii:
            kinds = sorted({m.type for m in self.redactor.find(text)})
            if kinds:
                issues.append(f"{name}: contains PII ({', '.join(kinds)})")

    def sanitize_interaction(self, interaction: ProductionInteraction | Mapping[str, Any]) -> Any:
        """Return a sanitized copy of the same type; the caller's object is never modified.

        PII in ``user_query``, ``response``, ``metadata`` (keys and values, recursively) and ``corrections`` is
        replaced by typed placeholders unless ``redact_sensitive_fields`` is false; ``session_id`` and
        ``user_id`` are replaced by keyed hashes when ``hash_session_ids`` / ``anonymize_user_ids`` are on.
        Otherwise, while redacting, an id (``session_id``, ``user_id``, ``interaction_id``, ``run_id``) that
        holds PII becomes its keyed hash (:func:`safe_identifier`, with the configured key or
        :func:`id_hash_key`), as the writer would store it; other ids stay as given. A field whose redaction
        fails becomes ``[REDACTED]``.

        Args:
            interaction: a :class:`~cl_plugin.records.ProductionInteraction` or a dict with its fields.

        Returns:
            A new ``ProductionInteraction`` or a new dict.

        Raises:
            TypeError: ``interaction`` is neither.
        """
        if isinstance(interaction, ProductionInteraction):
            present = {name: getattr(interaction, name) for name in (*_REDACTED_FIELDS, *_ID_FIELDS)}
            return dataclasses.replace(interaction, **self._sanitized(present))
        if isinstance(interaction, Mapping):
            copied = {k: v if k in _REDACTED_FIELDS else copy.deepcopy(v) for k, v in interaction.items()}
            return {**copied, **self._sanitized(copied)}
        raise TypeError(
            f"sanitize_interaction needs a ProductionInteraction or a dict, got {type(interaction).__name__}"
        )

    def _sanitized(self, values: Mapping[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        redact = self.privacy.redact_sensitive_fields
        for name in _REDACTED_FIELDS:
            if name in values:
                out[name] = (
                    self.redactor.redact_value(values[name]) if redact else copy.deepcopy(values[name])
                )
        for name, on in (
            ("session_id", self.privacy.hash_session_ids),
            ("user_id", self.privacy.anonymize_user_ids),
            ("interaction_id", False),
            ("run_id", False),
        ):
            value = values.get(name)
            if on and value is not None:
                out[name] = hash_identifier(str(value), self._hash_key or "")
            elif redact and isinstance(value, str):
                out[name] = safe_identifier(value, self._hash_key, redactor=self.redactor)
        return out


def _check_number(
    name: str, value: Any, issues: list[str], *, low: float | None = None, high: float | None = None
) -> bool:
    """Append an issue unless ``value`` is a finite number in [low, high]; return whether it was fine."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        issues.append(f"{name}: expected a number, got {type(value).__name__}")
        return False
    if not math.isfinite(value):
        issues.append(f"{name}: not a finite number (got {value})")
        return False
    if low is not None and high is not None and not low <= value <= high:
        issues.append(f"{name}: outside [{low:g}, {high:g}] (got {value})")
        return False
    if low is not None and value < low:
        issues.append(f"{name}: negative (got {value})")
        return False
    return True


def _incoherence(text: str) -> str | None:
    """Why ``text`` is not coherent text, or None."""
    if text and not text.strip():
        return "whitespace only"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "contains lone surrogate code points (not valid Unicode text)"
    visible = text.replace("\n", "").replace("\t", "").replace("\r", "")
    if not visible.isprintable() or "\ufffd" in visible:
        bad = sum(1 for ch in visible if ch == "\ufffd" or not ch.isprintable())
        if bad * 2 > len(visible):
            return "mostly non-printable or replacement characters"
    stripped = text.strip()
    if len(stripped) >= 4 and stripped.count(stripped[0]) == len(stripped):
        return f"one character repeated {len(stripped)} times"
    return None
