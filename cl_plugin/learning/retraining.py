"""IncrementalRetrainingPipeline: retrain the router and the retrieval index from what production taught.

The spec's pipeline, step by step (each step reports what it did, or that it did not run and why):

1. **Data preparation** (:func:`cl_plugin.learning.training_data.prepare_training_data`): sanitize, filter, derive
   routing labels from annotations, metadata and feedback, deduplicate, split by session.
2. **Router update**: a new :class:`~cl_plugin.learning.router.MetaRouter` is fitted on the new training labels plus a
   replay of the production router's earlier labels (so it learns the new vocabulary without forgetting old
   traffic), then its temperature is calibrated out of fold.
3. **RAG update**: the production index, copied, gains the corrections of the training sessions as
   documents.
4. **Evaluation**: candidate and production on the same held-out sessions: routing accuracy, macro-F1 and
   expected calibration error; retrieval precision@3 and nDCG@3 on held-out corrected queries. A gate
   compares them.
5. **A/B test set-up**: when enabled, the candidate passed the gate and an
   :class:`~cl_plugin.abtest.ABTestFramework` was given, a test of production against candidate is created.

The candidate is written to ``output_path`` as a :class:`~cl_plugin.learning.modelset.ModelSet` and, with a registry,
registered and aliased ``candidate``. Promotion is left to the caller (or the A/B test): nothing here moves
``production``.
"""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
import logging
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from scipy.stats import binomtest
from sklearn.metrics import f1_score

from cl_plugin.analysis.metrics.measures import expected_calibration_error
from cl_plugin.config import ContinualLearningConfig, RetrainingConfig, resolve_section
from cl_plugin.learning.labels import ReplayBuffer, RoutingLabel
from cl_plugin.learning.modelset import MANIFEST, ModelSet
from cl_plugin.learning.rag import RagIndex
from cl_plugin.learning.registry import DataWindow, ModelRegistry
from cl_plugin.learning.router import MetaRouter
from cl_plugin.learning.training_data import Correction, PreparedData, label_contexts, prepare_training_data
from cl_plugin.privacy import PIIRedactor
from cl_plugin.records import is_finite_number

__all__ = ["SCHEDULE_SECONDS", "IncrementalRetrainingPipeline"]

log = logging.getLogger("cl_plugin.retraining")

#: How long each ``schedule`` waits between retrains.
SCHEDULE_SECONDS = {"daily": 86_400.0, "weekly": 7 * 86_400.0, "monthly": 30 * 86_400.0}

_VERSION = re.compile(r"v(\d+)")
_ANSWER = re.compile(r"answer\s*[:=]\s*(.+)$", re.I | re.S)
_RETRIEVAL_K = 3


class _Skip(Exception):
    """A step found nothing it could honestly do; the run ends as ``skipped`` with this reason."""


class IncrementalRetrainingPipeline:
    """Retrain the router and the retrieval index from production data, and evaluate before anyone deploys.

    Args:
        config: the ``retraining`` section as a dict (``schedule``, ``min_new_samples``,
            ``validation_split``, ``enable_ab_test``), a :class:`~cl_plugin.config.RetrainingConfig`, or the
            whole :class:`~cl_plugin.config.ContinualLearningConfig`.
        registry: where candidates are registered (aliased ``candidate``) and production is read from.
        ab_tests: an :class:`~cl_plugin.abtest.ABTestFramework` (or anything with its ``create_test``) for
            the A/B step.
        router_name: registry name of the router; the index is ``index_name`` and the replay sample
            ``<router_name>-replay``.
        index_name: registry name of the retrieval index.
        agents: the agents a label may name; None (the default) allows every agent the labels name (a
            router needs at least two).
        router_params: keyword arguments of every new :class:`~cl_plugin.learning.router.MetaRouter`.
        replay_capacity: labels kept in the replay sample saved with each candidate.
        replay_ratio: replayed old labels per new training label.
        min_improvement: accuracy and macro-F1 points the candidate must gain over production to pass the
            gate (0: not worse).
        redactor: the PII redactor for training text; the default one otherwise.
        seed: seed of the split, the replay and the router.
        clock: the time source of :meth:`should_retrain` (unix seconds).
        retrieval: update and evaluate the retrieval index from corrections (False for a decision point's
            router, which has no index).
        complement: learn from bad ratings no similar query relabels, as evidence against the chosen
            option (see :func:`cl_plugin.learning.labels.routing_labels`; needs ``agents``).
        max_ips_weight: the largest inverse-propensity factor of a rating-derived label, in training and in
            the held-out evaluation.
        incumbent: with no production model, ``"recorded"`` scores the graph's own policy as recorded (the
            share of held-out labels equal to the option it chose) and gates the candidate against it;
            None evaluates the candidate without a baseline.
        **kwargs: ``retraining`` keys that override ``config``.

    Raises:
        ConfigError: an unknown or ill-typed config key.
        ValueError: a bad keyword argument, named in the message.

    Example:
        >>> pipeline = IncrementalRetrainingPipeline({"schedule": "daily", "min_new_samples": 100})
        >>> pipeline.should_retrain(None, 150), pipeline.should_retrain(time.time() - 3600, 150)
        (True, False)
    """

    def __init__(
        self,
        config: Mapping[str, Any] | RetrainingConfig | ContinualLearningConfig | None = None,
        *,
        registry: ModelRegistry | None = None,
        ab_tests: Any = None,
        router_name: str = "router",
        index_name: str = "rag_index",
        agents: Sequence[str] | None = None,
        router_params: Mapping[str, Any] | None = None,
        replay_capacity: int = 5000,
        replay_ratio: float = 1.0,
        min_improvement: float = 0.0,
        redactor: PIIRedactor | None = None,
        seed: int = 0,
        clock: Callable[[], float] = time.time,
        retrieval: bool = True,
        complement: bool = False,
        max_ips_weight: float = 10.0,
        incumbent: Literal["recorded"] | None = None,
        **kwargs: Any,
    ) -> None:
        self.config = resolve_section(
            RetrainingConfig, config, component="IncrementalRetrainingPipeline", **kwargs
        )
        if agents is not None and (isinstance(agents, str) or len(set(agents)) < 2):
            raise ValueError(f"agents must be None or name at least two agents (got {agents!r})")
        if not (isinstance(replay_capacity, int) and replay_capacity >= 1):
            raise ValueError(f"replay_capacity must be a positive integer (got {replay_capacity!r})")
        if not (is_finite_number(replay_ratio) and replay_ratio >= 0):
            raise ValueError(f"replay_ratio must be a finite number >= 0 (got {replay_ratio!r})")
        if not is_finite_number(min_improvement):
            raise ValueError(f"min_improvement must be a finite number (got {min_improvement!r})")
        self.registry = registry
        self.ab_tests = ab_tests
        self.names = {"router": router_name, "rag_index": index_name, "replay": f"{router_name}-replay"}
        self.agents = None if agents is None else tuple(agents)
        self.router_params = dict(router_params or {})
        self.replay_capacity = replay_capacity
        self.replay_ratio = float(replay_ratio)
        self.min_improvement = float(min_improvement)
        self.redactor = redactor
        self.seed = seed
        self.clock = clock
        if complement and self.agents is None:
            raise ValueError(
                "complement=True needs agents=[...]: the options a bad rating's label spreads over"
            )
        if not (is_finite_number(max_ips_weight) and max_ips_weight >= 1.0):
            raise ValueError(f"max_ips_weight must be a number >= 1 (got {max_ips_weight!r})")
        if incumbent not in (None, "recorded"):
            raise ValueError(f"incumbent must be None or 'recorded' (got {incumbent!r})")
        self.retrieval = retrieval
        self.complement = complement
        self.max_ips_weight = float(max_ips_weight)
        self.incumbent = incumbent
        MetaRouter(**self.router_params)  # a misspelt router parameter fails here, not mid-retrain

    # -- scheduling ---------------------------------------------------------------------------------

    def should_retrain(self, last_retrain_time: float | dt.datetime | None, num_new_samples: int) -> bool:
        """Whether a retrain is due: the schedule's period has passed and enough new samples arrived.

        Args:
            last_retrain_time: when the last retrain ran (unix seconds or a datetime; a naive datetime is
                UTC), or None if it never ran.
            num_new_samples: labeled samples gathered since.

        Returns:
            True when ``num_new_samples >= min_new_samples`` and the schedule's period (daily, weekly,
            monthly = 30 days) has elapsed since ``last_retrain_time``.

        Raises:
            ValueError: ``num_new_samples`` is not a non-negative integer, or ``last_retrain_time`` is neither
                a number, a datetime nor None.
        """
        if isinstance(num_new_samples, bool) or not isinstance(num_new_samples, int | np.integer):
            raise ValueError(f"num_new_samples must be an integer >= 0 (got {num_new_samples!r})")
        if num_new_samples < 0:
            raise ValueError(f"num_new_samples must be an integer >= 0 (got {num_new_samples!r})")
        next_time = self.next_retrain_time(last_retrain_time)
        if num_new_samples < self.config.min_new_samples:
            return False
        return next_time is None or self.clock() >= next_time

    def next_retrain_time(self, last_retrain_time: float | dt.datetime | None) -> float | None:
        """When the schedule next allows a retrain (unix seconds), or None if it never ran.

        Raises:
            ValueError: ``last_retrain_time`` is neither a number, a datetime nor None.
        """
        if last_retrain_time is None:
            return None
        if isinstance(last_retrain_time, dt.datetime):
            if last_retrain_time.tzinfo is None:
                last_retrain_time = last_retrain_time.replace(tzinfo=dt.UTC)
            last = last_retrain_time.timestamp()
        elif is_finite_number(last_retrain_time):
            last = float(last_retrain_time)
        else:
            raise ValueError(
                f"last_retrain_time must be unix seconds, a datetime or None (got {last_retrain_time!r})"
            )
        return last + SCHEDULE_SECONDS[self.config.schedule]

    # -- retraining ---------------------------------------------------------------------------------

    async def retrain(
        self, new_data: Iterable[Any], old_model_path: str | Path, output_path: str | Path
    ) -> dict[str, Any]:
        """Retrain in a worker thread (the event loop stays free); see :meth:`retrain_sync`."""
        return await asyncio.to_thread(self.retrain_sync, new_data, old_model_path, output_path)

    def retrain_sync(
        self, new_data: Iterable[Any], old_model_path: str | Path, output_path: str | Path
    ) -> dict[str, Any]:
        """Run every step and return the result; never raises for bad data or a failing step.

        Args:
            new_data: interactions, annotated samples, annotation rows or routing labels (see
                :func:`~cl_plugin.learning.training_data.prepare_training_data`).
            old_model_path: the production model: a directory saved by an earlier retrain (or
                :meth:`ModelSet.save <cl_plugin.learning.modelset.ModelSet.save>`), or, with a registry, a path ending
                in an alias (``models/production``) or a router version (``models/v3``). If nothing is
                there, the candidate is trained from the new data alone and evaluated without a baseline.
            output_path: the directory the candidate is written to.

        Returns:
            ``status`` (``completed``, ``skipped`` or ``failed``), ``reason`` (why it was skipped),
            ``error`` and ``failed_step`` (when it failed), ``steps`` (one report per step, each with its
            own ``status``), ``metrics`` (the candidate's and production's evaluation, side by side),
            ``candidate`` (where it was written and its registry versions), ``started_at``,
            ``finished_at`` and ``duration_s``.
        """
        started = time.time()
        result: dict[str, Any] = {
            "status": "failed",
            "old_model_path": str(old_model_path),
            "output_path": str(output_path),
            "steps": {},
            "metrics": {},
            "candidate": None,
            "started_at": started,
        }
        step = "data_preparation"
        try:
            prepared = self._prepare(new_data, result)
            step = "load_production"
            production = self._load_production(old_model_path, result)
            step = "router_update"
            router, replay = self._update_router(prepared, production, result)
            step = "rag_update"
            rag = self._update_rag(prepared, production, result)
            step = "evaluation"
            gate = self._evaluate(prepared, router, rag, production, result)
            step = "save"
            candidate = ModelSet(router, rag, replay)
            self._save(candidate, prepared, production, output_path, result)
            step = "ab_test"
            self._ab_test(candidate, production, gate, result)
            result["status"] = "completed"
        except _Skip as skip:
            result["status"] = "skipped"
            result["reason"] = str(skip)
        except Exception as exc:
            log.exception("retraining failed in step %s", step)
            result["error"] = f"{type(exc).__name__}: {exc}"
            result["failed_step"] = step
            result["steps"].setdefault(step, {})["status"] = "failed"
        finished = time.time()
        result["finished_at"] = finished
        result["duration_s"] = round(finished - started, 3)
        return result

    # -- steps --------------------------------------------------------------------------------------

    def _prepare(self, new_data: Iterable[Any], result: dict[str, Any]) -> PreparedData:
        prepared = prepare_training_data(
            new_data,
            agents=self.agents,
            validation_split=self.config.validation_split,
            seed=self.seed,
            redactor=self.redactor,
            complement=self.complement,
            max_ips_weight=self.max_ips_weight,
        )
        result["steps"]["data_preparation"] = {"status": "completed", **prepared.report}
        complemented = {label.interaction_id for label in prepared.train if label.source == "complement"}
        usable = prepared.report["labels"] + len(complemented)
        if usable < self.config.min_new_samples:
            raise _Skip(
                f"only {usable} usable labeled samples after preparation; min_new_samples is "
                f"{self.config.min_new_samples}"
            )
        if not prepared.validation:
            raise _Skip(
                f"no held-out session to evaluate on: the {prepared.report['sessions']} session(s) of the new "
                "data all went to training; gather data from more sessions"
            )
        return prepared

    def _load_production(self, old_model_path: str | Path, result: dict[str, Any]) -> ModelSet | None:
        path = Path(old_model_path)
        report: dict[str, Any] = {"path": str(old_model_path)}
        production: ModelSet | None = None
        if (path / MANIFEST).is_file():
            production = ModelSet.load(path)
            report |= {"status": "loaded", "source": "directory"}
        elif self.registry is not None and (reference := self._registry_reference(path.name)) is not None:
            production = ModelSet.from_registry(self.registry, names=self.names, **reference)
            report |= {"status": "loaded", "source": "registry", "versions": production.info["versions"]}
        elif path.exists():
            raise FileNotFoundError(
                f"old_model_path {str(old_model_path)!r} exists but is not a saved model set (no {MANIFEST}); "
                "pass the output_path of an earlier retrain, or a path that does not exist to train from scratch"
            )
        else:
            report |= {
                "status": "not_found",
                "detail": "no production model there: the candidate has no baseline",
            }
        result["steps"]["load_production"] = report
        return production

    def _registry_reference(self, name: str) -> dict[str, Any] | None:
        assert self.registry is not None
        if match := _VERSION.fullmatch(name):
            version = int(match.group(1))
            if self.registry.store.models.version(self.names["router"], version) is not None:
                return {"version": version}
            return None
        if self.registry.get_alias(self.names["router"], name) is not None:
            return {"alias": name}
        return None

    def _update_router(
        self, prepared: PreparedData, production: ModelSet | None, result: dict[str, Any]
    ) -> tuple[MetaRouter, ReplayBuffer]:
        old = (
            production.replay
            if production is not None
            else ReplayBuffer(self.replay_capacity, seed=self.seed)
        )
        replay = copy.deepcopy(old)
        replay.capacity = max(replay.capacity, self.replay_capacity)
        mixed = replay.mix(prepared.train, self.replay_ratio)
        agents = {label.agent for label in mixed}
        if len(agents) < 2:
            raise _Skip(f"the training labels name only {sorted(agents)}; a router needs at least two agents")
        router = MetaRouter(**{"random_state": self.seed, **self.router_params})
        router.fit(
            [label.query for label in mixed],
            [label.agent for label in mixed],
            sample_weight=[label.weight for label in mixed],
            contexts=label_contexts(mixed),
        )
        replay.add(prepared.train)
        result["steps"]["router_update"] = {
            "status": "completed",
            "new_samples": len(prepared.train),
            "replayed_samples": len(mixed) - len(prepared.train),
            "training_samples": len(mixed),
            "classes": [str(c) for c in router.classes_],
            "temperature": round(router.temperature_, 4),
            "replay_kept": len(replay),
        }
        return router, replay

    def _update_rag(
        self, prepared: PreparedData, production: ModelSet | None, result: dict[str, Any]
    ) -> RagIndex | None:
        if not self.retrieval:
            result["steps"]["rag_update"] = {"status": "skipped", "reason": "retrieval is off for this model"}
            return None
        base = production.rag if production is not None else None
        train = [c for c in prepared.corrections if not c.validation]
        if base is None and not train:
            result["steps"]["rag_update"] = {
                "status": "skipped",
                "reason": "no production index and no corrections to build one from",
            }
            return None
        index = RagIndex() if base is None else _copy_index(base)
        before = len(index.documents())
        for c in train:
            index.add_correction(c.query, c.answer, interaction_id=c.interaction_id)
        result["steps"]["rag_update"] = {
            "status": "completed",
            "documents_before": before,
            "corrections_added": len(train),
            "documents_after": len(index.documents()),
            "held_out_corrections": len(prepared.corrections) - len(train),
        }
        return index

    def _evaluate(
        self,
        prepared: PreparedData,
        router: MetaRouter,
        rag: RagIndex | None,
        production: ModelSet | None,
        result: dict[str, Any],
    ) -> dict[str, Any]:
        held_out = prepared.validation
        weights = self._evaluation_weights(prepared, held_out)
        metrics: dict[str, Any] = {"validation_samples": len(held_out)}
        if weights is not None:
            metrics["ips_weighted"] = True
        metrics["candidate"] = _routing_metrics(router, held_out, weights)
        if production is not None:
            metrics["production"] = _routing_metrics(production.router, held_out, weights)
        elif self.incumbent == "recorded":
            metrics["production"] = _recorded_policy_metrics(prepared.recorded, held_out, weights)
        else:
            metrics["production"] = None
        if self.retrieval:
            metrics["retrieval"] = _retrieval_comparison(
                [c for c in prepared.corrections if c.validation], rag, production.rag if production else None
            )
        else:
            metrics["retrieval"] = {"status": "not_run", "reason": "retrieval is off for this model"}
        if self.complement and metrics["production"] is not None:
            metrics["bounds"] = _bounds(router, prepared, held_out, weights, self.max_ips_weight)
        if metrics["production"] is not None and held_out:
            incumbent = (
                production.router.predict([x.query for x in held_out], contexts=label_contexts(held_out))
                if production is not None
                else np.asarray([prepared.recorded.get(x.interaction_id, "") for x in held_out])
            )
            metrics["paired"] = _paired(router, held_out, incumbent)
        gate = _gate(metrics["candidate"], metrics["production"], self.min_improvement)
        result["steps"]["evaluation"] = {"status": "completed", **metrics, "gate": gate}
        result["metrics"] = metrics
        return gate

    def _evaluation_weights(
        self, prepared: PreparedData, held_out: Sequence[RoutingLabel]
    ) -> np.ndarray | None:
        """Inverse-propensity weights of the held-out labels that came from ratings of served decisions, so
        the evaluation estimates accuracy on all traffic rather than on what the policy chose to show; None
        when no held-out label came from a served decision."""
        if not any(label.interaction_id in prepared.propensity for label in held_out):
            return None
        return np.asarray(
            [
                min(1.0 / prepared.propensity[label.interaction_id], self.max_ips_weight)
                if label.source == "feedback" and label.interaction_id in prepared.propensity
                else 1.0
                for label in held_out
            ]
        )

    def _save(
        self,
        candidate: ModelSet,
        prepared: PreparedData,
        production: ModelSet | None,
        output_path: str | Path,
        result: dict[str, Any],
    ) -> None:
        start, end = prepared.window
        window = DataWindow(start, end, prepared.report["labels"])
        metrics = result["metrics"]
        parent = None if production is None else result["steps"]["load_production"]["path"]
        candidate.save(output_path, metrics=metrics, parent=parent, data_window=window)
        saved: dict[str, Any] = {"path": str(output_path), "versions": None}
        if self.registry is not None:
            parents = (production.info.get("versions") or {}) if production is not None else {}
            role_metrics = {
                "router": {k: metrics[k] for k in ("candidate", "production", "validation_samples")},
                "rag_index": {"retrieval": metrics["retrieval"]},
                "replay": {"labels": len(candidate.replay)},
            }
            saved["versions"] = candidate.register(
                self.registry,
                names=self.names,
                metrics=role_metrics,
                parents=parents,
                data_window=window,
                alias="candidate",
                reason=f"retrained on {prepared.report['train_samples']} new labels",
                actor="IncrementalRetrainingPipeline",
            )
        result["candidate"] = saved

    def _ab_test(
        self, candidate: ModelSet, production: ModelSet | None, gate: dict[str, Any], result: dict[str, Any]
    ) -> None:
        if not self.config.enable_ab_test:
            report = {"status": "skipped", "reason": "enable_ab_test is false"}
        elif production is None:
            report = {"status": "skipped", "reason": "no production model to test the candidate against"}
        elif not gate["passed"]:
            report = {"status": "skipped", "reason": f"the candidate did not pass the gate: {gate['reason']}"}
        elif self.ab_tests is None:
            report = {
                "status": "skipped",
                "reason": "no A/B test framework was given; pass IncrementalRetrainingPipeline(..., "
                "ab_tests=ABTestFramework(...))",
            }
        else:
            a = _reference(production, result["steps"]["load_production"]["path"])
            b = _reference(candidate, result["output_path"])
            test_id = self.ab_tests.create_test(f"{self.names['router']}: {a} vs {b}", model_a=a, model_b=b)
            report = {"status": "created", "test_id": test_id, "model_a": a, "model_b": b}
        result["steps"]["ab_test"] = report


# -- evaluation helpers ---------------------------------------------------------------------------------


def _routing_metrics(
    router: MetaRouter, labels: Sequence[RoutingLabel], weights: np.ndarray | None = None
) -> dict[str, Any]:
    """Accuracy, macro-F1 and calibration error of a router on labeled queries (weighted when given)."""
    truth = np.asarray([label.agent for label in labels])
    proba = router.predict_proba([label.query for label in labels], contexts=label_contexts(labels))
    predicted = np.asarray(router.classes_)[proba.argmax(axis=1)]
    correct = predicted == truth
    return {
        "n": len(labels),
        "accuracy": float(np.average(correct, weights=weights)),
        "macro_f1": float(
            f1_score(truth, predicted, average="macro", zero_division=0, sample_weight=weights)
        ),
        "ece": expected_calibration_error(proba.max(axis=1), correct).ece,
    }


def _bounds(
    router: MetaRouter,
    prepared: PreparedData,
    labels: Sequence[RoutingLabel],
    weights: np.ndarray | None,
    cap: float,
) -> dict[str, Any] | None:
    """What ratings alone say about the candidate on held-out rated decisions, taking a good rating to mean
    the chosen option was right and a bad one that it was wrong.

    The incumbent's accuracy there is the share rated good. The candidate's lies between ``lower`` (the
    good ones it keeps) and ``upper`` (those plus every bad one it changes: each may now be right, or still
    wrong; only an online test can tell). Weighted by inverse propensity like the labels.
    """
    rated: list[tuple[RoutingLabel, bool, float]] = []
    for i, label in enumerate(labels):
        if label.source == "feedback":  # a good rating (label = the choice) or a relabeled bad one
            good = label.agent == prepared.recorded.get(label.interaction_id)
            rated.append((label, good, float(weights[i]) if weights is not None else 1.0))
    for label in prepared.validation_bad:
        p = prepared.propensity.get(label.interaction_id)
        rated.append((label, False, min(1.0 / p, cap) if p else 1.0))
    if not rated:
        return None
    picked = router.predict([r[0].query for r in rated], contexts=label_contexts([r[0] for r in rated]))
    chosen = np.asarray([prepared.recorded.get(r[0].interaction_id, "") for r in rated])
    good = np.asarray([r[1] for r in rated])
    w = np.asarray([r[2] for r in rated])
    same = picked == chosen
    total = float(w.sum())
    return {
        "rated": len(rated),
        "incumbent": float(w[good].sum()) / total,
        "lower": float(w[good & same].sum()) / total,
        "upper": float(w[good & same].sum() + w[~good & ~same].sum()) / total,
        "kept_good": float(w[good & same].sum() / w[good].sum()) if good.any() else None,
        "changed_bad": float(w[~good & ~same].sum() / w[~good].sum()) if (~good).any() else None,
    }


def _paired(router: MetaRouter, labels: Sequence[RoutingLabel], incumbent: np.ndarray) -> dict[str, Any]:
    """Where candidate and incumbent disagree on held-out labels: how often each is the one right, and the
    one-sided sign test's p-value that the candidate is right more often (exact binomial)."""
    truth = np.asarray([label.agent for label in labels])
    candidate = router.predict([label.query for label in labels], contexts=label_contexts(labels))
    wins = int(np.sum((candidate == truth) & (incumbent != truth)))
    losses = int(np.sum((candidate != truth) & (incumbent == truth)))
    p = binomtest(wins, wins + losses, 0.5, alternative="greater").pvalue if wins + losses else 1.0
    return {"wins": wins, "losses": losses, "p_value": float(p)}


def _recorded_policy_metrics(
    recorded: Mapping[str, str], labels: Sequence[RoutingLabel], weights: np.ndarray | None
) -> dict[str, Any]:
    """The graph's own policy as the incumbent: how often the option it chose equals the held-out label.

    It gives no probabilities, so it has no calibration error to compare (``ece`` is None).
    """
    truth = np.asarray([label.agent for label in labels])
    chosen = np.asarray([recorded.get(label.interaction_id, "") for label in labels])
    correct = chosen == truth
    return {
        "n": len(labels),
        "policy": "recorded",
        "accuracy": float(np.average(correct, weights=weights)) if len(labels) else 0.0,
        "macro_f1": float(f1_score(truth, chosen, average="macro", zero_division=0, sample_weight=weights))
        if len(labels)
        else 0.0,
        "ece": None,
    }


def _gate(
    candidate: Mapping[str, Any], production: Mapping[str, Any] | None, margin: float
) -> dict[str, Any]:
    if production is None:
        return {"passed": True, "reason": "no production model to compare with"}
    gains = {m: candidate[m] - production[m] for m in ("accuracy", "macro_f1")}
    failed = [f"{m} {gain:+.3f} < {margin:+.3f}" for m, gain in gains.items() if gain < margin]
    reason = (
        "; ".join(failed)
        if failed
        else f"accuracy {gains['accuracy']:+.3f}, macro-F1 {gains['macro_f1']:+.3f}"
    )
    return {"passed": not failed, "reason": reason, **{f"{m}_gain": g for m, g in gains.items()}}


def _retrieval_comparison(
    corrections: Sequence[Correction], candidate: RagIndex | None, production: RagIndex | None
) -> dict[str, Any]:
    """Precision@3 and nDCG@3 of both indexes on held-out corrected queries, judged on the same documents.

    A document is relevant to a held-out query when it states the user's corrected answer; relevance is
    judged over the documents of both indexes, so an index that lacks the answer scores 0 on that query.
    """
    if candidate is None:
        return {"status": "not_run", "reason": "no retrieval index"}
    documents = {d["id"]: d["text"] for index in (production, candidate) if index for d in index.documents()}
    queries, relevant = [], []
    for c in corrections:
        answer = _answer_of(c.answer)
        if answer is None:
            continue
        pattern = re.compile(rf"(?<!\w){re.escape(answer)}(?!\w)", re.I)
        hits = {doc_id for doc_id, text in documents.items() if pattern.search(text)}
        if hits:
            queries.append(c.query)
            relevant.append(hits)
    if not queries:
        return {"status": "not_run", "reason": "no held-out corrected query whose answer a document states"}

    def scores(index: RagIndex | None) -> dict[str, Any] | None:
        if index is None:
            return None
        m = index.evaluate(queries, relevant, k=_RETRIEVAL_K)
        return {"precision_at_3": m.precision, "ndcg_at_3": m.ndcg}

    return {
        "status": "completed",
        "queries": len(queries),
        "candidate": scores(candidate),
        "production": scores(production),
    }


def _answer_of(correction: str) -> str | None:
    """The answer a correction states: the text after its last ``Answer:``, else all of it."""
    found = _ANSWER.findall(correction)
    lines = (found[-1] if found else correction).strip().splitlines()
    return lines[0].strip() if lines and lines[0].strip() else None


def _copy_index(index: RagIndex) -> RagIndex:
    """A new index with the same parameters and documents (the production index is never modified)."""
    return RagIndex(
        scorer=index.scorer,
        ngram_range=index.ngram_range,
        sublinear_tf=index.sublinear_tf,
        k1=index.k1,
        b=index.b,
        embeddings=index.embeddings,
    ).add(index.documents())


def _reference(model_set: ModelSet, path: str) -> str:
    """How an A/B test names a model set: its router's registry version, else its directory."""
    version = (model_set.info.get("versions") or {}).get("router")
    return f"v{version}" if version is not None else path
