"""PII detection and redaction, id hashing, and the DataQualityValidator (cl_plugin.privacy)."""

from __future__ import annotations

import copy
import dataclasses
import math
import re

import pytest

from cl_plugin.config import ContinualLearningConfig, PrivacyConfig, ValidationConfig
from cl_plugin.errors import ConfigError, PrivacyConfigError
from cl_plugin.privacy import (
    PII_TYPES,
    REDACTED,
    DataQualityValidator,
    PIIMatch,
    PIIRedactor,
    default_redactor,
    hash_identifier,
)
from cl_plugin.records import ProductionInteraction

JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ"
    ".SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
)

PII_EXAMPLES = [
    # (type, value, sentence with {} where the value goes)
    ("EMAIL", "jürgen.müller@example.de", "Schreiben Sie an {} bis Freitag."),
    ("EMAIL", "jane.doe+newsletter@mail.example.co.uk", "Contact: <{}>"),
    ("EMAIL", "JOHN_SMITH@Example.ORG", "Reach me at {}."),
    ("EMAIL", "用户@例子.广告", "邮箱 {} 谢谢"),
    ("PHONE", "(555) 123-4567", "Call me at {} tomorrow."),
    ("PHONE", "555-123-4567", "My number is {}."),
    ("PHONE", "555.123.4567", "phone: {}"),
    ("PHONE", "+1 555 123 4567", "Text {} when you land."),
    ("PHONE", "1-800-555-0199", "Hotline {} (toll free)"),
    ("PHONE", "+44 20 7946 0958", "London office: {}"),
    ("PHONE", "+49 30 12345678", "Berlin: {}, ask for Jan"),
    ("PHONE", "+33 1 23 45 67 89", "Paris ({})"),
    ("PHONE", "020 7946 0958", "Ring {} after 9."),
    ("PHONE", "0049 30 12345678", "Aus dem Ausland: {}"),
    ("PHONE", "4155552671", "call me at {}"),
    ("SSN", "123-45-6789", "SSN: {}"),
    ("SSN", "078 05 1120", "My social security number is {}."),
    ("SSN", "219099999", "ssn {} on file"),
    ("CREDIT_CARD", "4111 1111 1111 1111", "Card number {}, exp 09/27"),
    ("CREDIT_CARD", "4111-1111-1111-1111", "charge {} please"),
    ("CREDIT_CARD", "5500000000000004", "mastercard={}"),
    ("CREDIT_CARD", "3782 822463 10005", "Amex {} declined."),
    ("CREDIT_CARD", "6011 1111 1111 1117", "Discover: {}"),
    ("IP_ADDRESS", "192.168.1.1", "request from {} blocked"),
    ("IP_ADDRESS", "8.8.8.8", "ping {}."),
    ("IP_ADDRESS", "2001:0db8:85a3:0000:0000:8a2e:0370:7334", "host {} answered"),
    ("IP_ADDRESS", "2001:db8::1", "listen on [{}]:443"),
    ("IP_ADDRESS", "::ffff:192.0.2.128", "mapped address {} seen"),
    ("IP_ADDRESS", "fe80::1ff:fe23:4567:890a", "link-local {}"),
    ("API_KEY", "sk-" + "a1B2c3D4e5" * 5, "my key is {} don't share it"),
    ("API_KEY", "sk-proj-" + "Ab3_x-9Kq2" * 8, "OPENAI_API_KEY={}"),
    ("API_KEY", "AKIAIOSFODNN7EXAMPLE", "aws id {} leaked"),
    ("API_KEY", "ASIAJEXAMPLEXEG2JICE", "session key {}"),
    ("API_KEY", "ghp_" + "A1b2C3d4E5f6" * 3, "token {} in the logs"),
    ("API_KEY", "gho_" + "Z9y8X7w6V5u4" * 3, "oauth {}"),
    ("API_KEY", "github_pat_11ABCDEFG0123456789abc_" + "x1" * 29, "pat {}"),
    ("API_KEY", "xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx", "slack {}"),
    ("API_KEY", JWT, "id_token {}"),
    ("API_KEY", "abcDEF0123456789ghiJKL", "Authorization: Bearer {}"),
    ("API_KEY", "s3cr3t-Value_42", "api_key={}"),
    ("API_KEY", "9f8e7d6c5b4a", "apikey: {}"),
    ("API_KEY", "tok_8Hq2Lz", "GET /items?token={}&page=2"),
    ("API_KEY", "hunter2", "password={}"),
    ("API_KEY", "correct horse battery staple", 'secret: "{}"'),
]


@pytest.mark.parametrize(("kind", "value", "sentence"), PII_EXAMPLES, ids=[v for _, v, _ in PII_EXAMPLES])
def test_each_pii_format_is_replaced_by_its_typed_placeholder(kind: str, value: str, sentence: str) -> None:
    text = sentence.format(value)
    assert default_redactor().redact(text) == sentence.format(f"[{kind}]")


def test_find_reports_type_and_exact_span_without_keeping_the_text() -> None:
    text = "Mail jane@example.com or call (555) 123-4567."
    matches = default_redactor().find(text)
    assert [(m.type, text[m.start : m.end]) for m in matches] == [
        ("EMAIL", "jane@example.com"),
        ("PHONE", "(555) 123-4567"),
    ]
    assert {f.name for f in dataclasses.fields(PIIMatch)} == {"type", "start", "end"}
    with pytest.raises(dataclasses.FrozenInstanceError):
        matches[0].start = 0  # type: ignore[misc]


LOOKALIKES = [
    "Created at 1732636800, updated at 1732636800123.",
    "Upgrade from 1.2.3 to v2.10.0 (Python 3.11.7).",
    "Order #A-123456 and ORD-2024-001234 shipped.",
    "ISBN 978-3-16-148410-0 and ISBN 0-306-40615-2, also 9783161484100.",
    "Due 2024-11-26, 11/26/2024 or 26.11.2024 at 10:30:45.",
    "Run 550e8400-e29b-41d4-a716-446655440000 at 2024-11-26T10:30:00Z.",
    "Fixed in a1b2c3d (full 3f786850e387550fdab836ed7e6dc881de23001b).",
    "Serve on localhost:8080, the database on :5432.",
    "Total $1,234.56, or € 99.99, or 1.234,56 €.",
    "We had 12,345 users, 1920x1080 screens, 12.5 kg and 99.9% uptime.",
    "Reference 1234567890123456 and 4111 1111 1111 1112 fail the Luhn check.",
    "The task-force will sk-ate past the risk-free desk-bound e-mail.",
    "Scores were 3-1, pages 10-20, and 2+2=4.",
    "Use std::vector<int> and x[::2] or a[5::-1].",
    "icon@2x.png, @alice, user@localhost and @types/node.",
    "max_tokens=1024, token_count: 512, use_api_key: false, password_reset: true.",
    "Bearer bonds and the token: a unit of text.",
    "Invalid SSNs 000-12-3456, 666-12-3456, 900-12-3456; octets 256.1.1.1.",
]


@pytest.mark.parametrize("text", LOOKALIKES)
def test_benign_lookalikes_are_left_alone(text: str) -> None:
    assert default_redactor().redact(text) == text


def test_overlapping_candidates_become_one_placeholder() -> None:
    redactor = default_redactor()
    assert redactor.redact(f"Authorization: Bearer {JWT}") == "Authorization: Bearer [API_KEY]"
    assert redactor.redact("call +1 555 123 4567 now") == "call [PHONE] now"
    assert redactor.redact("src ::ffff:192.0.2.128 ok") == "src [IP_ADDRESS] ok"


def test_partly_overlapping_candidates_merge_so_nothing_leaks() -> None:
    redactor = PIIRedactor(extra_patterns={"ticket": r"TCK-\d+ [a-z]+"})
    assert redactor.redact("see TCK-12 jane@example.com now") == "see [EMAIL] now"
    assert [(m.type, m.start, m.end) for m in redactor.find("TCK-12 jane@example.com")] == [("EMAIL", 0, 23)]


def test_redacting_twice_changes_nothing_more() -> None:
    text = "jane@example.com, 555-123-4567, 123-45-6789, 4111111111111111, 10.0.0.1, token=abc123XYZ, password: p4ss"
    once = default_redactor().redact(text)
    assert default_redactor().redact(once) == once
    assert not default_redactor().contains_pii(once)


def test_url_credentials_redact_the_password_not_the_host() -> None:
    text = "DATABASE_URL=postgres://app:s3cr3t!@db.example.com:5432/prod"
    assert default_redactor().redact(text) == "DATABASE_URL=postgres://app:[API_KEY]@db.example.com:5432/prod"


def test_types_restricts_detection() -> None:
    redactor = PIIRedactor(types=["email"])
    assert redactor.redact("a@example.com 555-123-4567") == "[EMAIL] 555-123-4567"
    assert PIIRedactor(types="PHONE").redact("a@example.com 555-123-4567") == "a@example.com [PHONE]"


def test_unknown_type_raises_config_error_listing_allowed_types() -> None:
    with pytest.raises(ConfigError) as info:
        PIIRedactor(types=["EMAIL", "PASSPORT"])
    message = str(info.value)
    assert "PASSPORT" in message
    assert all(kind in message for kind in PII_TYPES)


def test_extra_patterns_add_custom_placeholders() -> None:
    redactor = PIIRedactor(extra_patterns={"employee_id": r"EMP-\d{6}"})
    assert redactor.redact("EMP-004211 mailed a@example.com") == "[EMPLOYEE_ID] mailed [EMAIL]"
    assert [m.type for m in redactor.find("EMP-004211")] == ["EMPLOYEE_ID"]


def test_invalid_extra_pattern_raises_config_error_naming_it() -> None:
    with pytest.raises(ConfigError, match=re.escape("'EMP-([0-9]'")):
        PIIRedactor(extra_patterns={"employee_id": "EMP-([0-9]"})
    with pytest.raises(ConfigError, match="rule name"):
        PIIRedactor(extra_patterns={"employee id": "x"})


def test_contains_pii() -> None:
    assert default_redactor().contains_pii("ssn 123-45-6789")
    assert not default_redactor().contains_pii("nothing to see in 2024")


def test_redact_value_walks_containers_and_copies() -> None:
    value = {
        "jane@example.com": ["call 555-123-4567", ("10.0.0.1", 42)],
        "nested": {"card": "4111 1111 1111 1111", "n": 3.5, "ok": True, "none": None},
        "tags": {"x@example.org"},
    }
    before = copy.deepcopy(value)
    out = default_redactor().redact_value(value)
    assert out == {
        "[EMAIL]": ["call [PHONE]", ("[IP_ADDRESS]", 42)],
        "nested": {"card": "[CREDIT_CARD]", "n": 3.5, "ok": True, "none": None},
        "tags": {"[EMAIL]"},
    }
    assert value == before


def test_safe_redact_fails_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    redactor = PIIRedactor()

    def broken(text: str) -> list[PIIMatch]:
        raise RuntimeError("detector crashed")

    monkeypatch.setattr(redactor, "find", broken)
    assert redactor.safe_redact("jane@example.com") == REDACTED
    assert redactor.redact_value({"q": "jane@example.com", 7: [1.5]}) == {REDACTED: REDACTED, 7: [1.5]}
    assert PIIRedactor().safe_redact(b"jane@example.com") == REDACTED  # type: ignore[arg-type]


def test_redact_value_replaces_too_deep_nesting() -> None:
    deep: list = ["jane@example.com"]
    for _ in range(100):
        deep = [deep]
    out = default_redactor().redact_value(deep)
    while isinstance(out, list):
        out = out[0]
    assert out == REDACTED


def test_lone_surrogates_and_non_ascii_text_are_handled() -> None:
    text = "\ud800 broken but a@example.com and 555-123-4567 still found — ünïcödé"
    assert default_redactor().redact(text) == "\ud800 broken but [EMAIL] and [PHONE] still found — ünïcödé"


def test_default_redactor_is_cached() -> None:
    assert default_redactor() is default_redactor()


# ------------------------------------------------------------------------------------------------------ hashing
def test_hash_identifier_is_keyed_deterministic_and_marked() -> None:
    h = hash_identifier("user-42", "k1")
    assert re.fullmatch(r"h:[0-9a-f]{32}", h)
    assert h == hash_identifier("user-42", b"k1")
    assert h != hash_identifier("user-42", "k2")
    assert h != hash_identifier("user-43", "k1")


def test_hash_identifier_leaves_hashed_values_alone() -> None:
    h = hash_identifier("session-1", "k")
    assert hash_identifier(h, "k") == h
    assert hash_identifier(h, "other key") == h


def test_hash_identifier_needs_a_key() -> None:
    with pytest.raises(PrivacyConfigError):
        hash_identifier("user-42", "")


# ------------------------------------------------------------------------------------------------------ validator
def spec_interaction(**changes: object) -> ProductionInteraction:
    """The interaction of the original design's logger example."""
    interaction = ProductionInteraction(
        interaction_id="unique_id",
        timestamp=1732636800.0,
        session_id="session_123",
        user_query="What is MCTS?",
        agent_selected="HRM",
        agent_confidence=0.85,
        response="MCTS is...",
        user_feedback_score=4.5,
        latency_ms=1200.0,
    )
    return dataclasses.replace(interaction, **changes)


SPEC_CONFIG = {  # the continual_learning section of the original design
    "logging": {
        "enabled": True,
        "storage": "./cache/production_logs",
        "use_sqlite": True,
        "sanitize_pii": True,
    },
    "failure_analysis": {"enabled": True, "min_cluster_size": 5, "similarity_threshold": 0.7},
    "active_learning": {"enabled": True, "budget_per_cycle": 50, "selection_strategy": "hybrid"},
    "retraining": {"schedule": "weekly", "min_new_samples": 100, "validation_split": 0.2},
    "drift_detection": {"enabled": True, "window_size": 1000, "threshold": 0.1},
    "ab_testing": {"enabled": False, "traffic_split": 0.1, "min_samples": 1000, "confidence_level": 0.95},
    "privacy": {
        "anonymize_user_ids": True,
        "hash_session_ids": True,
        "redact_sensitive_fields": True,
        "retention_days": 90,
    },
}


@pytest.fixture
def no_env_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CL_PLUGIN_HASH_KEY", raising=False)


def test_spec_usage_runs_as_written(no_env_key: None) -> None:
    config = {"max_query_length": 10_000, "check_pii": True}
    interaction = spec_interaction(user_query="What is MCTS? Mail me at jane@example.com")

    validator = DataQualityValidator(config)
    is_valid, issues = validator.validate_interaction(interaction)
    sanitized = validator.sanitize_interaction(interaction)

    assert (is_valid, issues) == (False, ["user_query: contains PII (EMAIL)"])
    assert isinstance(sanitized, ProductionInteraction)
    assert sanitized.user_query == "What is MCTS? Mail me at [EMAIL]"
    assert sanitized.session_id == "session_123"  # no key and no explicit hashing: ids kept
    assert validator.privacy.hash_session_ids is False


def test_spec_config_hashes_ids_with_a_key_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CL_PLUGIN_HASH_KEY", "test-secret")
    validator = DataQualityValidator(SPEC_CONFIG)
    sanitized = validator.sanitize_interaction(spec_interaction(user_id="alice"))
    assert sanitized.session_id == hash_identifier("session_123", "test-secret")
    assert sanitized.user_id == hash_identifier("alice", "test-secret")
    assert validator.validate_interaction(spec_interaction()) == (True, [])


def test_explicit_hashing_without_a_key_names_both_fixes(no_env_key: None) -> None:
    with pytest.raises(PrivacyConfigError) as info:
        DataQualityValidator(SPEC_CONFIG)
    message = str(info.value)
    assert "privacy.hash_key" in message
    assert "CL_PLUGIN_HASH_KEY" in message
    with pytest.raises(PrivacyConfigError):
        DataQualityValidator(hash_session_ids=True)


def test_hash_key_in_config_enables_default_hashing(no_env_key: None) -> None:
    validator = DataQualityValidator({"hash_key": "k"})
    sanitized = validator.sanitize_interaction(spec_interaction(user_id="bob"))
    assert sanitized.session_id == hash_identifier("session_123", "k")
    assert sanitized.user_id == hash_identifier("bob", "k")


def test_valid_interaction_has_no_issues(no_env_key: None) -> None:
    assert DataQualityValidator().validate_interaction(spec_interaction()) == (True, [])


def test_empty_query_issue_names_field_and_limit(no_env_key: None) -> None:
    ok, issues = DataQualityValidator().validate_interaction(spec_interaction(user_query=""))
    assert not ok
    assert issues == ["user_query: shorter than min_query_length=1 (got 0 characters)"]


def test_length_limits_come_from_config(no_env_key: None) -> None:
    validator = DataQualityValidator(max_query_length=5, max_response_length=3)
    _, issues = validator.validate_interaction(spec_interaction())
    assert issues == [
        "user_query: longer than max_query_length=5 (got 13 characters)",
        "response: longer than max_response_length=3 (got 10 characters)",
    ]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("   \n\t ", "user_query: whitespace only"),
        ("\ud800abc", "user_query: contains lone surrogate code points (not valid Unicode text)"),
        ("\x00\x01\x02\x03\x04ab", "user_query: mostly non-printable or replacement characters"),
        ("\ufffd\ufffd\ufffd\ufffdok", "user_query: mostly non-printable or replacement characters"),
        ("aaaaaaaaaa", "user_query: one character repeated 10 times"),
    ],
)
def test_incoherent_text_is_reported(no_env_key: None, query: str, expected: str) -> None:
    ok, issues = DataQualityValidator().validate_interaction(spec_interaction(user_query=query))
    assert not ok
    assert issues == [expected]


def test_multiline_and_accented_text_is_coherent(no_env_key: None) -> None:
    query = "Wie funktioniert MCTS?\n\tBitte kurz — und auf Deutsch. ¿Y en español?"
    assert DataQualityValidator().validate_interaction(spec_interaction(user_query=query)) == (True, [])


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"latency_ms": math.nan}, "latency_ms: not a finite number (got nan)"),
        ({"cost": math.inf}, "cost: not a finite number (got inf)"),
        ({"latency_ms": -1.0}, "latency_ms: negative (got -1.0)"),
        ({"tokens_used": -3}, "tokens_used: negative (got -3)"),
        ({"tokens_used": 2.5}, "tokens_used: expected an integer, got float"),
        ({"agent_confidence": 1.5}, "agent_confidence: outside [0, 1] (got 1.5)"),
        ({"retrieval_quality": -0.1}, "retrieval_quality: outside [0, 1] (got -0.1)"),
        ({"timestamp": math.nan}, "timestamp: not a finite number (got nan)"),
        (
            {"user_feedback_score": 7.0},
            "user_feedback_score: outside [min_feedback_score=1.0, max_feedback_score=5.0] (got 7.0)",
        ),
        ({"user_feedback_score": math.nan}, "user_feedback_score: not a finite number (got nan)"),
        ({"thumbs_up_down": "sideways"}, "thumbs_up_down: must be 'up' or 'down' (got 'sideways')"),
        ({"error_occurred": "yes"}, "error_occurred: expected true, false or None, got str"),
        ({"metadata": ["not", "a", "dict"]}, "metadata: expected a dict, got list"),
        ({"corrections": [1, 2]}, "corrections: expected a list of strings"),
    ],
)
def test_bad_numbers_and_fields_are_reported(no_env_key: None, changes: dict, expected: str) -> None:
    ok, issues = DataQualityValidator().validate_interaction(spec_interaction(**changes))
    assert not ok
    assert issues == [expected]


@pytest.mark.parametrize(
    ("scale", "thumbs", "score", "consistent"),
    [
        ((1.0, 5.0), "up", 2.0, False),
        ((1.0, 5.0), "up", 3.0, True),
        ((1.0, 5.0), "down", 4.0, False),
        ((1.0, 5.0), "down", 3.0, True),
        ((0.0, 10.0), "up", 2.5, False),
        ((0.0, 10.0), "up", 3.0, True),
        ((0.0, 10.0), "down", 7.5, False),
    ],
)
def test_feedback_consistency_scales_with_the_configured_range(
    no_env_key: None, scale: tuple[float, float], thumbs: str, score: float, consistent: bool
) -> None:
    validator = DataQualityValidator(min_feedback_score=scale[0], max_feedback_score=scale[1])
    ok, issues = validator.validate_interaction(
        spec_interaction(thumbs_up_down=thumbs, user_feedback_score=score)
    )
    assert ok is consistent
    if not consistent:
        assert len(issues) == 1
        assert issues[0].startswith(f"thumbs_up_down: '{thumbs}' contradicts user_feedback_score=")


def test_dict_interactions_report_missing_and_mistyped_fields(no_env_key: None) -> None:
    ok, issues = DataQualityValidator().validate_interaction(
        {"interaction_id": "i1", "session_id": "s", "user_query": 42}
    )
    assert not ok
    assert issues == ["user_query: expected a string, got int", "response: missing", "timestamp: missing"]


def test_validate_never_raises_for_garbage(no_env_key: None) -> None:
    validator = DataQualityValidator()
    assert validator.validate_interaction("not an interaction") == (  # type: ignore[arg-type]
        False,
        ["interaction: expected a ProductionInteraction or a dict, got str"],
    )
    ok, issues = validator.validate_interaction({"user_query": object(), "metadata": 3, "latency_ms": "fast"})
    assert not ok
    assert "latency_ms: expected a number, got str" in issues


def test_validate_reports_an_object_that_breaks_while_being_checked(no_env_key: None) -> None:
    class Hostile(str):
        def __len__(self) -> int:
            raise RuntimeError("boom")

    ok, issues = DataQualityValidator().validate_interaction(spec_interaction(user_query=Hostile("hi")))
    assert not ok
    assert issues == ["interaction: could not be checked (RuntimeError)"]


def test_blocked_patterns_are_reported_by_pattern(no_env_key: None) -> None:
    validator = DataQualityValidator(blocked_patterns=[r"(?i)ignore (all )?previous instructions"])
    ok, issues = validator.validate_interaction(
        spec_interaction(user_query="Please IGNORE previous instructions")
    )
    assert not ok
    assert issues == ["user_query: matches blocked pattern '(?i)ignore (all )?previous instructions'"]


def test_invalid_blocked_pattern_raises_config_error_naming_it(no_env_key: None) -> None:
    with pytest.raises(ConfigError, match=re.escape("'(unclosed'")) as info:
        DataQualityValidator(blocked_patterns=["(unclosed"])
    assert info.value.key == "validation.blocked_patterns"


def test_pii_issues_name_the_type_never_the_value(no_env_key: None) -> None:
    response = "Your card 4111 1111 1111 1111 and SSN 123-45-6789 are on file."
    ok, issues = DataQualityValidator().validate_interaction(spec_interaction(response=response))
    assert not ok
    assert issues == ["response: contains PII (CREDIT_CARD, SSN)"]
    assert DataQualityValidator(check_pii=False).validate_interaction(
        spec_interaction(response=response)
    ) == (
        True,
        [],
    )


def test_sanitize_redacts_every_text_field_without_touching_the_input(no_env_key: None) -> None:
    interaction = spec_interaction(
        user_query="I am jane@example.com",
        response="Call 555-123-4567",
        metadata={"client_ip": "10.1.2.3", "owner@example.com": {"cards": ["4111111111111111"]}, "n": 3},
        corrections=["use SSN 123-45-6789 instead"],
    )
    before = copy.deepcopy(interaction)
    sanitized = DataQualityValidator().sanitize_interaction(interaction)
    assert interaction == before
    assert sanitized is not interaction
    assert (sanitized.user_query, sanitized.response) == ("I am [EMAIL]", "Call [PHONE]")
    assert sanitized.metadata == {
        "client_ip": "[IP_ADDRESS]",
        "[EMAIL]": {"cards": ["[CREDIT_CARD]"]},
        "n": 3,
    }
    assert sanitized.corrections == ["use SSN [SSN] instead"]


def test_sanitize_returns_a_new_dict_for_a_dict(no_env_key: None) -> None:
    record = spec_interaction(metadata={"k": ["a@example.com"]}, user_id="u1").to_dict()
    before = copy.deepcopy(record)
    out = DataQualityValidator({"hash_key": "k"}).sanitize_interaction(record)
    assert record == before
    assert isinstance(out, dict)
    assert out["metadata"] == {"k": ["[EMAIL]"]}
    assert (out["session_id"], out["user_id"]) == (
        hash_identifier("session_123", "k"),
        hash_identifier("u1", "k"),
    )
    assert out["latency_ms"] == 1200.0


def test_sanitize_copies_nested_data_even_when_not_redacting(no_env_key: None) -> None:
    interaction = spec_interaction(user_query="I am jane@example.com", metadata={"tags": ["x"]})
    out = DataQualityValidator(redact_sensitive_fields=False).sanitize_interaction(interaction)
    assert out.user_query == "I am jane@example.com"
    out.metadata["tags"].append("y")
    assert interaction.metadata == {"tags": ["x"]}


def test_sanitize_keeps_ids_when_hashing_is_off(no_env_key: None) -> None:
    validator = DataQualityValidator(anonymize_user_ids=False, hash_session_ids=False, hash_key="k")
    out = validator.sanitize_interaction(spec_interaction(user_id="u1"))
    assert (out.session_id, out.user_id) == ("session_123", "u1")


# ------------------------------------------------------------------------------------------------------ config
def test_unknown_flat_key_names_the_key_and_suggests_the_nearest(no_env_key: None) -> None:
    with pytest.raises(ConfigError) as info:
        DataQualityValidator({"max_query_lenght": 5})
    assert info.value.key == "max_query_lenght"
    message = str(info.value)
    assert "'max_query_lenght'" in message
    assert "did you mean 'max_query_length'?" in message


def test_ill_typed_value_names_the_dotted_key(no_env_key: None) -> None:
    with pytest.raises(ConfigError) as info:
        DataQualityValidator(max_query_length="long")
    assert info.value.key == "validation.max_query_length"


def test_min_above_max_is_rejected(no_env_key: None) -> None:
    with pytest.raises(ConfigError, match="min_query_length"):
        DataQualityValidator(min_query_length=10, max_query_length=5)
    with pytest.raises(ConfigError, match="min_feedback_score"):
        DataQualityValidator(min_feedback_score=5, max_feedback_score=5)


def test_config_shapes_all_reach_the_same_models(no_env_key: None) -> None:
    flat = DataQualityValidator({"max_query_length": 50, "redact_sensitive_fields": False})
    sections = DataQualityValidator(
        {"validation": {"max_query_length": 50}, "privacy": {"redact_sensitive_fields": False}}
    )
    whole_file = DataQualityValidator(
        {
            "continual_learning": {
                "validation": {"max_query_length": 50},
                "privacy": {"redact_sensitive_fields": False},
            }
        }
    )
    models = DataQualityValidator(
        ContinualLearningConfig(
            validation=ValidationConfig(max_query_length=50),
            privacy=PrivacyConfig(redact_sensitive_fields=False),
        )
    )
    for v in (flat, sections, whole_file, models):
        assert v.validation.max_query_length == 50
        assert v.privacy.redact_sensitive_fields is False
    assert DataQualityValidator(ValidationConfig(max_query_length=50)).validation.max_query_length == 50
    assert DataQualityValidator(PrivacyConfig(retention_days=7)).privacy.retention_days == 7


def test_keyword_arguments_override_the_config(no_env_key: None) -> None:
    validator = DataQualityValidator({"max_query_length": 5}, max_query_length=7, retention_days=30)
    assert validator.validation.max_query_length == 7
    assert validator.privacy.retention_days == 30
    with pytest.raises(ConfigError, match="'nope'"):
        DataQualityValidator(nope=1)


def test_validator_uses_a_given_redactor(no_env_key: None) -> None:
    validator = DataQualityValidator(redactor=PIIRedactor(extra_patterns={"ticket": r"TCK-\d+"}))
    out = validator.sanitize_interaction(spec_interaction(user_query="see TCK-991"))
    assert out.user_query == "see [TICKET]"


@pytest.mark.parametrize(
    "text", ["hello bob@example.com0", "bob@example.co.uk1 next", "id bob@example.com_2"]
)
def test_an_address_running_into_digits_or_underscores_is_still_redacted(text: str) -> None:
    assert "bob@example" not in default_redactor().redact(text)
