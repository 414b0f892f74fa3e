"""The plots of the HTML report, drawn with matplotlib and returned as inline SVG text.

Each function takes plain numbers (already computed from the store by :mod:`cl_plugin.report`) and returns
one ``<svg>`` element. Figures are built with :class:`matplotlib.figure.Figure` and never through
``pyplot``, so no GUI backend is touched and the host application's matplotlib state stays as it was;
settings apply through a local ``rc_context``. Text stays text in the SVG (``svg.fonttype: none``), which
keeps the file small and lets a browser search it. matplotlib is imported here on first use only, so
``import cl_plugin`` does not pay for it.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

__all__ = ["ab_effects", "agent_mix", "latency_histogram", "quality_over_time", "reliability_diagram"]

#: Colours that stay apart for the usual colour-vision deficiencies (Okabe and Ito).
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")
_GRID = "#d9dde3"
_LABEL_BOX = {"boxstyle": "round,pad=0.2", "facecolor": "white", "edgecolor": "none", "alpha": 0.85}
_STYLE = {
    "svg.fonttype": "none",
    "svg.hashsalt": None,
    "font.family": "sans-serif",
    "font.size": 9,
    "axes.edgecolor": "#9aa3ad",
    "axes.grid": True,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "grid.color": _GRID,
    "grid.linewidth": 0.6,
    "legend.frameon": False,
    "legend.fontsize": 8,
}


def _figure(rows: int = 1, height: float = 3.0, **kwargs: Any) -> tuple[Any, Any]:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10.0, height), layout="constrained")
    return fig, fig.subplots(rows, 1, squeeze=False, **kwargs)[:, 0]


def _svg(fig: Any) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None})
    text = buf.getvalue()
    return text[text.index("<svg") :]  # drop the XML prolog and DOCTYPE, which HTML does not allow inline


def _draw(build: Any) -> str:
    import matplotlib

    with matplotlib.rc_context(_STYLE):
        return _svg(build())


def _dates(times: Sequence[float]) -> list[datetime]:
    return [datetime.fromtimestamp(t, UTC) for t in times]


def _time_axis(ax: Any) -> None:
    from matplotlib import dates as mdates

    locator = mdates.AutoDateLocator(tz=UTC, maxticks=10)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator, tz=UTC))


def _nan(values: Sequence[float | None]) -> list[float]:
    return [math.nan if v is None else float(v) for v in values]


def quality_over_time(
    starts: Sequence[float],
    width: float,
    mean_score: Sequence[float | None],
    score_ci: Sequence[tuple[float, float] | None],
    failure_rates: Mapping[str, Sequence[float | None]],
) -> str:
    """Mean rating with its confidence band (top) and failure rates in percent (bottom), per time bucket.

    Args:
        starts: each bucket's start (unix time).
        width: the bucket width in seconds (points sit at bucket centres).
        mean_score: the mean rating per bucket (None when nothing was rated).
        score_ci: its confidence interval per bucket (None when undefined).
        failure_rates: signal name -> rate per bucket (0 to 1, None when not observable).
    """

    def build() -> Any:
        fig, (top, bottom) = _figure(2, 4.6, sharex=True)
        x = _dates([s + width / 2 for s in starts])
        low = _nan([ci[0] if ci else None for ci in score_ci])
        high = _nan([ci[1] if ci else None for ci in score_ci])
        top.fill_between(x, low, high, color=PALETTE[0], alpha=0.18, linewidth=0, label="95% interval")
        top.plot(x, _nan(mean_score), marker="o", markersize=3, color=PALETTE[0], label="mean rating")
        top.set_ylabel("rating")
        top.legend(loc="lower left", ncols=2)
        for i, (name, rates) in enumerate(failure_rates.items()):
            pct = [v * 100 for v in _nan(rates)]
            bottom.plot(x, pct, marker="o", markersize=2.5, color=PALETTE[(i + 1) % len(PALETTE)], label=name)
        bottom.set_ylabel("failure rate (%)")
        bottom.set_ylim(bottom=0)
        bottom.legend(loc="upper left", ncols=min(len(failure_rates), 6))
        _time_axis(bottom)
        return fig

    return _draw(build)


def latency_histogram(sample_ms: Sequence[float], percentiles: Mapping[str, float | None], total: int) -> str:
    """A histogram of latencies on a log axis, with the exact percentiles marked.

    Args:
        sample_ms: the latencies drawn (a uniform sample when there are many).
        percentiles: label (``"p50"``, ...) -> latency in ms, computed over every interaction.
        total: how many latencies the sample was drawn from.
    """

    def build() -> Any:
        import numpy as np

        fig, (ax,) = _figure(1, 2.8)
        values = np.asarray(sample_ms, dtype=float)
        values = values[values > 0]
        low, high = float(values.min()), float(values.max())
        edges = np.geomspace(low, high * 1.0001 if high > low else low * 2, 40)
        ax.hist(values, bins=edges, color=PALETTE[4], edgecolor="white", linewidth=0.4)
        ax.set_xscale("log")
        for i, (label, ms) in enumerate(percentiles.items()):
            if ms is not None:
                ax.axvline(ms, color=PALETTE[(i + 1) * 2 % len(PALETTE)], linestyle="--", linewidth=1)
                ax.annotate(
                    f"{label} {ms:,.0f} ms",
                    (ms, 1),
                    xycoords=("data", "axes fraction"),
                    xytext=(3, -10 - 11 * i),
                    textcoords="offset points",
                    fontsize=8,
                    bbox=_LABEL_BOX,
                )
        shown = f"{len(values):,} sampled of {total:,}" if len(values) < total else f"{total:,}"
        ax.set_xlabel(f"latency (ms, log scale; {shown} interactions)")
        ax.set_ylabel("interactions")
        return fig

    return _draw(build)


def agent_mix(
    starts: Sequence[float],
    width: float,
    shares: Mapping[str, Sequence[float]],
    drift: Sequence[tuple[float, str]],
) -> str:
    """The share of traffic each agent got per time bucket, stacked, with drift alarms as vertical lines.

    Args:
        starts: each bucket's start (unix time).
        width: the bucket width in seconds.
        shares: agent -> share of the bucket's interactions (0 to 1), aligned with ``starts``.
        drift: ``(time, label)`` of each drift alarm to mark.
    """

    def build() -> Any:
        from matplotlib import dates as mdates

        fig, (ax,) = _figure(1, 3.2)
        x = _dates(starts)
        bar_width = width / 86400.0 * 0.92  # matplotlib dates are in days
        bottom = [0.0] * len(starts)
        for i, (agent, values) in enumerate(shares.items()):
            pct = [v * 100 for v in values]
            ax.bar(
                x,
                pct,
                width=bar_width,
                bottom=bottom,
                align="edge",
                color=PALETTE[i % len(PALETTE)],
                label=agent,
                linewidth=0,
            )
            bottom = [b + p for b, p in zip(bottom, pct, strict=True)]
        for i, (at, label) in enumerate(drift):
            ax.axvline(
                mdates.date2num(datetime.fromtimestamp(at, UTC)),
                color="#c0392b",
                linewidth=1.2,
                linestyle="--",
                label="drift alarm" if i == 0 else None,
            )
            ax.annotate(
                label,
                (datetime.fromtimestamp(at, UTC), 1),
                xycoords=("data", "axes fraction"),
                xytext=(3, -10 - 10 * (i % 3)),
                textcoords="offset points",
                fontsize=7,
                color="#c0392b",
                bbox=_LABEL_BOX,
            )
        ax.set_ylim(0, 100)
        ax.set_ylabel("share of interactions (%)")
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), reverse=True)  # the stack's order, top down
        _time_axis(ax)
        return fig

    return _draw(build)


def reliability_diagram(
    lower: Sequence[float],
    upper: Sequence[float],
    confidence: Sequence[float | None],
    accuracy: Sequence[float | None],
    counts: Sequence[int],
) -> str:
    """Accuracy against confidence per confidence bin, beside the diagonal of perfect calibration.

    Args:
        lower: each bin's lower edge.
        upper: each bin's upper edge.
        confidence: mean confidence in each bin (None when empty).
        accuracy: share of right routes in each bin (None when empty).
        counts: decisions per bin.
    """

    def build() -> Any:
        from matplotlib.figure import Figure

        fig = Figure(figsize=(10.0, 3.4), layout="constrained")
        ax, hist = fig.subplots(1, 2, width_ratios=(1.4, 1))
        centres = [(lo + hi) / 2 for lo, hi in zip(lower, upper, strict=True)]
        widths = [(hi - lo) * 0.9 for lo, hi in zip(lower, upper, strict=True)]
        ax.plot([0, 1], [0, 1], color="#7f8c8d", linestyle=":", label="perfect calibration")
        ax.bar(centres, _nan(accuracy), width=widths, color=PALETTE[0], alpha=0.75, label="accuracy")
        ax.plot(
            _nan(confidence), _nan(accuracy), "o", color=PALETTE[5], markersize=4, label="mean confidence"
        )
        ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="router confidence", ylabel="share routed right")
        ax.legend(loc="upper left")
        hist.bar(centres, counts, width=widths, color=PALETTE[4])
        hist.set(xlim=(0, 1), xlabel="router confidence", ylabel="labeled decisions")
        return fig

    return _draw(build)


def ab_effects(
    names: Sequence[str],
    effects: Sequence[float | None],
    intervals: Sequence[tuple[float | None, float | None] | None],
) -> str:
    """Each A/B test's effect (mean of B minus mean of A) with its always-valid interval, one row per test.

    Args:
        names: the tests' labels.
        effects: the point estimates (None before both groups have results).
        intervals: the confidence intervals (None, or ends that are None when unbounded).
    """

    def build() -> Any:
        fig, (ax,) = _figure(1, 0.9 + 0.45 * len(names))
        for row, (effect, ci) in enumerate(zip(effects, intervals, strict=True)):
            if effect is None:
                ax.annotate(
                    "no estimate yet", (0, row), fontsize=8, color="#7f8c8d", ha="center", va="center"
                )
                continue
            low = effect if ci is None or ci[0] is None else ci[0]
            high = effect if ci is None or ci[1] is None else ci[1]
            ax.errorbar(
                [effect],
                [row],
                xerr=[[effect - low], [high - effect]],
                fmt="o",
                color=PALETTE[0],
                ecolor=PALETTE[0],
                capsize=4,
                markersize=5,
            )
        ax.axvline(0, color="#7f8c8d", linewidth=1)
        ax.set_yticks(range(len(names)), labels=list(names))
        ax.set_ylim(-0.7, len(names) - 0.3)
        ax.invert_yaxis()
        ax.set_xlabel("effect: mean of B minus mean of A, with its always-valid confidence interval")
        return fig

    return _draw(build)
