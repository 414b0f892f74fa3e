"""Each concern of the store is reached one way, as ``store.<concern>.<verb>``, and only that way."""

from __future__ import annotations

import pytest

from cl_plugin.store import Store
from cl_plugin.store.ab import ABTests
from cl_plugin.store.drift import DriftEvents
from cl_plugin.store.feedback import Feedback
from cl_plugin.store.models import Models
from cl_plugin.store.queue import AnnotationQueue
from cl_plugin.store.retention import Retention
from cl_plugin.store.runs import Runs

CONCERNS = {
    "feedback": (Feedback, ("record", "history")),
    "queue": (AnnotationQueue, ("enqueue", "items", "update", "queued_ids")),
    "models": (
        Models,
        (
            "add_version",
            "names",
            "versions",
            "version",
            "alias",
            "alias_history",
            "set_alias",
            "promote",
            "rollback",
        ),
    ),
    "ab": (ABTests, ("create", "get", "list", "add_results", "end", "outcomes")),
    "drift": (DriftEvents, ("add_event", "events")),
    "runs": (Runs, ("acquire_lease", "release_lease", "lease_holder", "save", "abandon", "list", "get")),
    "retention": (Retention, ("purge",)),
}

OLD_NAMES = (
    "record_feedback",
    "feedback_history",
    "enqueue_for_annotation",
    "annotation_queue",
    "update_annotation",
    "queued_interaction_ids",
    "add_model_version",
    "model_names",
    "model_versions",
    "model_version",
    "model_alias",
    "model_alias_history",
    "set_model_alias",
    "promote_model_alias",
    "rollback_model_alias",
    "create_ab_test",
    "ab_test",
    "ab_tests",
    "add_ab_results",
    "end_ab_test",
    "add_drift_event",
    "drift_events",
    "acquire_lease",
    "release_lease",
    "lease_holder",
    "save_maintenance_run",
    "abandon_maintenance_run",
    "maintenance_runs",
    "maintenance_run",
    "purge",
)


@pytest.mark.parametrize("name", sorted(CONCERNS))
def test_each_concern_is_an_attribute_of_the_store_holding_that_store(name: str) -> None:
    store = Store.from_url("sqlite://")
    cls, verbs = CONCERNS[name]
    concern = getattr(store, name)
    assert isinstance(concern, cls)
    assert concern._store is store
    for verb in verbs:
        assert callable(getattr(concern, verb)), f"store.{name}.{verb}"


@pytest.mark.parametrize("old", OLD_NAMES)
def test_the_store_no_longer_has_the_old_method_names(old: str) -> None:
    assert not hasattr(Store, old)
    assert not hasattr(Store.from_url("sqlite://"), old)


def test_the_concerns_work_on_a_fresh_store() -> None:
    store = Store.from_url("sqlite://").setup()
    assert store.queue.items() == []
    assert store.queue.queued_ids() == set()
    assert store.models.names() == []
    assert store.ab.list() == []
    assert store.drift.events() == []
    assert store.runs.list() == []
    assert store.feedback.history("nobody") == []
    assert set(store.retention.purge(0.0).values()) == {0}
