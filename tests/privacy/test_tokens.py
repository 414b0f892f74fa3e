"""Signed feedback tokens: valid for one interaction until they expire; forged, altered, expired and
other-interaction tokens are refused with the reason."""

from __future__ import annotations

import base64
import uuid
from pathlib import Path

import orjson
import pytest

from cl_plugin import CaptureHandler
from cl_plugin.errors import FeedbackTokenError
from cl_plugin.privacy import hash_identifier, id_hash_key
from cl_plugin.privacy.tokens import mint_feedback_token, verify_feedback_token

KEY = "a-secret-key"
NOW = 1_800_000_000.0


def test_a_token_names_its_interaction_until_it_expires() -> None:
    token = mint_feedback_token(KEY, "run-1", ttl=60, now=NOW)
    assert verify_feedback_token(KEY, token, now=NOW + 59) == "run-1"
    assert verify_feedback_token(KEY, token, interaction_id="run-1", now=NOW) == "run-1"
    with pytest.raises(FeedbackTokenError, match="expired") as caught:
        verify_feedback_token(KEY, token, now=NOW + 60)
    assert caught.value.reason == "expired"


def test_a_token_for_another_interaction_is_refused() -> None:
    token = mint_feedback_token(KEY, "run-1", now=NOW)
    with pytest.raises(FeedbackTokenError, match="another interaction") as caught:
        verify_feedback_token(KEY, token, interaction_id="run-2", now=NOW)
    assert caught.value.reason == "wrong_interaction"


def test_a_token_signed_with_another_key_or_altered_is_forged() -> None:
    token = mint_feedback_token(KEY, "run-1", ttl=60, now=NOW)
    with pytest.raises(FeedbackTokenError, match="signature") as caught:
        verify_feedback_token("another-key", token, now=NOW)
    assert caught.value.reason == "forged"
    # The holder extends its own token, or points it at another interaction: the signature gives it away.
    sig = token.split(".")[1]
    for claims in ({"i": "run-1", "e": NOW + 10**6}, {"i": "run-2", "e": NOW + 60}):
        payload = base64.urlsafe_b64encode(orjson.dumps(claims)).rstrip(b"=").decode()
        with pytest.raises(FeedbackTokenError) as caught:
            verify_feedback_token(KEY, f"{payload}.{sig}", now=NOW)
        assert caught.value.reason == "forged"
    # A token is not an id hash made with the same key, and an id hash is no token.
    assert hash_identifier("run-1", KEY)[2:] not in token


@pytest.mark.parametrize("token", ["", "abc", "a.b.c", "!!!.???", None, "x" * 5000])
def test_a_malformed_token_is_refused(token: object) -> None:
    with pytest.raises(FeedbackTokenError) as caught:
        verify_feedback_token(KEY, token, now=NOW)  # type: ignore[arg-type]
    assert caught.value.reason in {"malformed", "forged"}


def test_bad_lifetimes_are_refused() -> None:
    for ttl in (0, -1, 31 * 86400, float("nan"), True):
        with pytest.raises(ValueError, match="ttl"):
            mint_feedback_token(KEY, "run-1", ttl=ttl)


def test_the_handler_mints_with_its_id_hashing_key(tmp_path: Path, key_file: Path) -> None:
    handler = CaptureHandler("sqlite://", journal_dir=tmp_path / "j")
    try:
        run_id = uuid.uuid4()
        token = handler.feedback_token(run_id, ttl=30)
        assert verify_feedback_token(id_hash_key(), token, interaction_id=str(run_id)) == str(run_id)
        # An id holding PII is named by its stored (hashed) form: the token is readable by its holder.
        token = handler.feedback_token("ann.lee@example.com")
        assert "ann.lee" not in base64.urlsafe_b64decode(token.split(".")[0] + "==").decode()
    finally:
        handler.close()
    keyed = CaptureHandler("sqlite://", journal_dir=tmp_path / "j2", hash_key=KEY)
    try:
        assert verify_feedback_token(KEY, keyed.feedback_token("run-9")) == "run-9"
    finally:
        keyed.close()
