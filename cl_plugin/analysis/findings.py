"""What one failure analysis found: :class:`FailureAnalysis`, with its :class:`Attribution` and :class:`Diagnostic` rows."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from cl_plugin.analysis.clustering import QueryCluster
from cl_plugin.analysis.signals import _WORDS
from cl_plugin.outcomes import OutcomeCounter, OutcomeRate
from cl_plugin.records import FailurePattern

if TYPE_CHECKING:
    pass


__all__ = ["Attribution", "Diagnostic", "FailureAnalysis"]


@dataclass(frozen=True, slots=True)
class Attribution:
    """How the failure rate at one level of one factor compares with the rest.

    Attributes:
        factor: ``"agent"``, ``"node"``, ``"retrieval_quality"``, ``"latency"``, ``"confidence"``,
            ``"query_cluster"`` or ``"time_window"``.
        level: the level (an agent name, a node, a bucket such as ``"5-10s"``, a cluster's terms, a window).
        n: interactions at this level (for ``query_cluster``: in the traffic sample).
        failures: failed interactions among them.
        rate: ``failures / n``.
        baseline_rate: the failure rate of the other interactions where the factor is known.
        lift: ``rate / baseline_rate`` (``inf`` when the baseline has no failure).
        ci_low: lower end of the Wilson 95% interval of ``rate``.
        ci_high: upper end of that interval.
        p_value: two-sided Fisher exact test of level against rest.
        q_value: Benjamini-Hochberg adjusted p-value over every test of the analysis.
        significant: ``q_value <= 0.05``.
    """

    factor: str
    level: str
    n: int
    failures: int
    rate: float
    baseline_rate: float
    lift: float
    ci_low: float
    ci_high: float
    p_value: float
    q_value: float
    significant: bool


@dataclass(frozen=True, slots=True)
class Diagnostic:
    """How often a diagnostic signal goes with failures: the failed interactions against a reference group.

    Attributes:
        signal: ``"poor_retrieval"``, ``"slow"`` or ``"low_confidence"``.
        observable: interactions where the signal could be seen (for ``poor_retrieval``: that retrieved).
        count: those where it was seen.
        prevalence: ``count / observable``.
        failed: failed interactions among the observable ones; ``failed_with`` of them show the signal.
        reference: ``"good"`` (rated well, nothing failed) or ``"other"`` (nothing failed; used when fewer
            than 5 observable interactions were rated well).
        reference_n: interactions of the reference group; ``reference_with`` of them show the signal.
        share_failed: ``failed_with / failed``.
        share_reference: ``reference_with / reference_n``.
        lift: ``share_failed / share_reference`` (``inf`` when no reference interaction shows it).
        p_value: two-sided Fisher exact test of the two shares.
        q_value: Benjamini-Hochberg adjusted over the diagnostics of the analysis.
        verdict: ``"explains"``, ``"independent"``, ``"protective"``, ``"ubiquitous"`` or ``"too_few"``
            (see the module docstring).
        attributable: failures showing the signal beyond what the reference share predicts
            (``failed_with - failed * share_reference``, at least 0).
    """

    signal: str
    observable: int
    count: int
    prevalence: float
    failed: int
    failed_with: int
    reference: str
    reference_n: int
    reference_with: int
    share_failed: float | None
    share_reference: float | None
    lift: float | None
    p_value: float | None
    q_value: float | None
    verdict: str
    attributable: int

    def describe(self) -> str:
        """One sentence: how the signal splits between failed and reference interactions, and the verdict."""
        word = _WORDS[self.signal]
        ref = "good ones" if self.reference == "good" else "others"
        if self.share_failed is None or self.share_reference is None:
            split = ""
        else:
            split = (
                f"{self.share_failed:.0%} of the {self.failed:,} failed interactions had {word}, against "
                f"{self.share_reference:.0%} of the {self.reference_n:,} {ref}"
            )
        q = f" (q = {self.q_value:.1g})" if self.q_value is not None else ""
        verdict = {
            "explains": f"{split}{q}: it goes with the failures",
            "independent": f"{split}{q}: it does not vary with outcomes, so it does not explain them",
            "protective": f"{split}{q}: it goes with good outcomes, not with failures",
            "ubiquitous": (
                f"seen on {self.prevalence:.0%} of the {self.observable:,} interactions that could show it, "
                f"failed or not ({split}): too common to tell failures apart; check its threshold"
            ),
            "too_few": f"too few failed or {'good' if self.reference == 'good' else 'other'} interactions to "
            "tell whether it goes with failures" + (f" ({split})" if split else ""),
        }[self.verdict]
        return verdict[0].upper() + verdict[1:] + "."


@dataclass(slots=True)
class FailureAnalysis:
    """Everything one analysis found.

    Attributes:
        patterns: failure patterns, most important first: outcome patterns and explaining diagnostics by
            severity x failures, then the diagnostics that do not explain failures.
        attribution: every level test, most significant over-represented levels first.
        clusters: clusters of similar failed queries, largest first.
        counts: ``interactions``, ``failures`` (interactions with an outcome failure), each signal's count
            and its ``observable_<signal>`` count, ``routing_mistake``, the sizes of the samples
            (``failure_sample``, ``traffic_sample``), and the interactions whose node-level detail is in the
            capture sample (``detail_sample``: all of them without sampling) or was kept only because they
            raised (``detail_kept_errors``).
        sampled: whether clustering used a sample of the failures.
        outcome: the estimated share of interactions that failed, and what it rests on.
        diagnostics: one :class:`Diagnostic` per diagnostic signal seen at least once, explaining ones first.
    """

    patterns: list[FailurePattern] = field(default_factory=list)
    attribution: list[Attribution] = field(default_factory=list)
    clusters: list[QueryCluster] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    sampled: bool = False
    outcome: OutcomeRate = field(default_factory=lambda: OutcomeCounter().result())
    diagnostics: list[Diagnostic] = field(default_factory=list)
