"""Signed feedback tokens: a server hands a client a token that lets it post feedback on one interaction,
for a while, without any other credential (as LangSmith's presigned feedback tokens do).

A token is ``<payload>.<signature>``, both base64url: the payload is JSON ``{"i": interaction id as stored,
"e": expiry unix time}`` and the signature its HMAC-SHA256 under a key derived from the id hashing key
(:func:`~cl_plugin.privacy.id_hash_key`, or the configured ``privacy.hash_key``), so a token is never
mistaken for an id hash made with the same key. Signatures are compared in constant time.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import math
import time

import orjson

from cl_plugin.errors import FeedbackTokenError
from cl_plugin.privacy.ids import id_hash_key

__all__ = ["mint_feedback_token", "verify_feedback_token"]

_PURPOSE = b"cl_plugin feedback token v1"
#: The longest lifetime a token may be given: 30 days.
MAX_TTL = 30 * 86_400.0


def _signing_key(key: str | bytes | None) -> bytes:
    raw = id_hash_key() if key is None else key
    raw_bytes = raw.encode("utf-8") if isinstance(raw, str) else raw
    if not raw_bytes:
        raise FeedbackTokenError("a feedback token needs a non-empty key", reason="malformed")
    return hmac.new(raw_bytes, _PURPOSE, hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def mint_feedback_token(
    key: str | bytes | None, interaction_id: str, ttl: float = 3600.0, *, now: float | None = None
) -> str:
    """A token that lets its holder post feedback on one interaction until it expires.

    Args:
        key: the id hashing key (None: :func:`~cl_plugin.privacy.id_hash_key`).
        interaction_id: the interaction as stored (hashed already when it holds PII: the token is readable).
        ttl: seconds the token is valid, in (0, 30 days].
        now: the current unix time (for tests).

    Returns:
        The token, URL-safe text.

    Raises:
        ValueError: ``ttl`` is not in (0, 30 days] or the id is empty.
    """
    if not isinstance(interaction_id, str) or not interaction_id:
        raise ValueError("a feedback token needs a non-empty interaction id")
    if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not (0 < ttl <= MAX_TTL):
        raise ValueError(f"ttl must be seconds in (0, {MAX_TTL:.0f}] (got {ttl!r})")
    expires = math.ceil((time.time() if now is None else now) + ttl)
    payload = orjson.dumps({"i": interaction_id, "e": expires})
    signature = hmac.new(_signing_key(key), payload, hashlib.sha256).digest()
    return f"{_b64(payload)}.{_b64(signature)}"


def verify_feedback_token(
    key: str | bytes | None,
    token: str,
    *,
    interaction_id: str | None = None,
    now: float | None = None,
) -> str:
    """Check a feedback token and return the interaction it is for.

    Args:
        key: the key it was minted with (None: :func:`~cl_plugin.privacy.id_hash_key`).
        token: the token.
        interaction_id: when given, the token must be for this interaction (as stored).
        now: the current unix time (for tests).

    Returns:
        The interaction id (as stored) the token was minted for.

    Raises:
        FeedbackTokenError: the token is malformed, forged (its signature does not match), expired, or for
            another interaction; ``reason`` says which.
    """
    if not isinstance(token, str) or token.count(".") != 1 or len(token) > 4096:
        raise FeedbackTokenError(
            "the feedback token is malformed: expected <payload>.<signature> as minted by "
            "mint_feedback_token (or CaptureHandler.feedback_token)",
            reason="malformed",
        )
    body, sig = token.split(".")
    try:
        payload, signature = _unb64(body), _unb64(sig)
    except (binascii.Error, ValueError):
        raise FeedbackTokenError("the feedback token is not base64url text", reason="malformed") from None
    expected = hmac.new(_signing_key(key), payload, hashlib.sha256).digest()
    if not hmac.compare_digest(signature, expected):
        raise FeedbackTokenError(
            "the feedback token's signature does not match: it was not minted with this server's key, or was "
            "altered; ask the server for a new token",
            reason="forged",
        )
    try:
        claims = orjson.loads(payload)
        iid, expires = claims["i"], claims["e"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        raise FeedbackTokenError("the feedback token's payload is unreadable", reason="malformed") from None
    if not isinstance(iid, str) or not isinstance(expires, int | float):
        raise FeedbackTokenError("the feedback token's payload is unreadable", reason="malformed")
    if (time.time() if now is None else now) >= expires:
        raise FeedbackTokenError(
            "the feedback token has expired; ask the server for a new one", reason="expired"
        )
    if interaction_id is not None and not hmac.compare_digest(iid.encode(), interaction_id.encode()):
        raise FeedbackTokenError(
            "the feedback token was minted for another interaction; use the token given with this one",
            reason="wrong_interaction",
        )
    return iid
