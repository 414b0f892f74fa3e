"""A/B tests: each test's settings and result, and its groups' sufficient statistics.

Results are merged into the groups by one ``UPDATE`` per group whose right-hand sides read the row as it
was, so replicas writing at once never lose each other's results; ending a test reads and stores its
analysis in one transaction. The outcomes of the decisions a test served are read back from ``decisions``
and ``interactions``. :class:`~cl_plugin.abtest.ABTestFramework` runs the tests over this, as ``store.ab``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import orjson
from sqlalchemy import BigInteger, Connection, Double, Table, bindparam, select, update

from cl_plugin.outcomes import outcome_value
from cl_plugin.store.points import _parsed
from cl_plugin.store.rows import dumps
from cl_plugin.store.tables import ABTestGroup, ABTestRow, Decision, Interaction

if TYPE_CHECKING:
    from cl_plugin.store.store import Store

__all__ = ["ABTests"]

_AB_TESTS: Table = ABTestRow.__table__  # type: ignore[assignment]
_AB_GROUPS: Table = ABTestGroup.__table__  # type: ignore[assignment]
_DECISIONS: Table = Decision.__table__  # type: ignore[assignment]
_INTERACTIONS: Table = Interaction.__table__  # type: ignore[assignment]
_D, _I = _DECISIONS.c, _INTERACTIONS.c


def _ab_merge_statement() -> Any:
    """Chan's merge of a batch's summary (``d_n``, ``d_mean``, ``d_m2``) into a group's row, in SQL whose
    right-hand sides all read the row as it was. Built once: building it costs more than running it."""
    g = _AB_GROUPS.c
    dn, dmean = bindparam("d_n", type_=BigInteger), bindparam("d_mean", type_=Double)
    diff = dmean - g.mean
    return (
        update(_AB_GROUPS)
        .where(g.test_id == bindparam("d_test_id"), g.variant == bindparam("d_variant"))
        .values(
            n=g.n + dn,
            mean=g.mean + diff * dn / (g.n + dn),
            m2=g.m2 + bindparam("d_m2", type_=Double) + diff * diff * g.n * dn / (g.n + dn),
            non_binary=g.non_binary + bindparam("d_non_binary", type_=BigInteger),
            updated_at=bindparam("d_now", type_=Double),
        )
    )


_AB_MERGE = _ab_merge_statement()
_AB_STATUS = select(_AB_TESTS.c.test_id, _AB_TESTS.c.status).where(
    _AB_TESTS.c.test_id.in_(bindparam("ids", expanding=True))
)


class ABTests:
    """The store's ``ab_tests`` and ``ab_test_groups`` tables.

    Args:
        store: the store that holds the tests.
    """

    def __init__(self, store: Store) -> None:
        self._store = store

    @contextmanager
    def _ab_transaction(self, key: str) -> Iterator[Connection]:
        """A write transaction holding an A/B test's lock."""
        with self._store.transaction(f"cl_plugin.abtest:{key}") as conn:
            yield conn

    def create(self, row: Mapping[str, Any]) -> dict[str, Any]:
        """Create an A/B test with empty groups A and B, unless a test of that name is running already.

        Args:
            row: the ``ab_tests`` columns ``test_id``, ``name``, ``model_a``, ``model_b``, ``settings``
                (a JSON-ready dict) and ``created_at``.

        Returns:
            The running test of that name (:meth:`get`): the new one, or the one found.
        """
        t = _AB_TESTS.c
        with self._ab_transaction(row["name"]) as conn:
            found = conn.execute(
                select(t.test_id).where(t.name == row["name"], t.status == "running").limit(1)
            ).scalar()
            if found is None:
                values = {**row, "settings": dumps(row["settings"]), "status": "running"}
                conn.execute(_AB_TESTS.insert().values(**values))
                conn.execute(
                    _AB_GROUPS.insert(),
                    [
                        {
                            "test_id": row["test_id"],
                            "variant": v,
                            "n": 0,
                            "mean": 0.0,
                            "m2": 0.0,
                            "non_binary": 0,
                            "updated_at": row["created_at"],
                        }
                        for v in ("A", "B")
                    ],
                )
            test = self._ab_test(conn, found or row["test_id"])
        assert test is not None
        return test

    def get(self, test_id: str) -> dict[str, Any] | None:
        """One A/B test, or None when there is none with that id.

        Returns:
            The ``ab_tests`` row (``settings`` and ``result`` decoded) with ``groups``: ``{"A": {...},
            "B": {...}}``, each holding ``n``, ``mean``, ``m2`` and ``non_binary``.
        """
        with self._store.read_connection() as conn, conn.begin():
            return self._ab_test(conn, test_id)

    def _ab_test(self, conn: Connection, test_id: str, *, lock: bool = False) -> dict[str, Any] | None:
        found = conn.execute(select(_AB_TESTS).where(_AB_TESTS.c.test_id == test_id)).mappings().first()
        if found is None:
            return None
        test = dict(found)
        for key in ("settings", "result"):
            test[key] = None if test[key] is None else orjson.loads(test[key])
        g = _AB_GROUPS.c
        stmt = select(g.variant, g.n, g.mean, g.m2, g.non_binary).where(g.test_id == test_id)
        if lock:
            stmt = stmt.with_for_update(read=True)
        test["groups"] = {r["variant"]: dict(r) for r in conn.execute(stmt).mappings()}
        return test

    def add_results(self, deltas: Sequence[Mapping[str, Any]]) -> dict[str, str]:
        """Merge batches of results into their groups' sufficient statistics, in one transaction.

        Each delta is one group's summary of new results: ``test_id``, ``variant``, ``n``, ``mean``, ``m2``
        and ``non_binary``. The merge is one ``UPDATE`` per group whose right-hand sides read the row as
        it was, so concurrent writers on any number of replicas never lose each other's results.

        Returns:
            The status (``running`` or ``ended``) of every test the deltas touched.
        """
        now = time.time()
        # Rows are locked in one order (test, then variant) by every writer: two replicas whose batches
        # touch the same groups in opposite orders would otherwise deadlock on PostgreSQL.
        ordered = sorted(deltas, key=lambda d: (d["test_id"], d["variant"]))
        params = [{f"d_{k}": v for k, v in d.items()} | {"d_now": now} for d in ordered]
        ids = sorted({d["test_id"] for d in deltas})
        with self._store.transaction() as conn:
            conn.execute(_AB_MERGE, params)
            return dict(conn.execute(_AB_STATUS, {"ids": ids}).all())

    def end(
        self, test_id: str, conclude: Callable[[dict[str, Any]], dict[str, Any]]
    ) -> dict[str, Any] | None:
        """End a running test with the analysis ``conclude`` makes of it, read and written in one transaction.

        The groups are read under a lock that holds off concurrent merges until the result is stored, so
        the stored result is the analysis of exactly the results counted. Ending an ended test changes
        nothing.

        Args:
            test_id: the test.
            conclude: builds the final result (JSON-serialisable) from the test as :meth:`get` returns
                it, with ``status`` already ``ended`` and ``ended_at`` set.

        Returns:
            The ended test (:meth:`get`), or None when there is no test with that id.
        """
        t = _AB_TESTS.c
        with self._ab_transaction(test_id) as conn:
            test = self._ab_test(conn, test_id, lock=True)
            if test is None or test["status"] == "ended":
                return test
            test.update(status="ended", ended_at=time.time())
            test["result"] = conclude(test)
            conn.execute(
                update(_AB_TESTS)
                .where(t.test_id == test_id)
                .values(status="ended", ended_at=test["ended_at"], result=dumps(test["result"]))
            )
        return test

    def outcomes(self, test_id: str, *, low_rating_threshold: float = 3.0) -> dict[str, list[float]]:
        """The outcome of each judged interaction a served decision put in one of an A/B test's groups.

        A :class:`~cl_plugin.serving.LearnedRouter` records the test and the group with each decision it
        serves. The outcome is :func:`cl_plugin.outcomes.outcome_value`, the A/B test's default metric: 0.0
        when the interaction shows an outcome failure (the run raised, as ``error_occurred`` or a
        ``failed_node`` in its metadata; a hallucination was flagged; the user corrected the answer, gave a
        thumbs down or a score below ``low_rating_threshold``), 1.0 when the user rated it (stars or thumbs)
        and nothing failed. So an errored run counts as a failure even when nobody rated it, and an
        interaction nobody judged (no failure, no rating) counts in neither group. Diagnostics do not count:
        a slow, poorly retrieved answer the user rated well is a success.

        A score is low below ``low_rating_threshold`` (default 3, as
        ``failure_analysis.low_rating_threshold``), the same rule as the failure rate and the failure
        analysis: one, two and 2.5 stars are bad, three are not.

        Returns:
            ``{"A": [...], "B": [...]}``, one outcome per interaction (its first decision in the test).
        """
        joined = _DECISIONS.join(_INTERACTIONS, _D.interaction_id == _I.interaction_id)
        query = (
            select(
                _D.interaction_id,
                _D.statistics,
                _I.user_feedback_score,
                _I.thumbs_up_down,
                _I.error_occurred,
                _I.hallucination_detected,
                _I.corrections,
                _I.metadata,
            )
            .select_from(joined)
            .where(_D.statistics.like(f'%"ab_test":"{test_id}"%'))
            .order_by(_D.timestamp, _D.decision_id)
        )
        outcomes: dict[str, list[float]] = {"A": [], "B": []}
        seen: set[str] = set()
        with self._store.read_connection() as conn:
            for iid, statistics, score, thumbs, error, hallucination, corrections, metadata in conn.execute(
                query
            ):
                stats = _parsed(statistics)
                if iid in seen or not isinstance(stats, dict) or stats.get("ab_test") != test_id:
                    continue
                group = stats.get("ab_group")
                if group not in outcomes:
                    continue
                value = outcome_value(
                    {
                        "user_feedback_score": score,
                        "thumbs_up_down": thumbs,
                        "error_occurred": error,
                        "hallucination_detected": hallucination,
                        "corrections": corrections,
                        "metadata": metadata,
                    },
                    low_rating_threshold=low_rating_threshold,
                )
                if value is None:
                    continue
                seen.add(iid)
                outcomes[group].append(value)
        return outcomes

    def list(self, status: str | None = None) -> list[dict[str, Any]]:
        """Every A/B test (or those with a status: ``running`` or ``ended``), oldest first, without groups."""
        t = _AB_TESTS
        stmt = select(t).order_by(t.c.created_at, t.c.test_id)
        if status is not None:
            stmt = stmt.where(t.c.status == status)
        return self._store.read_rows(stmt, ("settings", "result"))
