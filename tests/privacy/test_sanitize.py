"""The sanitizer: its memory of clean text is a cache that never holds PII and stays bounded."""

from __future__ import annotations

from cl_plugin.privacy import Sanitizer, default_redactor, sanitize


class CountingRedactor:
    def __init__(self) -> None:
        self.seen: list[str] = []
        self.redact_one = default_redactor().redact

    def __call__(self, text: str) -> str:
        self.seen.append(text)
        return self.redact_one(text)


def test_clean_text_is_redacted_once_and_text_with_pii_every_time() -> None:
    redact = CountingRedactor()
    s = Sanitizer(redact=redact)
    passage = "Refunds are issued to the original card within five working days."
    with_pii = "write to ana.lima@example.com for a refund"
    for _ in range(3):
        assert s.text(passage) == passage
        assert s.text(with_pii) == "write to [EMAIL] for a refund"
    assert redact.seen.count(passage) == 1
    assert redact.seen.count(with_pii) == 3  # never remembered: the raw text stays nowhere
    assert with_pii not in s._clean


def test_the_memory_of_clean_text_is_bounded() -> None:
    s = Sanitizer(redact=default_redactor().redact)
    for i in range(sanitize._CLEAN_SIZE + 10):
        s.text(f"passage number {i} about refunds")
    assert len(s._clean) <= sanitize._CLEAN_SIZE
    s.text("x" * (sanitize._CLEAN_MAX_CHARS + 1))
    assert "x" * (sanitize._CLEAN_MAX_CHARS + 1) not in s._clean
