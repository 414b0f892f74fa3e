"""Find what fails in captured traffic and pick what is worth a human's label.

    python examples/analyze_and_select.py [database-url]

Fills a store with synthetic interactions that carry planted failure themes (or uses the given database
as it is, if it already holds interactions), prints the failure rate (outcomes: low ratings, thumbs down,
corrections, errors, hallucinations), which diagnostics (poor retrieval, slow answers, an unsure router) go
with the failures, the failure patterns with their suggested fixes and the strongest attributions, queues 20 interactions for annotation with the reason for each, and prints the
day's quality metrics.
"""

from __future__ import annotations

import sys

from cl_plugin.graphs.failures import planted_failures

from cl_plugin import (
    ActiveLearningSelector,
    FailurePatternAnalyzer,
    ProductionInteraction,
    Store,
    store_metrics,
)
from cl_plugin.privacy import Sanitizer
from cl_plugin.store import Batch
from cl_plugin.store.rows import row_from_interaction


def main(url: str = "sqlite://") -> None:
    store = Store.from_url(url).setup()
    if store.count_interactions() == 0:
        rows, _ = planted_failures(3000, seed=1)
        sanitizer = Sanitizer()
        store.write(
            Batch(
                {
                    "interactions": [
                        row_from_interaction(ProductionInteraction.from_dict(r), sanitizer) for r in rows
                    ]
                }
            )
        )
    interactions = store.query_interactions(limit=10_000)

    analysis = FailurePatternAnalyzer({"min_cluster_size": 5, "similarity_threshold": 0.7}).analyze(
        interactions
    )
    outcome = analysis.outcome
    print(
        f"{analysis.counts['failures']} of {analysis.counts['interactions']} interactions failed; "
        f"estimated failure rate {outcome.rate:.1%} ({outcome.describe()})"
    )
    print("diagnostics, not failures themselves:")
    for d in analysis.diagnostics:
        print(f"  {d.signal} [{d.verdict}]: {d.describe()}")
    print()
    for pattern in analysis.patterns[:5]:
        print(
            f"{pattern.pattern_type} (rate {pattern.rate:.0%}, severity {pattern.severity:.2f}): {pattern.description}"
        )
        print(f"  fix: {pattern.suggested_fix}\n")
    print("strongest contributors:")
    for row in [a for a in analysis.attribution if a.significant and a.lift > 1][:5]:
        print(
            f"  {row.factor}={row.level}: {row.rate:.0%} fail vs {row.baseline_rate:.0%} (q={row.q_value:.1g})"
        )

    selector = ActiveLearningSelector({"selection_strategy": "hybrid", "diversity_weight": 0.3})
    candidates = selector.select_for_annotation(interactions, budget=20, exclude_ids=store.queue.queued_ids())
    print(f"\nqueued {store.queue.enqueue(candidates)} for annotation, for example:")
    for c in candidates[:3]:
        print(f"  {c.user_query[:70]!r}: {c.selection_reason}")

    metrics = store_metrics(store)
    s = metrics["satisfaction"]
    print(f"\n{metrics['interactions']} interactions, {s.rated} rated, mean stars {s.mean_score:.2f}")
    store.close()


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "sqlite://")
