"""Turning reference data and samples into numeric columns: numbers, vectors, or dicts of features.

A sample's layout is fixed by the reference: a number (one feature, ``value``), a vector (features
``x0``, ``x1``, ...), or a dict (features by key). Text or boolean features are categorical and stored as
category codes; a category the reference never had gets a code of its own (``<other>``).
"""

from __future__ import annotations

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
    """Writes one sample into a row of a float buffer, in the reference's layout.

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

    def write(self, sample: Any, row: np.ndarray) -> None:
        """Write ``sample`` into ``row`` (a dict's keys that are not features are ignored).

        Raises:
            DriftInputError: the sample does not have the reference's layout or holds a non-finite number.
        """
        try:
            self._write(sample, row)
        except (TypeError, ValueError, OverflowError) as exc:  # OverflowError: an int such as 10**400
            if isinstance(exc, DriftInputError):
                raise
            raise self._layout_error(sample) from None
        total = row.sum()
        if total - total != 0:
            bad = self.names[int(np.flatnonzero(~np.isfinite(row))[0])]
            raise DriftInputError(
                f"sample feature {bad!r} is missing or infinite; drop the sample or impute the value",
                field=bad,
            )

    def _write(self, sample: Any, row: np.ndarray) -> None:
        if self.layout == "scalar":
            if isinstance(sample, str) or not isinstance(sample, int | float | np.number):
                raise self._layout_error(sample)
            row[0] = sample
        elif self.layout == "vector":
            if isinstance(sample, str | Mapping) or len(sample) != len(self.names):
                raise self._layout_error(sample)
            row[:] = sample
        else:
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
            row[:] = values

    def _layout_error(self, sample: Any) -> DriftInputError:
        expected = {
            "scalar": "one number, like the reference",
            "vector": f"a vector of {len(self.names)} numbers, like the reference's rows",
            "mapping": f"a dict with the features {', '.join(self.names)}",
        }[self.layout]
        return DriftInputError(f"sample must be {expected} (got {sample!r})", field="sample")
