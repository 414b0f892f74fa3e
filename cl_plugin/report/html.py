"""The HTML of the report: one function per section, each returning its body, and the page around them.

A section with nothing to show says so in a ``<p class="empty">`` that starts with "No data", never with an
empty plot or table. Every string taken from the store or composed here goes through ``r.text`` (redact,
then escape); numbers go through :func:`number` and times through :func:`stamp`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from cl_plugin.report import plots

if TYPE_CHECKING:
    from cl_plugin.capture.sampling import DetailSample
    from cl_plugin.report.data import ReportData

__all__ = ["CSS", "MIN_LABELED", "SECTIONS", "document", "number", "stamp"]

#: Section id -> heading, in page order.
SECTIONS = {
    "summary": "Summary",
    "quality": "Satisfaction and failures over time",
    "latency": "Latency",
    "agents": "Agent mix and drift",
    "calibration": "Router calibration",
    "points": "Decision points",
    "abtests": "A/B tests",
    "failures": "Failure patterns",
    "queue": "Annotation queue",
    "models": "Model versions",
    "drift": "Drift events",
}
#: Fewest labeled route decisions for a reliability diagram worth reading.
MIN_LABELED = 20

#: The report's style sheet, shared with the web app.
CSS = """
:root { --ink: #1f2933; --muted: #616e7c; --line: #e4e7eb; --soft: #f5f7fa; --accent: #0072B2; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;
       color: var(--ink); background: #fff; }
header { background: #102a43; color: #fff; padding: 20px 32px 16px; }
header h1 { margin: 0 0 6px; font-size: 22px; font-weight: 600; }
header dl { display: grid; grid-template-columns: max-content 1fr; gap: 2px 14px; margin: 0;
            font-size: 13px; color: #d9e2ec; }
header dt { color: #9fb3c8; }
header dd { margin: 0; }
nav { display: flex; flex-wrap: wrap; gap: 4px 16px; padding: 10px 32px; border-bottom: 1px solid var(--line);
      font-size: 13px; }
nav a { color: var(--accent); text-decoration: none; white-space: nowrap; }
main { max-width: 1120px; margin: 0 auto; padding: 8px 32px 48px; }
section { border-bottom: 1px solid var(--line); padding: 10px 0 18px; }
h2 { font-size: 18px; margin: 16px 0 8px; }
h3 { font-size: 15px; margin: 14px 0 6px; }
p.note { color: var(--muted); margin: 4px 0 10px; font-size: 13px; }
p.empty { color: var(--muted); background: var(--soft); border: 1px dashed #cbd2d9; border-radius: 6px;
          padding: 12px 14px; margin: 8px 0; }
.tiles { display: grid; grid-template-columns: repeat(auto-fill, minmax(170px, 1fr)); gap: 10px;
         margin: 8px 0 12px; }
.tile { background: var(--soft); border: 1px solid var(--line); border-radius: 8px; padding: 10px 12px; }
.tile .label { color: var(--muted); font-size: 12px; }
.tile .value { font-size: 22px; font-weight: 600; }
.tile .sub { color: var(--muted); font-size: 12px; }
figure { margin: 6px 0 10px; }
figure svg { width: 100%; height: auto; display: block; }
table { border-collapse: collapse; width: 100%; margin: 6px 0 12px; font-size: 13px; }
th, td { text-align: left; vertical-align: top; padding: 6px 8px; border-bottom: 1px solid var(--line); }
th { background: var(--soft); font-weight: 600; white-space: nowrap; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td ul { margin: 0; padding-left: 16px; }
code, .query { font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size: 12px; }
.badge { display: inline-block; border-radius: 10px; padding: 1px 8px; font-size: 12px; font-weight: 600;
         background: #e4e7eb; }
.badge.deploy { background: #d5f5e3; color: #1e8449; }
.badge.keep { background: #fadbd8; color: #a93226; }
.badge.continue { background: #fdebd0; color: #9c640c; }
.badge.high { background: #fadbd8; color: #a93226; }
.badge.medium { background: #fdebd0; color: #9c640c; }
"""


def stamp(ts: float | None) -> str:
    """A unix time as ``2025-01-31 14:05 UTC`` (``n/a`` when unknown)."""
    return "n/a" if ts is None else datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M UTC")


def number(value: float | None, digits: int = 2, *, percent: bool = False) -> str:
    """A figure for the page: ``n/a`` when unknown, thousands separated, or a percentage."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if percent:
        return f"{value * 100:.{max(digits - 1, 0)}f}%"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:,.{digits}f}"


def _empty(what: str) -> str:
    return f'<p class="empty">No data: {what}.</p>'


def _note(text: str) -> str:
    return f'<p class="note">{text}</p>'


def _figure(svg: str) -> str:
    return f"<figure>{svg}</figure>"


def _table(
    r: ReportData, head: Sequence[str], rows: Iterable[Sequence[Any]], numeric: Iterable[int] = ()
) -> str:
    """A table; cells are redacted and escaped unless given as ``("html", markup)``."""
    nums = set(numeric)
    cls = lambda i: ' class="num"' if i in nums else ""  # noqa: E731
    th = "".join(f"<th{cls(i)}>{r.text(h)}</th>" for i, h in enumerate(head))
    body = []
    for row in rows:
        cells = (c[1] if isinstance(c, tuple) and c[:1] == ("html",) else r.text(c) for c in row)
        body.append("<tr>" + "".join(f"<td{cls(i)}>{c}</td>" for i, c in enumerate(cells)) + "</tr>")
    return f"<table><thead><tr>{th}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _tile(r: ReportData, key: str, label: str, value: str, sub: str = "") -> str:
    return (
        f'<div class="tile" data-metric="{key}"><div class="label">{r.text(label)}</div>'
        f'<div class="value">{r.text(value)}</div><div class="sub">{r.text(sub)}</div></div>'
    )


def _interval(ci: Sequence[float | None] | None, digits: int = 2, *, percent: bool = False) -> str:
    if not ci or ci[0] is None or ci[1] is None:
        return ""
    return f"95% CI {number(ci[0], digits, percent=percent)} to {number(ci[1], digits, percent=percent)}"


def summary(r: ReportData) -> str:
    m = r.summary
    if not m["interactions"]:
        return _empty("no interactions in this window")
    sat, lat, fail, cal = m["satisfaction"], m["latency"], m["failures"], r.calibration
    tiles = [
        _tile(r, "interactions", "Interactions", number(m["interactions"])),
        _tile(
            r,
            "failure_rate",
            "Failure rate (outcomes)",
            number(r.analysis.outcome.rate, 2, percent=True),
            r.analysis.outcome.describe(),
        ),
        _tile(r, "mean_score", "Mean rating", number(sat.mean_score), _interval(sat.mean_score_ci)),
        _tile(r, "share_rated", "Rated", number(sat.share_rated, 2, percent=True), f"{sat.rated:,} ratings"),
        _tile(
            r,
            "thumbs_up_rate",
            "Thumbs up",
            number(sat.thumbs_up_rate, 2, percent=True),
            f"{sat.thumbs_up:,} up, {sat.thumbs_down:,} down",
        ),
        _tile(
            r, "latency_p95", "Latency p95", f"{number(lat.p95_ms, 0)} ms", f"p50 {number(lat.p50_ms, 0)} ms"
        ),
        _tile(
            r,
            "failures",
            "Failed interactions (outcomes)",
            number(r.analysis.counts.get("failures", 0)),
            "a low rating, thumbs down, correction, error or hallucination",
        ),
        _tile(
            r,
            "router_ece",
            "Router calibration error",
            number(cal.ece, 3) if cal.n >= MIN_LABELED else "n/a",
            f"{cal.n:,} labeled decisions" + ("" if cal.n >= MIN_LABELED else f", {MIN_LABELED} needed"),
        ),
    ]
    head = ("rate", "interactions", "observable in")

    def rows(rates: Mapping[str, Any]) -> list[tuple[str, ...]]:
        return [
            (name.replace("_", " "), number(rate.rate, 2, percent=True), number(rate.count), number(rate.n))
            for name, rate in rates.items()
        ]

    outcomes = _table(r, ("outcome: the answer failed", *head), rows(fail.outcome_rates()), numeric=(1, 2, 3))
    diagnostics = _table(
        r,
        ("diagnostic: not a failure", *head),
        rows(fail.diagnostic_rates()),
        numeric=(1, 2, 3),
    )
    return (
        f'<div class="tiles">{"".join(tiles)}</div>'
        + outcomes
        + _note(
            "Diagnostics say how runs went and may explain failures; "
            '<a href="#diagnostics">Failure patterns</a> shows which go with them.'
        )
        + diagnostics
    )


def quality(r: ReportData) -> str:
    series = [b for b in r.series if b["interactions"]]
    if not series:
        return _empty("no interactions in this window")
    if not any(b["satisfaction"].rated for b in series) and not any(
        b["failures"].outcome.rate is not None for b in series
    ):
        return _empty("no ratings and no observable outcome in this window")
    starts = [b["start_time"] for b in series]
    rates = {"failure rate (outcomes)": [b["failures"].outcome.rate for b in series]}
    for name in ("low_rating", "thumbs_down", "correction", "error", "hallucination"):
        rates[name.replace("_", " ")] = [getattr(b["failures"], name).rate for b in series]
    svg = plots.quality_over_time(
        starts,
        r.width,
        [b["satisfaction"].mean_score for b in series],
        [b["satisfaction"].mean_score_ci for b in series],
        {k: v for k, v in rates.items() if any(x is not None for x in v)},
    )
    return _note(
        f"{len(series)} buckets of {_duration(r.width)}; the failure rate is estimated from the outcomes as in "
        "the summary, each outcome's rate is over the interactions where it could be observed. Diagnostics are "
        "not plotted: they are not failures."
    ) + _figure(svg)


def latency(r: ReportData) -> str:
    lat = r.summary["latency"]
    if not r.scan.latencies:
        return _empty("no latencies recorded in this window")
    marks = {"p50": lat.p50_ms, "p95": lat.p95_ms, "p99": lat.p99_ms}
    svg = plots.latency_histogram(r.scan.latencies, marks, r.scan.seen)
    cells = [
        (
            number(lat.n),
            number(lat.mean_ms, 0),
            number(lat.p50_ms, 0),
            number(lat.p95_ms, 0),
            number(lat.p99_ms, 0),
            number(lat.max_ms, 0),
        )
    ]
    table = _table(r, ("interactions", "mean ms", "p50 ms", "p95 ms", "p99 ms", "max ms"), cells, range(6))
    return _figure(svg) + table


def agents(r: ReportData) -> str:
    counts = r.scan.agents
    if not counts:
        return _empty("no interactions in this window")
    buckets = sorted({b for b, _ in counts})
    names = sorted({a for _, a in counts}, key=lambda a: -sum(n for (_, x), n in counts.items() if x == a))
    totals = {b: sum(n for (x, _), n in counts.items() if x == b) for b in buckets}
    shares = {r.text(a): [counts[b, a] / totals[b] for b in buckets] for a in names}
    starts = [b * r.width - r.scan.shift for b in buckets]
    marks = [(e["window_end"] or e["detected_at"], r.text(e["detector"])) for e in r.drift]
    svg = plots.agent_mix(starts, r.width, shares, marks)
    drift = {0: "No drift alarm in this window.", 1: "The drift alarm is marked."}.get(
        len(marks), f"{len(marks)} drift alarms are marked."
    )
    return _note(f"Share of interactions routed to each agent per {_duration(r.width)}. {drift}") + _figure(
        svg
    )


def calibration(r: ReportData) -> str:
    cal, acc = r.calibration, r.router.accuracy
    if cal.n < MIN_LABELED:
        return _empty(
            f"not enough labeled data for a reliability diagram: {cal.n} route decisions with probabilities "
            f"have a known right agent (metadata best_agent or a labeled annotation), {MIN_LABELED} needed"
        )
    accuracy = sum((b.accuracy or 0.0) * b.count for b in cal.bins) / cal.n
    bins = cal.bins
    svg = plots.reliability_diagram(
        [b.lower for b in bins],
        [b.upper for b in bins],
        [b.mean_confidence for b in bins],
        [b.accuracy for b in bins],
        [b.count for b in bins],
    )
    head = _note(
        f"{cal.n:,} labeled route decisions: accuracy {number(accuracy, 2, percent=True)}, expected "
        f"calibration error {number(cal.ece, 3)}"
        + (
            f", Brier score {number(r.router.brier, 3)} (metadata labels, {acc.n:,} decisions)"
            if r.router.brier is not None
            else ""
        )
        + "."
        + _sample_note(r.router.sample)
    )
    return head + _figure(svg)


def points(r: ReportData) -> str:
    if not r.points:
        return _empty("no decision recorded in this window")
    rows = []
    for m in r.points[: r.max_rows]:
        options = ", ".join(_option(m, option, n) for option, n in m.options.items())
        served = ", ".join(
            f"{how} {number(rate.rate, 2, percent=True)}" for how, rate in m.served.items() if rate.count
        )
        reasons = ", ".join(f"{reason} {n:,}" for reason, n in m.fallback_reasons.items())
        rows.append(
            (
                " / ".join("-" if part is None else part for part in m.key),
                number(m.point.decisions),
                number(m.point.interactions),
                number(m.rated.rate, 2, percent=True),
                number(m.annotated.rate, 2, percent=True),
                "n/a"
                if m.accuracy.rate is None
                else f"{number(m.accuracy.rate, 2, percent=True)} of {m.accuracy.n:,}",
                "n/a" if m.calibration is None else f"{number(m.calibration.ece, 3)} ({m.calibration.n:,})",
                served or "n/a",
                reasons or "-",
                options or "-",
                "-" if m.production_version is None else f"v{m.production_version}",
                "-" if m.candidate_version is None else f"v{m.candidate_version}",
            )
        )
    head = (
        "point (graph / node / kind)",
        "decisions",
        "interactions",
        "rated",
        "annotated",
        "accuracy",
        "calibration error",
        "served by",
        "fallback reasons",
        "options (chosen, good ratings)",
        "production",
        "candidate",
    )
    note = _note(
        "Accuracy: the choice against labels of the point. Calibration error: confidence against good or bad "
        "ratings. Served by: how a learned router's decisions were made."
    )
    return note + _table(r, head, rows, numeric=(1, 2, 3, 4, 5, 6))


def _option(m: Any, option: str, chosen: int) -> str:
    if option in m.point.declared:
        return f"{option} (declared)"
    good = m.good_rate[option]
    return f"{option} {chosen:,}" + (
        f" (good {number(good.rate, 2, percent=True)} of {good.n:,})" if good.n else ""
    )


def _sample_note(sample: DetailSample | None) -> str:
    """Where decision-based figures come from, when capture kept decisions for a sample of the runs."""
    if sample is None or not sample.is_sample:
        return ""
    return f" Only runs in the capture sample keep their route decisions: these use {sample.describe()} with a known right agent."


def abtests(r: ReportData) -> str:
    tests = r.ab_tests()
    if not tests:
        return _empty("no A/B test in the store")
    names = [r.text(t["name"]) for t in tests]
    svg = plots.ab_effects(
        names, [t.get("effect") for t in tests], [t.get("confidence_interval") for t in tests]
    )
    rows = []
    for t in tests:
        a, b = t["groups"]["A"], t["groups"]["B"]
        rec = t.get("recommendation", "Continue")
        badge = {"Deploy B": "deploy", "Keep A": "keep"}.get(rec, "continue")
        rows.append(
            (
                t["name"],
                f"{t['model_a']} vs {t['model_b']}",
                t["status"],
                number(a["n"]),
                number(b["n"]),
                number(a["mean"], 3),
                number(b["mean"], 3),
                number(t.get("effect"), 3),
                _interval(t.get("confidence_interval"), 3) or "n/a",
                number(t.get("p_value"), 3),
                ("html", f'<span class="badge {badge}">{r.text(rec)}</span> {r.text(t.get("reason", ""))}'),
            )
        )
    head = (
        "test",
        "A vs B",
        "status",
        "n A",
        "n B",
        "mean A",
        "mean B",
        "effect",
        "interval",
        "p",
        "recommendation",
    )
    return (
        _note("The store keeps each group's running summary, so the plot shows the current estimates.")
        + _figure(svg)
        + _table(r, head, rows, numeric=(3, 4, 5, 6, 7, 9))
    )


def failures(r: ReportData) -> str:
    patterns = r.analysis.patterns[: r.max_rows]
    counts = r.analysis.counts
    if not counts.get("interactions"):
        return _empty("no interactions in this window")
    if not patterns:
        return _empty(f"no failure pattern among {counts['interactions']:,} interactions")
    rows = []
    for p in patterns:
        agents = ", ".join(f"{a} ({n:,})" for a, n in sorted(p.affected_agents.items(), key=lambda x: -x[1]))
        examples = "".join(f'<li class="query">{r.text(q)}</li>' for q in r.queries(p.example_ids[:2]))
        diagnostic = p.details.get("diagnostic")
        kind = p.pattern_type.replace("_", " ")
        rows.append(
            (
                f"{kind} (diagnostic: {diagnostic['verdict'].replace('_', ' ')})" if diagnostic else kind,
                p.description,
                number(p.frequency),
                number(p.rate, 2, percent=True),
                number(p.severity, 2),
                agents or "n/a",
                ("html", f"<ul>{examples}</ul>" if examples else "n/a"),
                p.suggested_fix,
            )
        )
    head = (
        "pattern",
        "what was found",
        "count",
        "rate",
        "severity",
        "agents",
        "example queries",
        "suggested fix",
    )
    outcome = r.analysis.outcome
    note = _note(
        f"{counts.get('failures', 0):,} of {counts['interactions']:,} interactions show an outcome failure (a low "
        f"rating, thumbs down, correction, error or hallucination); estimated failure rate "
        f"{number(outcome.rate, 2, percent=True)} ({outcome.describe()}). Diagnostics (poor retrieval, slow, an "
        "unsure router) are not failures: the table below says which go with the failures"
        + ("; clusters come from a uniform sample of the failures" if r.analysis.sampled else "")
        + "."
    )
    return note + _table(r, head, rows, numeric=(2, 3, 4)) + _diagnostics(r)


def _diagnostics(r: ReportData) -> str:
    """How each diagnostic splits between failed and good interactions, and what that says."""
    found = r.analysis.diagnostics
    if not found:
        return ""
    rows = [
        (
            d.signal.replace("_", " "),
            number(d.prevalence, 2, percent=True),
            number(d.share_failed, 2, percent=True),
            number(d.share_reference, 2, percent=True),
            "rated good" if d.reference == "good" else "not failed",
            "n/a" if d.q_value is None else f"{d.q_value:.1g}",
            d.verdict.replace("_", " "),
            d.describe(),
        )
        for d in found
    ]
    head = ("diagnostic", "seen on", "of failed", "of reference", "reference", "q", "verdict", "reading")
    return (
        '<h3 id="diagnostics">Diagnostics: what goes with the failures</h3>'
        + _note(
            "Each diagnostic's share among the failed interactions against a reference group; "
            "Fisher's exact test, Benjamini-Hochberg over the diagnostics."
        )
        + _table(r, head, rows, numeric=(1, 2, 3, 5))
    )


def queue(r: ReportData) -> str:
    statuses, top = r.queue()
    if not statuses:
        return _empty("the annotation queue is empty")
    note = _note(
        "Current queue: "
        + ", ".join(f"{n:,} {s}" for s, n in sorted(statuses.items()))
        + f"; the {len(top)} pending items of highest priority:"
    )
    if not top:
        return note + _empty("no pending item")
    rows = [
        (
            number(i["priority"], 3),
            i["strategy"],
            i["selection_reason"],
            ("html", f'<span class="query">{r.text(i["interaction"]["user_query"])}</span>')
            if i["interaction"]
            else "(interaction purged)",
            (i["interaction"] or {}).get("agent_selected") or "n/a",
            stamp(i["created_at"]),
        )
        for i in top
    ]
    return note + _table(r, ("priority", "strategy", "why selected", "query", "agent", "queued"), rows, (0,))


def models(r: ReportData) -> str:
    found = r.models()
    if not found:
        return _empty("no model registered")
    out = []
    for m in found:
        where = {}
        for alias, version in m["aliases"].items():
            if version is not None:
                where.setdefault(version, []).append(alias)
        rows = [
            (
                f"v{v['version']}",
                ", ".join(where.get(v["version"], [])) or "-",
                _metrics(v["metrics"]),
                f"v{v['parent_version']}" if v["parent_version"] else "-",
                number(v["data_count"]),
                stamp(v["created_at"]),
                v["created_by"] or "-",
                v["notes"] or "",
            )
            for v in reversed(m["versions"])
        ]
        out.append(f"<h3>{r.text(m['name'])}</h3>")
        out.append(
            _table(
                r,
                ("version", "aliases", "metrics", "parent", "trained on", "registered", "by", "notes"),
                rows,
                numeric=(4,),
            )
        )
        moves = [
            (
                stamp(h["moved_at"]),
                h["alias"],
                h["action"],
                f"{'v' + str(h['previous_version']) if h['previous_version'] else '-'} -> v{h['version']}",
                h["reason"] or "",
                h["actor"] or "",
            )
            for h in reversed(m["history"])
        ]
        if moves:
            out.append(_table(r, ("moved", "alias", "action", "version", "reason", "by"), moves))
    return "".join(out)


def drift_events(r: ReportData) -> str:
    events = r.drift[: r.max_rows]
    if not events:
        return _empty("no drift alarm in this window")
    rows = [
        (
            stamp(e["detected_at"]),
            e["detector"],
            e["method"],
            ("html", _severity(r, e["severity"])),
            number(e["statistic"], 3),
            number(e["threshold"], 3),
            number(e["p_value"], 4),
            ", ".join(map(str, e["features"])) or "-",
            f"{stamp(e['window_start'])} to {stamp(e['window_end'])}",
        )
        for e in events
    ]
    head = ("detected", "detector", "test", "severity", "statistic", "threshold", "p", "features", "window")
    return _table(r, head, rows, numeric=(4, 5, 6))


def document(r: ReportData, title: str, bodies: Mapping[str, str]) -> str:
    """The whole page: header (store, window, generation time), contents, then each section."""
    s = r.stats
    if r.start is None and r.end is None and not s["total_interactions"]:
        covered = "all interactions (none stored)"
    elif r.start is None and r.end is None:
        covered = f"all interactions ({stamp(s['first_timestamp'])} to {stamp(s['last_timestamp'])})"
    else:
        covered = f"{stamp(r.start) if r.start is not None else 'the first interaction'} to {stamp(r.end)}"
    facts = {
        "Store": r.store.engine.url.render_as_string(hide_password=True),
        "Window": covered,
        "Interactions": number(s["total_interactions"]),
        "Generated": stamp(time.time()),
    }
    header = "".join(f"<dt>{r.text(k)}</dt><dd>{r.text(v)}</dd>" for k, v in facts.items())
    toc = "".join(f'<a href="#{key}">{r.text(name)}</a>' for key, name in SECTIONS.items())
    sections = "".join(
        f'<section id="{key}"><h2>{r.text(name)}</h2>{bodies[key]}</section>'
        for key, name in SECTIONS.items()
    )
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{r.text(title)}</title><style>{CSS}</style></head><body>"
        f"<header><h1>{r.text(title)}</h1><dl>{header}</dl></header><nav>{toc}</nav>"
        f"<main>{sections}</main></body></html>\n"
    )


def _metrics(metrics: Mapping[str, Any] | None) -> str:
    if not metrics:
        return "-"
    parts = []
    for key, value in metrics.items():
        shown = number(value, 3) if isinstance(value, int | float) and not isinstance(value, bool) else value
        parts.append(f"{key} {shown}")
    return ", ".join(parts)


def _severity(r: ReportData, severity: str) -> str:
    return f'<span class="badge {r.text(severity)}">{r.text(severity)}</span>'


def _duration(seconds: float) -> str:
    for unit, size in (("week", 604800), ("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            n = int(seconds // size)
            return f"{n} {unit}{'s' if n > 1 else ''}" if n > 1 else unit
    return f"{seconds:g} seconds" if seconds != 1 else "second"
