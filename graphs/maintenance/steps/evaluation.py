"""``evaluate``: the gate a candidate must pass to replace production (or to go to an A/B test)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from langgraph.runtime import Runtime

from cl_plugin.config import MaintenanceConfig

from ..context import MaintenanceContext, MaintenanceState, Outcome

# A decision point's candidate that no held-out label shows better goes to an A/B test (when there is one)
# if, on rated decisions, it may lose at most _BOUND_LOSS and may gain at least _BOUND_GAIN (see retraining's
# bounds); so does one whose held-out gain a sign test does not support.
_BOUND_LOSS = 0.02
_BOUND_GAIN = 0.05


def evaluate(state: MaintenanceState, runtime: Runtime[MaintenanceContext]) -> Outcome:
    """Gate the candidate (each decision point's, strictly); one that fails completes the run."""
    ctx = runtime.context
    m = ctx.m
    if "points" in state["retrain"]:
        gates = {
            name: gate(r["metrics"], m, strict=True, ab_test=ctx.config.retraining.enable_ab_test)
            for name, r in state["retrain"]["points"].items()
            if r["status"] == "completed"
        }
        passed = [name for name, g in gates.items() if g["passed"]]
        reason = "; ".join(f"{name}: {g['reason']}" for name, g in gates.items())
        result = {"passed": bool(passed), "reason": reason, "points": gates}
    else:
        result = gate(state["retrain"]["metrics"], m)
    if not result["passed"]:
        reason = f"the candidate did not pass the gate: {result['reason']}"
        return Outcome(result, {"gate": result, "status": "completed", "reason": reason})
    return Outcome(result, {"gate": result})


def gate(
    metrics: Mapping[str, Any], m: MaintenanceConfig, *, strict: bool = False, ab_test: bool = False
) -> dict[str, Any]:
    """Whether the candidate may replace production: enough held-out labels, accuracy gained, calibration
    not worse by more than allowed. ``strict`` (decision points) also refuses a tie, and a gain that a sign
    test over the held-out labels where the two disagree does not support (``max_gain_p_value``): a
    candidate not shown better than the incumbent has not earned a promotion."""
    candidate, production = metrics.get("candidate"), metrics.get("production")
    n = metrics.get("validation_samples", 0)
    if candidate is None:
        return {"passed": False, "reason": "no candidate metrics"}
    if n < m.min_validation_samples:
        return {
            "passed": False,
            "reason": f"{n} held-out labels; maintenance.min_validation_samples is {m.min_validation_samples}",
        }
    if production is None:
        return {"passed": True, "reason": "no production model to compare with", "validation_samples": n}
    gain = candidate["accuracy"] - production["accuracy"]
    # The graph's own policy gives no probabilities: there is no calibration to compare with.
    ece_change = None if production.get("ece") is None else candidate["ece"] - production["ece"]
    failed = []
    bounds = metrics.get("bounds") if strict else None
    paired = metrics.get("paired") if strict else None
    unproven = None  # why only an online test could show the candidate better
    if gain < m.min_accuracy_gain:
        failed.append(f"accuracy gain {gain:+.3f} is below {m.min_accuracy_gain:+.3f}")
    elif strict and gain > 0 and paired is not None and paired["p_value"] > m.max_gain_p_value:
        unproven = (
            f"accuracy gain {gain:+.3f} rests on {paired['wins']} held-out labels won against "
            f"{paired['losses']} lost, not significant (p={paired['p_value']:.3f} > {m.max_gain_p_value})"
        )
    elif strict and gain <= 0:
        if (
            bounds is not None
            and bounds["lower"] >= bounds["incumbent"] - _BOUND_LOSS
            and bounds["upper"] >= bounds["incumbent"] + _BOUND_GAIN
        ):
            # Ratings alone cannot show which changed decision is now right: an online test must.
            unproven = (
                f"no held-out label shows a gain, but on rated decisions it keeps {bounds['kept_good']:.0%} of "
                f"those rated good and changes {bounds['changed_bad'] or 0:.0%} of those rated bad: between "
                f"{bounds['lower'] - bounds['incumbent']:+.3f} and {bounds['upper'] - bounds['incumbent']:+.3f}"
            )
        else:
            failed.append(f"accuracy gain {gain:+.3f}: no better than the incumbent")
    if unproven is not None and not ab_test:
        failed.append(
            f"{unproven}; only an A/B test could show it better, and retraining.enable_ab_test is off"
        )
    needs_ab = unproven is not None and ab_test
    if ece_change is not None and ece_change > m.max_ece_increase:
        failed.append(f"calibration error rose by {ece_change:.3f}, more than {m.max_ece_increase:.3f}")
    against = "the graph's recorded policy" if production.get("policy") == "recorded" else "production"
    reason = "; ".join(failed) or (
        f"accuracy {gain:+.3f} against {against}"
        + ("" if ece_change is None else f", calibration error {ece_change:+.3f}")
    )
    if needs_ab and not failed:
        reason = f"{unproven}, against {against}: an A/B test decides"
    return {
        "passed": not failed,
        "reason": reason,
        "accuracy_gain": gain,
        "ece_change": ece_change,
        "validation_samples": n,
        **({"needs_ab_test": True} if needs_ab and not failed else {}),
        **({"bounds": bounds} if bounds else {}),
        **({"paired": paired} if paired else {}),
    }
