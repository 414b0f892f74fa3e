"""Capture sampling: which runs keep their node-level detail, and how readers tell a sample from the whole.

A :class:`~cl_plugin.CaptureHandler` built with ``sample_rate=r < 1`` still writes one ``interactions`` row
per top-level run, so every rate computed from those rows (errors, ratings, latency, cost) stays exact. Only
the detail (``node_runs`` and ``decisions`` rows) is kept for a fraction ``r`` of the runs, chosen by a hash
of the run id: every process and replica makes the same choice for the same run, with no coordination.
Runs that raise are kept in full whatever the hash says (``always_keep_errors``).

The interaction row's ``metadata`` says what happened, under these keys (absent when ``sample_rate`` is 1):

- ``sample_rate``: the rate in force;
- ``sampled``: whether the hash chose the run (the unbiased sample);
- ``detail_kept``: why the detail of a run the hash did not choose was written all the same: ``"error"``
  (something in it raised) or ``"unfinished"`` (it never ended and was evicted);
- ``detail_dropped``: detail rows lost to the per-run buffer cap (``max_unsampled_detail``).

Figures computed from detail rows must use the runs of the unbiased sample only: the runs kept for their
errors would over-represent failures. :func:`detail_sample` counts it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from cl_plugin.errors import ConfigError

__all__ = ["DetailSample", "check_sample_rate", "detail_sample", "in_detail_sample", "is_sampled"]

_SCALE = float(1 << 64)


def check_sample_rate(value: Any, key: str = "sample_rate") -> float:
    """``value`` as a float in (0, 1], or a :class:`ConfigError` naming ``key`` and the value."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 < value <= 1.0:
        raise ConfigError(f"{key} must be a number in (0, 1], such as 0.1 for 10% (got {value!r})", key=key)
    return float(value)


def is_sampled(run_id: Any, rate: float) -> bool:
    """Whether the run with this id keeps its detail at ``rate``; the same answer in every process.

    The id's text is hashed (BLAKE2b, 64 bits) and compared with ``rate``, so the ids of one sample are
    also the ids of every larger one.

    Example:
        >>> is_sampled("0192d1e0-2f3c-7a4b-8c5d-6e7f80912345", 1.0)
        True
        >>> sum(is_sampled(f"run-{i}", 0.25) for i in range(10_000))
        2518
    """
    if rate >= 1.0:
        return True
    digest = hashlib.blake2b(str(run_id).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / _SCALE < rate


def _metadata(row: Any) -> Mapping[str, Any]:
    meta = row.get("metadata") if isinstance(row, Mapping) else getattr(row, "metadata", None)
    if isinstance(meta, str | bytes):
        try:
            meta = orjson.loads(meta) if meta else None
        except orjson.JSONDecodeError:
            meta = None
    return meta if isinstance(meta, Mapping) else {}


def in_detail_sample(row: Any) -> bool:
    """Whether an interaction's detail rows belong to the unbiased sample (all do without sampling)."""
    return _metadata(row).get("sampled") is not False


@dataclass(frozen=True, slots=True)
class DetailSample:
    """How much of the traffic a detail-based figure is computed from.

    Attributes:
        interactions: interactions the figure is about.
        sampled: those whose detail is in the unbiased sample (the figure's denominator).
        kept_errors: interactions outside the sample whose detail was kept because they raised (left out of
            the figure, which they would bias towards failures).
        rate: the capture's ``sample_rate`` (None when no interaction was sampled at capture).
    """

    interactions: int
    sampled: int
    kept_errors: int
    rate: float | None

    @property
    def fraction(self) -> float | None:
        """``sampled / interactions``; None when there is no interaction."""
        return self.sampled / self.interactions if self.interactions else None

    @property
    def is_sample(self) -> bool:
        """Whether the figure comes from a sample rather than every interaction."""
        return self.sampled < self.interactions

    def describe(self) -> str:
        """``"all 120 interactions"`` or ``"a 10% sample: 12 of 120 interactions"``."""
        if not self.is_sample:
            return f"all {self.interactions} interactions"
        return f"a {self.fraction:.0%} sample: {self.sampled} of {self.interactions} interactions"


def detail_sample(interactions: Iterable[Any]) -> DetailSample:
    """Count the unbiased detail sample among interaction rows (dicts or records).

    Example:
        >>> rows = [{"metadata": {"sample_rate": 0.5, "sampled": i % 2 == 0}} for i in range(4)]
        >>> detail_sample(rows).describe()
        'a 50% sample: 2 of 4 interactions'
    """
    n = sampled = kept = 0
    rate: float | None = None
    for row in interactions:
        meta = _metadata(row)
        n += 1
        if meta.get("sampled") is False:
            kept += meta.get("detail_kept") is not None
        else:
            sampled += 1
        r = meta.get("sample_rate")
        if isinstance(r, int | float) and not isinstance(r, bool):
            rate = float(r)
    return DetailSample(n, sampled, kept, rate)
