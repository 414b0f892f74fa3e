"""Turning reference data and samples into numeric columns: numbers, vectors, or dicts of features.

A sample's layout is fixed by the reference: a number (one feature, ``value``), a vector (features
``x0``, ``x1``, ...), or a dict (features by key). Text or boolean features are categorical and stored as
category codes; a category the reference never had gets a code of its own (``<other>``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from cl_plugin.errors import DriftInputError

__all__ = ["Schema", "reference_columns"]

_MIN_REFERENCE_ROWS = 10


def _columns_from(data: Any) -> tuple[str, dict[str, list[Any]]]:
    """The layout (``scalar``, ``vector`` or ``mapping``) and the columns of reference data."""
    if hasattr(data, "columns") and hasattr(data, "to_dict"):  # a pandas DataFrame
        return "mapping", {str(c): list(data[c]) for c in data.columns}
    if isinstance(data, Mapping):
        bad = next(
            (k for k, v in data.items() if isinstance(v, str | bytes) or not hasattr(v, "__iter__")),
            None,
        )
        if bad is not None:
            raise DriftInputError(
                f"a dict of reference columns needs a list of values per column; column {bad!r} holds "
                f"{type(data[bad]).__name__}",
                field=str(bad),
            )
        return "mapping", {str(k): list(v) for k, v in data.items()}
    if isinstance(data, str) or not isinstance(data, Sequence | np.ndarray):
        raise DriftInputError(
            f"reference data must be a list of numbers, of vectors or of dicts, a 2-D array, or a dict of "
            f"columns (got {type(data).__name__})",
            field="data",
        )
    rows = list(data)
    if rows and all(isinstance(r, Mapping) for r in rows):
        names = list(rows[0])
        try:
            return "mapping", {str(k): [r[k] for r in rows] for k in names}
        except KeyError as exc:
            raise DriftInputError(
                f"reference rows must all have the same keys; a row lacks {exc.args[0]!r}", field="data"
            ) from None
    arr = np.asarray(rows, dtype=object)
    if arr.ndim == 1:
        return "scalar", {"value": rows}
    if arr.ndim == 2:
        return "vector", {f"x{j}": list(arr[:, j]) for j in range(arr.shape[1])}
    raise DriftInputError(
        f"reference vectors must all have the same length (got an array of shape {arr.shape})", field="data"
    )


def reference_columns(data: Any) -> tuple[str, dict[str, np.ndarray], dict[str, list[str]]]:
    """Parse reference data into numeric columns.

    Returns:
        The layout, the columns as float arrays (categorical ones as codes), and the categories of each
        categorical column (a code is an index into that list; the last code, ``len(list)``, is ``<other>``).

    Raises:
        DriftInputError: the data has fewer than 10 rows, or a numeric column holds a missing or infinite
            value.
    """
    layout, raw = _columns_from(data)
    columns: dict[str, np.ndarray] = {}
    categories: dict[str, list[str]] = {}
    for name, values in raw.items():
        if len(values) < _MIN_REFERENCE_ROWS:
            raise DriftInputError(
                f"reference feature {name!r} has {len(values)} values; pass at least {_MIN_REFERENCE_ROWS} "
                "(a few thousand give stable tests)",
                field=name,
            )
        if any(isinstance(v, str | bool) or v is None for v in values):
            cats = sorted({str(v) for v in values})
            index = {c: i for i, c in enumerate(cats)}
            categories[name] = cats
            columns[name] = np.array([index[str(v)] for v in values], dtype=float)
            continue
        arr = np.asarray(values, dtype=float)
        if not np.isfinite(arr).all():
            raise DriftInputError(
                f"reference feature {name!r} holds a missing or infinite value; drop or impute those rows",
                field=name,
            )
        columns[name] = arr
    return layout, columns, categories


class Schema:
    """Turns one sample into a list of floats, in the reference's layout and feature order.

    Args:
        layout: ``scalar``, ``vector`` or ``mapping``.
        names: the feature names, in column order.
        categories: the categories of each categorical feature.
    """

    def __init__(self, layout: str, names: list[str], categories: dict[str, list[str]]) -> None:
        self.layout = layout
        self.names = names
        self._codes = {
            j: {c: float(i) for i, c in enumerate(categories[name])}
            for j, name in enumerate(names)
            if name in categories
        }
        self._other = {j: float(len(codes)) for j, codes in self._codes.items()}
        self._shape = (len(names),)

    def values(self, sample: Any) -> list[float]:
        """The sample's feature values (a dict's keys that are not features are ignored).

        Raises:
            DriftInputError: the sample does not have the reference's layout or holds a non-finite number.
        """
        # The common case first, at a few hundred nanoseconds: a numpy row of the reference's width.
        if type(sample) is np.ndarray and sample.shape == self._shape and sample.dtype.kind == "f":
            values = sample.tolist()
        else:
            try:
                values = self._values(sample)
            except (TypeError, ValueError, OverflowError) as exc:  # OverflowError: an int such as 10**400
                if isinstance(exc, DriftInputError):
                    raise
                raise self._layout_error(sample) from None
        if not math.isfinite(sum(values)) and not all(map(math.isfinite, values)):
            bad = self.names[next(j for j, v in enumerate(values) if not math.isfinite(v))]
            raise DriftInputError(
                f"sample feature {bad!r} is missing or infinite; drop the sample or impute the value",
                field=bad,
            )
        return values

    def _values(self, sample: Any) -> list[float]:
        if self.layout == "scalar":
            if isinstance(sample, str) or not isinstance(sample, int | float | np.number):
                raise self._layout_error(sample)
            return [float(sample)]
        if self.layout == "vector":
            if isinstance(sample, str | Mapping) or len(sample) != len(self.names):
                raise self._layout_error(sample)
            arr = np.asarray(sample, dtype=float)
            if arr.shape != self._shape:
                raise self._layout_error(sample)
            return arr.tolist()
        if not isinstance(sample, Mapping):
            raise self._layout_error(sample)
        try:
            values = [sample[k] for k in self.names]
        except KeyError as exc:
            raise DriftInputError(
                f"sample lacks feature {exc.args[0]!r}; every sample needs the reference's features: "
                f"{', '.join(self.names)}",
                field=str(exc.args[0]),
            ) from None
        for j, codes in self._codes.items():
            values[j] = codes.get(str(values[j]), self._other[j])
        return [float(v) for v in values]

    def _layout_error(self, sample: Any) -> DriftInputError:
        expected = {
            "scalar": "one number, like the reference",
            "vector": f"a vector of {len(self.names)} numbers, like the reference's rows",
            "mapping": f"a dict with the features {', '.join(self.names)}",
        }[self.layout]
        return DriftInputError(f"sample must be {expected} (got {sample!r})", field="sample")
