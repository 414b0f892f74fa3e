"""Making a value safe to store: PII redacted, ids hashed, text the database would reject repaired.

:class:`Sanitizer` is the single boundary the architecture asks for: it redacts PII, hashes ids, repairs
text the database would reject (lone surrogates, NUL), truncates huge text and serializes metadata. The
store's writer runs it on the writer thread, never on the caller's, before any sink (database, backup,
LangSmith). When redaction of a field fails, the field becomes ``[REDACTED]``: the raw text is never kept.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from cl_plugin.privacy.detectors import REDACTED, PIIRedactor, default_redactor
from cl_plugin.privacy.ids import hash_identifier, id_hash_key

__all__ = ["MAX_VALUE_ITEMS", "REDACTED", "Sanitizer", "dumps", "plain", "repair_text", "safe_identifier"]

log = logging.getLogger("cl_plugin.privacy")

# A UUID (a captured run's id) or an id hashed already: no PII, and the common case, so no redactor call.
_PLAIN_ID = re.compile(r"h:[0-9a-f]{32}|[0-9a-fA-F]{8}(?:-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}")
# Ids glue a prefix to the value ("user-555-123-4567", "cust_4111111111111111"), which the redactor reads as
# one token and leaves alone in prose; for an id, such a separator after a letter is read as a space.
_ID_GLUE = re.compile(r"(?<=[A-Za-z])[-_:#/|=]")
_SURROGATES = re.compile("[\ud800-\udfff]")

#: Items (containers and their members) copied from one JSON-like value; the rest become "<too large>".
MAX_VALUE_ITEMS = 100_000


def repair_text(text: str) -> str:
    """Replace what a database rejects: lone surrogates (not UTF-8) and NUL (refused by PostgreSQL)."""
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            text = _SURROGATES.sub("\ufffd", text)
    if "\x00" in text:
        text = text.replace("\x00", "\ufffd")
    return text


def _json_default(obj: Any) -> Any:
    if isinstance(obj, set | frozenset):
        return list(obj)
    return f"<unserializable {type(obj).__name__}>"


def plain(obj: Any, depth: int = 0, walk: _Walk | None = None) -> Any:
    """A JSON-safe copy of ``obj``: cycles and depth over 32 are cut, unknown objects become their type."""
    if depth > 32:
        return "<too deep>"
    if isinstance(obj, str | bool) or obj is None:
        return obj
    if isinstance(obj, int):
        return int(obj) if -(2**63) <= obj < 2**64 else str(obj)
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if not isinstance(obj, dict | list | tuple | set | frozenset):
        return _json_default(obj)
    walk = walk or _Walk()
    cut = walk.enter(obj)
    if cut is not None:
        return cut
    try:
        if isinstance(obj, dict):
            return {str(k): plain(v, depth + 1, walk) for k, v in obj.items()}
        return [plain(v, depth + 1, walk) for v in obj]
    finally:
        walk.leave(obj)


class _Walk:
    """The containers on the path of one copy, and how many items it may still copy.

    A container that holds itself is a cycle (cut as too deep), and one shared at many places is copied once
    per place: without these checks, ``d = {}; d["a"] = d["b"] = d`` would take 2**32 steps before the depth
    limit cut it.
    """

    __slots__ = ("budget", "path")

    def __init__(self, budget: int = MAX_VALUE_ITEMS) -> None:
        self.budget = budget
        self.path: set[int] = set()

    def enter(self, obj: Any) -> str | None:
        """None when ``obj`` may be copied, else the placeholder that replaces it."""
        if id(obj) in self.path:
            return "<too deep>"  # a cycle is infinitely deep
        self.budget -= len(obj) + 1
        if self.budget < 0:
            return "<too large>"
        self.path.add(id(obj))
        return None

    def leave(self, obj: Any) -> None:
        self.path.discard(id(obj))


def dumps(obj: Any) -> str:
    """Serialize to compact JSON; never raises (cycles, huge nesting and odd objects degrade to text)."""
    try:
        return orjson.dumps(obj, default=_json_default, option=orjson.OPT_NON_STR_KEYS).decode()
    except (TypeError, orjson.JSONEncodeError):
        return orjson.dumps(plain(obj)).decode()


_CLEAN_SIZE, _CLEAN_MAX_CHARS = 8192, 1000


@dataclass(frozen=True, slots=True)
class Sanitizer:
    """Makes a record safe to store.

    Args:
        redact: text -> redacted text (a PII redactor's ``redact``), or None to keep text as is.
        max_text_length: longer text is cut to this many characters and marked.
        hash_id: id -> keyed hash, or None.
        hash_sessions: hash ``session_id`` with ``hash_id``.
        hash_users: hash ``user_id`` with ``hash_id``.
        hash_pii_id: id -> keyed hash for an id that holds PII (see :meth:`key`); None means ``hash_id``, or
            when that is None too, the privacy layer's default key
            (:func:`cl_plugin.privacy.id_hash_key`).

    With ``redact`` set, no id reaches a row as given if it holds PII: interaction, run, session and user
    ids that the redactor would change are stored as their keyed hash (:meth:`key`).
    """

    redact: Callable[[str], str] | None = None
    max_text_length: int = 100_000
    hash_id: Callable[[str], str] | None = None
    hash_sessions: bool = False
    hash_users: bool = False
    hash_pii_id: Callable[[str], str] | None = None
    # Texts the redactor left unchanged: metadata keys, agent and model names and retrieved passages repeat
    # from record to record, and redacting each again was most of the cost of the reference record's fields.
    # Only PII-free texts of at most _CLEAN_MAX_CHARS are kept, and at most _CLEAN_SIZE of them.
    _clean: dict[str, None] = field(default_factory=dict, compare=False, repr=False)

    def text(self, value: str) -> str:
        """A safe copy of one text field."""
        limit = self.max_text_length
        if len(value) <= limit and value.isascii() and "\x00" not in value:  # the common case, kept cheap
            if self.redact is None or len(value) < 6:  # the shortest PII ("a@b.co") has six characters
                return value
            if value in self._clean:
                return value
            try:
                out = self.redact(value)
            except Exception:
                log.exception("redaction failed; the field is stored as %s", REDACTED)
                return REDACTED
            if out == value and len(value) <= _CLEAN_MAX_CHARS:
                if len(self._clean) >= _CLEAN_SIZE:
                    self._clean.clear()
                self._clean[value] = None
            return out if len(out) <= limit else f"{out[:limit]}…[truncated {len(out) - limit} chars]"
        return self._text(value)

    def _text(self, value: str) -> str:
        limit = self.max_text_length
        # Cut far beyond the limit first so redaction cost stays bounded, then redact, then cut to the limit:
        # a PII value split by the first cut lies beyond the limit and is dropped with it.
        original_length = len(value)
        if original_length > 2 * limit:
            value = value[: 2 * limit]
        value = repair_text(value)
        if self.redact is not None:
            try:
                value = self.redact(value)
            except Exception:
                log.exception("redaction failed; the field is stored as %s", REDACTED)
                return REDACTED
        if len(value) > limit:
            value = f"{value[:limit]}…[truncated {original_length - limit} chars]"
        return value

    def value(self, obj: Any, depth: int = 0, walk: _Walk | None = None) -> Any:
        """A safe copy of a JSON-like value: every string in it (keys included) goes through :meth:`text`.

        Cycles and nesting deeper than 32 become ``"<too deep>"``, and whatever lies beyond
        :data:`MAX_VALUE_ITEMS` items (counting shared containers once per place) ``"<too large>"``.
        """
        if isinstance(obj, str):
            return self.text(obj)
        if obj is None or isinstance(obj, bool):
            return obj
        if isinstance(
            obj, int
        ):  # JSON readers (and orjson) take 64-bit integers; larger ones stay exact as text
            return int(obj) if -(2**63) <= obj < 2**64 else str(obj)
        if isinstance(obj, float):
            return float(obj) if math.isfinite(obj) else None
        if depth > 32:
            return "<too deep>"
        if not isinstance(obj, dict | list | tuple | set | frozenset):
            return f"<unserializable {type(obj).__name__}>"
        walk = walk or _Walk()
        cut = walk.enter(obj)
        if cut is not None:
            return cut
        try:
            if isinstance(obj, dict):
                out = {}
                for k, v in obj.items():
                    # Flat str -> str/number metadata is the usual shape: no recursion for it.
                    key = self.text(k if type(k) is str else str(k))
                    t = type(v)
                    out[key] = (
                        self.text(v)
                        if t is str
                        else v
                        if t is int or v is None
                        else self.value(v, depth + 1, walk)
                    )
                return out
            return [self.value(v, depth + 1, walk) for v in obj]
        finally:
            walk.leave(obj)

    def identifier(self, value: str | None, hashed: bool) -> str | None:
        """A user or session id as stored: its keyed hash when ``hashed``, else as :meth:`key` keeps it."""
        if value is None:
            return None
        value = repair_text(str(value))
        if hashed and self.hash_id is not None:
            return self.hash_id(value)
        out = self.key(value)
        return out if out is not value or len(out) <= self.max_text_length else self.text(out)

    def key(self, value: str) -> str:
        """An id as stored: as given, unless redaction is on and the id holds PII; then its keyed hash.

        PII glued to a prefix counts (``user-555-123-4567``, ``cust_4111111111111111``): a letter followed by
        one of ``-_:#/|=`` is read as a word break.

        A placeholder would merge every user whose id is an address into one; the hash keeps them apart, and
        the same id always gets the same hash, so a lookup by the raw id can hash it alike
        (:func:`cl_plugin.privacy.safe_identifier`). If redaction fails on the id, the id is hashed.
        """
        if self.redact is None or len(value) < 6 or _PLAIN_ID.fullmatch(value):
            return value
        try:
            spaced = _ID_GLUE.sub(" ", value)
            if self.redact(value) == value and (spaced is value or self.redact(spaced) == spaced):
                return value
        except Exception as exc:
            log.error("redacting an id failed (%s); the id is stored hashed", type(exc).__name__)
        hasher = self.hash_pii_id or self.hash_id
        try:
            if hasher is None:
                return hash_identifier(value, id_hash_key())
            return hasher(value)
        except Exception as exc:
            log.error(
                "hashing an id that holds PII failed (%s); the id is stored as %s",
                type(exc).__name__,
                REDACTED,
            )
            return REDACTED


def safe_identifier(
    value: str, key: str | bytes | None = None, *, redactor: PIIRedactor | None = None
) -> str:
    """An id as the plugin stores it: unchanged, unless it holds PII; then its keyed hash.

    This is what the writer does to user, session and interaction ids when it redacts
    (:meth:`Sanitizer.key`), so a lookup by an id that holds PII hashes it the same
    way: ``store.query_interactions(session_id=safe_identifier(raw))``. If the redactor fails on the id, the
    id is hashed (failing closed).

    Args:
        value: the id as the caller knows it.
        key: the HMAC key: the one configured for id hashing when there is one; :func:`id_hash_key` by
            default.
        redactor: the detector; :func:`default_redactor` by default.

    Returns:
        ``value``, or ``"h:"`` plus 32 hex characters.

    Example:
        >>> safe_identifier("user-42")
        'user-42'
        >>> safe_identifier("jane@example.com", "secret") == hash_identifier("jane@example.com", "secret")
        True
    """
    if not isinstance(value, str):
        raise TypeError(f"safe_identifier needs a str id, got {type(value).__name__}")
    sanitizer = Sanitizer(
        redact=(redactor or default_redactor()).redact,
        hash_pii_id=lambda v: hash_identifier(v, key or id_hash_key()),
    )
    return sanitizer.key(repair_text(value))
