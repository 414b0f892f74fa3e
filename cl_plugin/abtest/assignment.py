"""Deterministic assignment of units (users, sessions, requests) to the groups of an A/B test.

A unit's group is a pure function of the test id, the unit id and the split, identical in every process,
replica and Python run (no ``hash()``, whose value changes with ``PYTHONHASHSEED``), so replicas agree
without sharing state. The function, for reimplementation elsewhere:

    digest = blake2b(test_id_utf8 + b"\\x00" + unit_bytes, digest_size=8, person=b"cl_plugin.ab")
    group = "B" if int.from_bytes(digest, "big") < round(traffic_split * 2**64) else "A"

where ``unit_bytes`` is a string's UTF-8, an integer's decimal digits (``42`` and ``"42"`` share a group),
a UUID's canonical text, or bytes as given. The test id salts the hash, so one unit's groups in two tests
are independent, unlike a linear checksum such as CRC32 whose outputs for two salts are correlated.
"""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

from cl_plugin.errors import ABTestError

__all__ = ["PERSON", "assign", "b_threshold", "hash_prefix", "unit_bytes"]

PERSON = b"cl_plugin.ab"


def hash_prefix(test_id: str) -> Any:
    """The hash state after the test id: copying it saves rehashing the id for every unit."""
    return hashlib.blake2b(test_id.encode() + b"\x00", digest_size=8, person=PERSON)


def b_threshold(traffic_split: float) -> int:
    """Digests below this 64-bit integer go to group B."""
    return round(traffic_split * 2**64)


def unit_bytes(unit_id: object, test_id: str | None = None) -> bytes:
    """A unit id as the bytes that are hashed.

    Raises:
        ABTestError: the id is not a string, an integer, a UUID or bytes (other objects have no text
            form that is the same in every process).
    """
    if isinstance(unit_id, str):
        return unit_id.encode("utf-8", "surrogatepass")  # a lone surrogate from a JSON escape is an id too
    if isinstance(unit_id, int) and not isinstance(unit_id, bool):
        return str(unit_id).encode()
    if isinstance(unit_id, uuid.UUID):
        return str(unit_id).encode()
    if isinstance(unit_id, bytes | bytearray):
        return bytes(unit_id)
    raise ABTestError(
        f"unit_id must be a str, int, UUID or bytes (got {type(unit_id).__name__}); pass a stable id such as "
        "the user, session or request id as a string",
        field="unit_id",
        test_id=test_id,
    )


def assign(test_id: str, unit_id: object, traffic_split: float) -> str:
    """The group, ``"A"`` or ``"B"``, of one unit in one test (the reference form of the function above).

    Args:
        test_id: the test's id.
        unit_id: the unit's id (str, int, UUID or bytes).
        traffic_split: the share of units in group B.

    Returns:
        ``"A"`` or ``"B"``.
    """
    h = hash_prefix(test_id)
    h.update(unit_bytes(unit_id, test_id))
    return "B" if int.from_bytes(h.digest(), "big") < b_threshold(traffic_split) else "A"
