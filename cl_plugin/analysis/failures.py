"""FailurePatternAnalyzer: systematic failure modes in production interactions, and what they go with.

The analyzer reads each interaction once (:mod:`~cl_plugin.analysis.signals`: what it shows;
:mod:`~cl_plugin.analysis.tally`: the counts and samples), then tests and ranks
(:mod:`~cl_plugin.analysis.patterns`) into a :class:`~cl_plugin.analysis.findings.FailureAnalysis`.

**What a failure is.** An interaction fails when it shows an *outcome* (:mod:`cl_plugin.outcomes`):

- ``low_rating``: a star rating below ``low_rating_threshold`` (default 3), or a thumbs down;
- ``error``: ``error_occurred``, or a ``failed_node`` in its metadata;
- ``hallucination``: ``hallucination_detected``;
- ``correction``: the user corrected the answer.

*Diagnostics* say how a run went and may explain a failure, but are not failures:

- ``poor_retrieval``: ``retrieval_failed``, or ``retrieval_quality`` below :data:`POOR_RETRIEVAL_QUALITY`;
- ``slow``: ``latency_ms`` above ``slow_response_ms`` (default 5000);
- ``low_confidence``: the router chose with ``agent_confidence`` below :data:`LOW_CONFIDENCE`.

Missing is missing: an unrated interaction is neither a bad rating nor a good one, a run without retrieval
(``retrieval_quality`` and ``retrieval_failed`` both ``None``) shows no retrieval signal, and each signal's
rate is taken over the interactions where it could be seen. ``FailureAnalysis.outcome`` estimates the share
of interactions that failed (:class:`~cl_plugin.outcomes.OutcomeRate`): errors over every run, the users'
verdicts over the rated ones.

**Diagnostics as explanations.** Each diagnostic is compared between the failed interactions and the good
ones (rated well and not failed; the other interactions when too few were rated): "62% of the failed had
poor retrieval, against 8% of the good ones", with Fisher's exact test and Benjamini-Hochberg over the
diagnostics (:class:`Diagnostic`). A diagnostic is then *explains* (significantly more common among
failures), *independent* (no significant difference), *protective* (more common among good ones),
*ubiquitous* (seen on 90% or more of the interactions that could show it, so it cannot tell failures
apart) or *too_few* (under 5 failed or 5 reference interactions). Its pattern ranks by the failures it
accounts for beyond the reference share, and only an explaining diagnostic ranks among the failures; the
others are listed last and say why.

A routing mistake is a cause, not an outcome: the router chose an agent that metadata (``best_agent``,
``correct_agent`` or ``expected_agent``) says was wrong, or an interaction failed after a choice made with
confidence below :data:`LOW_CONFIDENCE`, or, within a cluster of similar queries, one agent fails
significantly more often than the cluster's other agents (Fisher's exact test, Benjamini-Hochberg over all
such comparisons).

**Attribution.** For each factor (agent, graph node, retrieval-quality bucket, latency bucket, router
confidence bucket, query cluster, time window) and each of its levels, the failure rate of the interactions
at that level is compared with the rest: Wilson 95% interval, Fisher's exact test, Benjamini-Hochberg over
every test of the run. Significant over-represented levels are quoted in the patterns and their fixes. A node
level compares the interactions that ran the node with those that did not.

**Scale.** :meth:`FailurePatternAnalyzer.analyze_stream` reads chunks (``Store.iter_interactions``) and keeps
counts plus two bounded uniform samples (failures, for clustering; all traffic, for per-cluster failure rates
by agent), so memory does not grow with the data. Counts are exact; cluster figures come from the samples
and say so (``details["estimated"]``).

**Capture sampling.** Every figure above comes from interaction rows, which a sampling
:class:`~cl_plugin.CaptureHandler` writes for every run, so they stay exact; ``counts`` says how many of the
rows also have node-level detail in the unbiased sample (``detail_sample``) and how many kept it only
because they raised (``detail_kept_errors``). Errors the rows do not tie to a node (captured runs name
none) can be attributed with the node runs: pass ``nodes=`` (from :func:`cl_plugin.analysis.metrics.node_metrics`),
whose figures are computed over the sample, and the pattern quotes them with the sample's size.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from cl_plugin.analysis.findings import Attribution, Diagnostic, FailureAnalysis
from cl_plugin.analysis.patterns import PatternReport
from cl_plugin.analysis.signals import DIAGNOSTIC_SIGNALS, OUTCOME_SIGNALS, SIGNALS, failure_signals
from cl_plugin.analysis.tally import Tally
from cl_plugin.config import ContinualLearningConfig, FailureAnalysisConfig, resolve_section
from cl_plugin.outcomes import LOW_CONFIDENCE, POOR_RETRIEVAL_QUALITY
from cl_plugin.records import FailurePattern

if TYPE_CHECKING:
    from langchain_core.embeddings import Embeddings

    from cl_plugin.analysis.metrics.nodes import NodeMetrics

__all__ = [
    "DIAGNOSTIC_SIGNALS",
    "LOW_CONFIDENCE",
    "OUTCOME_SIGNALS",
    "POOR_RETRIEVAL_QUALITY",
    "SIGNALS",
    "Attribution",
    "Diagnostic",
    "FailureAnalysis",
    "FailurePatternAnalyzer",
    "failure_signals",
]


class FailurePatternAnalyzer:
    """Finds systematic failure modes in production interactions and what they are associated with.

    Args:
        config: the ``failure_analysis`` section as a dict or :class:`FailureAnalysisConfig`, or a whole
            :class:`ContinualLearningConfig`. Keys: ``min_cluster_size``, ``similarity_threshold``,
            ``slow_response_ms``, ``low_rating_threshold``, and ``enabled`` and ``analyze_frequency``, which
            schedule the analysis in the maintenance graph and do not change what it finds.
        embeddings: a LangChain ``Embeddings`` used to cluster failed queries; None uses TF-IDF.
        **kwargs: keys that override ``config``.

    Raises:
        ConfigError: a key is unknown or a value is out of range; the message names the key.

    Example:
        >>> analyzer = FailurePatternAnalyzer({"min_cluster_size": 5, "similarity_threshold": 0.7})
        >>> rows = [{"interaction_id": f"i{i}", "user_query": "refund in EUR", "agent_selected": "TRM",
        ...          "user_feedback_score": 1.0 if i % 2 else 5.0} for i in range(20)]
        >>> [p.pattern_type for p in analyzer.analyze_failures(rows)]
        ['low_rating', 'failure_cluster']
    """

    def __init__(
        self,
        config: dict[str, Any] | FailureAnalysisConfig | ContinualLearningConfig | None = None,
        *,
        embeddings: Embeddings | None = None,
        **kwargs: Any,
    ) -> None:
        self.config = resolve_section(
            FailureAnalysisConfig, config, component="FailurePatternAnalyzer", **kwargs
        )
        self.embeddings = embeddings

    def analyze_failures(self, interactions: Iterable[Any]) -> list[FailurePattern]:
        """The failure patterns present in ``interactions``, most important (severity x frequency) first.

        Args:
            interactions: dicts (as from ``query_interactions``) or :class:`ProductionInteraction` records.

        Returns:
            One :class:`FailurePattern` per pattern found; an empty list when nothing failed.
        """
        return self.analyze(interactions).patterns

    def attribute_failures(self, interactions: Iterable[Any]) -> list[Attribution]:
        """Failure rate per level of each factor against the rest, significant over-represented levels first.

        Args:
            interactions: dicts or records.

        Returns:
            One :class:`Attribution` per tested level.
        """
        return self.analyze(interactions).attribution

    def analyze(
        self,
        interactions: Iterable[Any],
        *,
        sample_size: int = 20_000,
        nodes: NodeMetrics | None = None,
    ) -> FailureAnalysis:
        """Patterns, attribution, clusters and counts of ``interactions``.

        Args:
            interactions: dicts or records.
            sample_size: most failures kept for clustering (and traffic kept for per-cluster rates).
            nodes: per-node figures of the same interactions (:func:`cl_plugin.analysis.metrics.node_metrics`), which
                attribute the errors that the rows do not tie to a node.

        Returns:
            The :class:`FailureAnalysis`.
        """
        return self.analyze_stream([interactions], sample_size=sample_size, nodes=nodes)

    def analyze_stream(
        self,
        chunks: Iterable[Iterable[Any]],
        *,
        sample_size: int = 20_000,
        nodes: NodeMetrics | None = None,
    ) -> FailureAnalysis:
        """Analyse interactions that arrive in chunks, such as ``Store.iter_interactions(chunk_size=...)``.

        Memory is bounded by ``sample_size``: counts and factor tables are exact, clusters are fit on a
        uniform sample of the failures.

        Args:
            chunks: iterables of dicts or records.
            sample_size: most failures kept for clustering (and traffic kept for per-cluster rates).
            nodes: as in :meth:`analyze`.

        Returns:
            The :class:`FailureAnalysis`.
        """
        if sample_size < 1:
            raise ValueError(f"sample_size must be >= 1 (got {sample_size})")
        tally = Tally(self.config, sample_size)
        add = tally.add
        for chunk in chunks:
            for item in chunk:
                add(item)
        return PatternReport(tally, self.config, self.embeddings, nodes).build()
