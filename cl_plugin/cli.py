"""The ``cl-plugin`` command. Thin: each subcommand calls library functions and prints.

Every subcommand takes ``--store URL`` (default: the ``CL_PLUGIN_STORE`` environment variable):

* ``demo``: the whole loop on simulated traffic, in embedded SQLite (:func:`cl_plugin.graphs.demo.run_demo`);
* ``migrate``: create the store's tables, or bring them to the newest migration (the commands that write
  do it themselves; those that only read, ``stats``, ``report`` and ``export``, ask for it);
* ``maintain``: one maintenance cycle, or the resumption of a paused or crashed one;
* ``annotate``: label the pending annotation queue in the terminal;
* ``stats``: quality metrics of a time window;
* ``report``: the HTML report;
* ``purge``: delete interactions (and what derives from them) older than the retention period, and with
  ``--backups DIR`` the expired backup files;
* ``export``: interactions as JSON Lines, or as a LangSmith dataset;
* ``serve``: the live local dashboard (:mod:`cl_plugin.web`).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, TextIO

STORE_ENV = "CL_PLUGIN_STORE"


def _open_store(args: argparse.Namespace, *, write: bool = True) -> Any:
    """The store of ``--store``; a command that writes brings its schema up to date, one that reads does not
    (its reads then raise, naming ``cl-plugin migrate``)."""
    from cl_plugin.store import Store

    if not args.store:
        raise SystemExit(f"cl-plugin {args.command}: pass --store URL or set {STORE_ENV}")
    store = Store.from_url(args.store)
    if write:
        store.ensure_schema()
    return store


def _migrate(args: argparse.Namespace) -> int:
    store = _open_store(args, write=False)
    before = store.schema_version()
    after = store.setup().schema_version()
    if before == after:
        print(f"{store.safe_url} is at schema version {after} already")
    else:
        print(f"migrated {store.safe_url} from schema version {before or '(empty)'} to {after}")
    store.close()
    return 0


def _bar(total: int, desc: str) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="q", leave=False, file=sys.stderr, disable=None)


# -- demo -------------------------------------------------------------------------------------------------


def _demo(args: argparse.Namespace) -> int:
    from cl_plugin.graphs.demo import run_demo

    bars: list[Any] = []

    def progress(line: str, total: int) -> Callable[[], None] | None:
        while bars:
            bars.pop().close()
        print(f"- {line}", file=sys.stderr, flush=True)
        if not total:
            return None
        bars.append(_bar(total, "queries"))
        return lambda: bars[-1].update(1)

    result = run_demo(
        store_url=args.store,
        storage=args.storage,
        interactions=args.interactions,
        seed=args.seed,
        progress=progress,
    )
    while bars:
        bars.pop().close()
    print(f"ran the continual-learning loop in {result.elapsed_s:.1f} s; store: {result.store_url}\n")
    header = f"{'phase':<22} {'model':>5} {'queries':>7} {'routing':>8} {'answers':>8} {'stars':>6} {'low-rated':>9}"
    print(header)
    print("-" * len(header))
    for name, model, r in result.phases:
        print(
            f"{name:<22} {model:>5} {r.invocations:>7} {_pct(r.routing_accuracy):>8} {_pct(r.accuracy):>8} "
            f"{_num(r.mean_stars):>6} {_pct(r.failure_rate):>9}"
        )
    print(
        "\nrouting: first route was the best agent for the task; answers: right answers; low-rated: 1-2 stars"
    )
    for i, cycle in enumerate(result.cycles, start=1):
        print(
            f"\nmaintenance cycle {i}: {cycle['status']}{' (' + cycle['reason'] + ')' if cycle.get('reason') else ''}"
        )
        for step, report in cycle.get("steps", {}).items():
            print(f"  {step:<17} {_step_summary(step, report)}")
    if result.ab_test is not None:
        groups = result.ab_test["groups"]
        print(
            f"\nA/B test {result.ab_test['test_id']}: {result.ab_test['recommendation']} "
            f"(success A {_pct(groups['A']['mean'])} of {groups['A']['n']}, B {_pct(groups['B']['mean'])} of "
            f"{groups['B']['n']}; {result.ab_test['reason']})"
        )
    if result.report_path:
        print(f"\nHTML report: {result.report_path}")
    return 0


def _step_summary(step: str, report: dict[str, Any]) -> str:
    """One line per maintenance step, from the numbers it reported."""
    if step == "load_window":
        return f"{report['count']} interactions"
    if step == "validate":
        return f"{report['valid']} valid, {report['invalid']} invalid"
    if step == "drift_check":
        if report.get("status") != "completed":
            return f"not run: {report.get('reason')}"
        drifted = ", ".join(report["drifted_features"]) or "nothing"
        return f"drift {'detected' if report['drifted'] else 'not detected'} ({drifted} vs the {report['against']})"
    if step == "analyze_failures":
        rate = report.get("failure_rate")
        text = f"failure rate {_pct(rate)} (outcomes), " if "failure_rate" in report else ""
        text += f"{report['patterns']} failure patterns" + (
            f", top: {report['top'][0]['type']}" if report["top"] else ""
        )
        leads = [s for s, verdict in (report.get("diagnostics") or {}).items() if verdict == "explains"]
        return text + (f"; goes with failures: {', '.join(leads)}" if leads else "")
    if step == "select":
        return f"{report['selected']} interactions queued for labels"
    if step == "annotate":
        return f"{report['labeled']} labeled from {report['mode']}, {report['skipped']} left"
    if step == "retrain":
        metrics = report.get("metrics") or {}
        c, p = metrics.get("candidate"), metrics.get("production")
        if not c:
            return f"{report['status']}: {report.get('reason')}"
        base = f" vs production {_pct(p['accuracy'])}" if p else ""
        return f"{report['status']}: held-out routing accuracy {_pct(c['accuracy'])}{base} ({metrics['validation_samples']} labels)"
    if step == "evaluate":
        return f"gate {'passed' if report['passed'] else 'not passed'}: {report['reason']}"
    if step == "ab_test":
        return report.get("reason") or f"started {report['test_id']}"
    if step == "review_ab_tests":
        tests = report["tests"]
        return "; ".join(f"{t['test_id']}: {t['recommendation']}" for t in tests) or "no running test"
    if step == "promote":
        return "production is now " + ", ".join(f"{k} v{v}" for k, v in sorted(report["promoted"].items()))
    return str(report)


# -- maintain ---------------------------------------------------------------------------------------------


def _maintain(args: argparse.Namespace) -> int:
    from cl_plugin.graphs.maintenance import checkpointer, resume_paused_run, run_maintenance

    store = _open_store(args)
    config = _maintenance_config(args)
    with checkpointer(args.checkpoints) as saver:
        if args.thread and args.resume:
            try:
                state = resume_paused_run(store, saver, args.thread, config=config)
            except LookupError as exc:
                raise SystemExit(str(exc)) from None
        else:
            state = run_maintenance(store, config=config, checkpointer=saver, thread_id=args.thread)
    if "__interrupt__" in state:
        items = state["__interrupt__"][0].value["items"]
        print(f"maintenance run {state['run_id']} is paused for labels on {len(items)} interactions.")
        print(f"  label them:  cl-plugin annotate --store {args.store}")
        print(
            f"  then resume: cl-plugin maintain --store {args.store} --checkpoints {args.checkpoints} "
            f"--thread {state['thread_id']} --resume"
        )
        return 0
    print(
        f"maintenance run {state.get('run_id')}: {state['status']}"
        + (f" ({state['reason']})" if state.get("reason") else "")
    )
    for step, report in state.get("steps", {}).items():
        print(f"  {step:<17} {_step_summary(step, report)}")
    store.close()
    return 0


def _maintenance_config(args: argparse.Namespace) -> Any:
    from cl_plugin.config import load_config

    config = load_config(args.config)
    overrides = {
        k: v for k, v in (("annotation", args.annotation), ("model_dir", args.model_dir)) if v is not None
    }
    if overrides:
        config = config.model_copy(update={"maintenance": config.maintenance.model_copy(update=overrides)})
    return config


# -- annotate ---------------------------------------------------------------------------------------------


def _annotate(args: argparse.Namespace, stdin: TextIO | None = None) -> int:
    from cl_plugin.learning.points import choice_label, label_point
    from cl_plugin.records import PointRef

    stdin = stdin or sys.stdin
    try:
        only = PointRef.parse(args.point) if args.point else None
    except ValueError as exc:
        raise SystemExit(f"cl-plugin annotate --point: {exc}") from None
    store = _open_store(args)
    pending = store.queue.items("pending", limit=args.limit)
    points = {p.key: p for p in store.decision_points()}
    work = []
    for item in pending:
        row = store.get_interaction(item["interaction_id"]) or {}
        found = label_point(store, row, points, only)
        if only is None or found is not None:
            work.append((item, row, found))
    if not work:
        where = f" with a decision at {only}" if only else ""
        print(f"the annotation queue has no pending items{where}")
        return 0
    agents = _agents(args, store) if any(found is None for _, _, found in work) else []
    if not agents and any(found is None for _, _, found in work):
        print("no agent is known to label with: pass --agents name1,name2,...")
        return 2
    print(f"{len(work)} pending items. For each: the number or name of the right choice, s = skip, q = quit.")
    labeled = skipped = 0
    menu = None
    for item, row, found in work:
        if found is None:
            choices, noun, said = agents, "agent", f"routed to {row.get('agent_selected')}"
        else:
            point, chosen = found
            choices, noun, said = point.all_options, "option", f"chose {chosen} at {PointRef.parse(point)}"
        keys = {str(i): choice for i, choice in enumerate(choices, 1)}
        for choice in choices:  # a name typed in any case is the most chosen option of that name
            keys.setdefault(choice.lower(), choice)
        if (noun, choices) != menu:
            menu = (noun, choices)
            where = "agents" if found is None else f"options at {PointRef.parse(found[0])}"
            print(f"\n{where}: " + ", ".join(f"{i} = {c}" for i, c in enumerate(choices, 1)))
        print(f"\n[{item['interaction_id'][:8]}] {said}; {item.get('reason') or ''}")
        print(f"  query: {row.get('user_query', '')[:300]}")
        print(f"  answer: {(row.get('response') or '')[:200]}")
        answer = _ask(f"  {noun}? ", stdin, keys, noun)
        if answer in (None, "q"):
            break
        if answer == "s":
            store.queue.update(item["item_id"], status="skipped", annotator=args.annotator)
            skipped += 1
        elif answer in keys:
            label = choice_label(found and found[0], keys[answer])
            store.queue.update(item["item_id"], status="labeled", label=label, annotator=args.annotator)
            labeled += 1
    print(f"\nlabeled {labeled}, skipped {skipped}, left {len(work) - labeled - skipped}")
    return 0


def _agents(args: argparse.Namespace, store: Any) -> list[str]:
    """The agents to label with: ``--agents``, else every agent the store's interactions were routed to."""
    if args.agents:
        return list(dict.fromkeys(a.strip() for a in args.agents.split(",") if a.strip()))
    return sorted(a for a in store.statistics()["agent_distribution"] if a)


def _ask(prompt: str, stdin: TextIO, keys: dict[str, str], noun: str = "agent") -> str | None:
    while True:
        print(prompt, end="", flush=True)
        line = stdin.readline()
        if not line:
            return None
        answer = line.strip().lower()
        if answer in (*keys, "s", "q"):
            return answer
        print(f"  answer 1 to {len(set(keys.values()))}, an {noun}'s name, s or q")


# -- stats, report, purge, export -----------------------------------------------------------------------------


def _stats(args: argparse.Namespace) -> int:
    from cl_plugin.analysis.metrics import point_metrics, store_metrics

    store = _open_store(args, write=False)
    metrics = store_metrics(store, window=args.window)
    print(_format_metrics(metrics))
    print(_format_points(point_metrics(store, _registry_records(store))))
    return 0


def _registry_records(store: Any) -> Any:
    """The registry over the store's model records, for reading versions and aliases (no artifact is
    loaded, so the artifact directory is never opened)."""
    from cl_plugin.learning.registry import ModelRegistry

    return ModelRegistry(store, "cache/models/artifacts")


_POINT_COLUMNS = (
    ("decisions", 9),
    ("interactions", 12),
    ("rated", 7),
    ("annotated", 9),
    ("accuracy", 15),
    ("ECE", 6),
    ("model", 7),
    ("fallback", 8),
    ("explored", 8),
    ("production", 10),
    ("candidate", 9),
)


def _format_points(points: list[Any], most_options: int = 6) -> str:
    """A table of the decision points: how often each decides, how much of it is labeled, how right and
    calibrated it is, how it was served and which router versions it has; its options below each row."""
    if not points:
        return "decision points: none captured"
    title = "decision point (graph / node / kind)"
    width = max(len(title), *(len(_where(m.key)) for m in points))
    head = f"  {title:<{width}}" + "".join(f" {name:>{w}}" for name, w in _POINT_COLUMNS)
    lines = ["decision points:", head]
    for m in points:
        acc = m.accuracy
        cells = (
            str(m.point.decisions),
            str(m.point.interactions),
            _pct(m.rated.rate),
            _pct(m.annotated.rate),
            "n/a" if acc.rate is None else f"{_pct(acc.rate)} of {acc.n}",
            "n/a" if m.calibration is None else f"{m.calibration.ece:.3f}",
            *(_pct(m.served[how].rate) for how in ("model", "fallback", "exploration")),
            _version(m.production_version),
            _version(m.candidate_version),
        )
        lines.append(
            f"  {_where(m.key):<{width}}"
            + "".join(f" {c:>{w}}" for c, (_, w) in zip(cells, _POINT_COLUMNS, strict=True))
        )
        shown = [_option(m, option, n) for option, n in list(m.options.items())[:most_options]]
        more = f", +{len(m.options) - most_options} more" if len(m.options) > most_options else ""
        lines.append(f"      options: {', '.join(shown) or '-'}{more}")
        if m.fallback_reasons:
            reasons = ", ".join(f"{reason} {n}" for reason, n in m.fallback_reasons.items())
            lines.append(f"      fallback reasons: {reasons}")
    return "\n".join(lines)


def _option(m: Any, option: str, chosen: int) -> str:
    if option in m.point.declared:
        return f"{option} (declared, never chosen)"
    good = m.good_rate[option]
    return f"{option} {chosen}" + (f" (good {_pct(good.rate)} of {good.n})" if good.n else "")


def _where(key: tuple[Any, ...]) -> str:
    return " / ".join(str(x) if x is not None else "-" for x in key)


def _version(version: int | None) -> str:
    return "-" if version is None else f"v{version}"


def _format_failures(failures: Any, indent: str = "") -> list[str]:
    """The outcomes (the estimated failure rate first, then each outcome's rate, count and the interactions
    where it is observable) and, in a block of their own, the diagnostics."""

    def rates(group: dict[str, Any]) -> list[str]:
        return [
            f"{indent}  {name.replace('_', ' '):<26} {_pct(r.rate):>6}  {r.count:,} of {r.n:,} observable"
            for name, r in group.items()
        ]

    outcome = failures.outcome
    return [
        f"{indent}outcomes (the answer failed):",
        f"{indent}  {'estimated failure rate':<26} {_pct(outcome.rate):>6}  {outcome.describe()}",
        f"{indent}  {'any outcome failure':<26} {'':>6}  {outcome.failures:,} of {outcome.interactions:,}",
        *rates(failures.outcome_rates()),
        f"{indent}diagnostics (may explain failures; not failures):",
        *rates(failures.diagnostic_rates()),
    ]


def _format_metrics(metrics: dict[str, Any], indent: str = "") -> str:
    """Metrics one per line, nested ones indented; per-bin detail is left to the HTML report. The failure
    rates come as two labelled blocks: the outcomes (the answer failed), led by the estimated failure rate,
    and the diagnostics (facts that may explain a failure, not failures)."""
    import dataclasses

    from cl_plugin.analysis.metrics import FailureRates

    lines = []
    for key, value in metrics.items():
        if isinstance(value, FailureRates):
            lines.extend(_format_failures(value, indent))
            continue
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            value = dataclasses.asdict(value)
        if key == "bins" or isinstance(value, list | tuple):
            continue
        if isinstance(value, dict):
            lines.append(f"{indent}{key}:")
            lines.append(_format_metrics(value, indent + "  "))
        elif key.endswith("_time") and isinstance(value, float):
            lines.append(f"{indent}{key:<28} {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(value))}")
        else:
            lines.append(f"{indent}{key:<28} {f'{value:.4g}' if isinstance(value, float) else value}")
    return "\n".join(line for line in lines if line)


def _report(args: argparse.Namespace) -> int:
    from cl_plugin.report import build_report

    store = _open_store(args, write=False)
    print(f"wrote {build_report(store, args.out, window=args.window)}")
    return 0


def _purge(args: argparse.Namespace) -> int:
    store = _open_store(args)
    cutoff = time.time() - args.older_than_days * 86_400
    deleted = store.retention.purge(cutoff)
    print("deleted " + ", ".join(f"{n} from {table}" for table, n in sorted(deleted.items())))
    if args.backups:
        from cl_plugin.store.backup import purge_backups

        print(f"deleted {len(purge_backups(args.backups, cutoff))} backup files from {args.backups}")
    return 0


def _export(args: argparse.Namespace) -> int:
    store = _open_store(args, write=False)
    if args.format == "langsmith":
        from cl_plugin.capture.langsmith import export_to_dataset, sanitizing_client

        result = export_to_dataset(store, sanitizing_client(), args.dataset)
        print(f"exported to LangSmith dataset {args.dataset!r}: {result}")
        return 0
    import orjson

    from cl_plugin.capture.langsmith import attachment_metadata

    total = store.count_interactions()
    written = 0
    with open(args.out, "wb") as out, _bar(total, "export") as bar:
        for chunk in store.iter_interactions(chunk_size=5000):
            attached = store.attachments.for_interactions(row["interaction_id"] for row in chunk)
            for row in chunk:
                if row["interaction_id"] in attached:  # the metadata of its feedback's attachments, no bytes
                    row["attachments"] = attachment_metadata(attached[row["interaction_id"]])
                out.write(
                    orjson.dumps(
                        row,
                        option=orjson.OPT_SERIALIZE_NUMPY
                        | orjson.OPT_NON_STR_KEYS
                        | orjson.OPT_APPEND_NEWLINE,
                    )
                )
            written += len(chunk)
            bar.update(len(chunk))
    print(f"wrote {written} interactions to {args.out}")
    return 0


def _serve(args: argparse.Namespace) -> int:
    from cl_plugin.errors import ConfigError, MissingDependencyError

    try:
        from cl_plugin.web import check_bind, serve
        from cl_plugin.web.security import TOKEN_ENV
    except ImportError:
        raise MissingDependencyError(
            "cl-plugin serve needs the web extra: pip install 'cl-plugin[web]'"
        ) from None
    if not args.store:
        raise SystemExit(f"cl-plugin serve: pass --store URL or set {STORE_ENV}")
    token = args.token or os.environ.get(TOKEN_ENV) or None
    try:
        check_bind(args.host, token)
        print(f"dashboard on http://{args.host}:{args.port}", flush=True)
        serve(
            args.store,
            host=args.host,
            port=args.port,
            token=token,
            config=_maintenance_config(args),
            checkpoints=args.checkpoints,
        )
    except ConfigError as exc:
        print(f"cl-plugin serve: {exc}", file=sys.stderr)
        return 2
    return 0


# -- parser -----------------------------------------------------------------------------------------------


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cl-plugin", description="Continual learning for LangGraph agents.")
    sub = parser.add_subparsers(dest="command", required=True)

    def command(
        name: str, func: Callable[[argparse.Namespace], int], help_text: str
    ) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text)
        p.add_argument(
            "--store", default=os.environ.get(STORE_ENV), help=f"database URL (default: ${STORE_ENV})"
        )
        p.set_defaults(func=func)
        return p

    demo = command(
        "demo", _demo, "the whole loop on simulated traffic: capture, drift, maintenance, A/B, promotion"
    )
    demo.add_argument(
        "--storage", help="folder for the database, models and report (default: a new temp dir)"
    )
    demo.add_argument(
        "--interactions", type=int, default=600, help="queries before the first maintenance cycle"
    )
    demo.add_argument("--seed", type=int, default=0)

    command("migrate", _migrate, "create the store's tables or bring them to the newest migration")

    maintain = command("maintain", _maintain, "run (or resume) one maintenance cycle")
    maintain.add_argument("--config", help="YAML file with a continual_learning: section")
    maintain.add_argument("--annotation", choices=("human", "llm", "feedback", "none"))
    maintain.add_argument("--model-dir", help="registry artifacts and candidates (maintenance.model_dir)")
    maintain.add_argument("--checkpoints", help="SQLite file for the run's checkpoints (needed to resume)")
    maintain.add_argument("--thread", help="the run's thread id: resume a paused or crashed run")
    maintain.add_argument(
        "--resume", action="store_true", help="resume a run paused for labels with the queue's labels"
    )

    annotate = command("annotate", _annotate, "label pending annotation-queue items in the terminal")
    annotate.add_argument("--limit", type=int, default=50)
    annotate.add_argument("--annotator", default=os.environ.get("USER", "cli"))
    annotate.add_argument(
        "--agents", help="comma-separated agents to label with (default: the agents the store has seen)"
    )
    annotate.add_argument(
        "--point",
        help="label only items that decided at this point, graph/node/kind (cl-plugin stats lists them)",
    )

    stats = command("stats", _stats, "quality metrics of a time window")
    stats.add_argument("--window", default="day", help="hour, day, week, or seconds")

    report = command("report", _report, "write the HTML report")
    report.add_argument("--out", default="cl_plugin_report.html")
    report.add_argument("--window", default=None, help="hour, day, week, or seconds (default: everything)")

    purge = command("purge", _purge, "delete interactions older than the retention period")
    purge.add_argument("--older-than-days", type=float, default=90.0)
    purge.add_argument(
        "--backups", help="also delete expired backup files from this folder (<storage>/backups)"
    )

    export = command("export", _export, "export interactions as JSON Lines or a LangSmith dataset")
    export.add_argument("--format", choices=("jsonl", "langsmith"), default="jsonl")
    export.add_argument("--out", default="interactions.jsonl")
    export.add_argument("--dataset", default="cl-plugin-export")

    serve = command("serve", _serve, "the live local dashboard: overview, interactions, A/B, annotation")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (not loopback: needs --token)")
    serve.add_argument("--port", type=int, default=8765)
    serve.add_argument("--token", help="access token every request needs (default: $CL_PLUGIN_SERVE_TOKEN)")
    serve.add_argument("--checkpoints", help="SQLite file of the maintenance checkpoints (to resume runs)")
    serve.add_argument("--config", help="YAML file with a continual_learning: section (for resumed runs)")
    serve.add_argument("--annotation", choices=("human", "llm", "feedback", "none"))
    serve.add_argument("--model-dir", help="registry artifacts and candidates (maintenance.model_dir)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from cl_plugin.errors import StoreSchemaError

    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except StoreSchemaError as exc:
        print(f"cl-plugin {args.command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
