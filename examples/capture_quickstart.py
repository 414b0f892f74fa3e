"""Attach capture to the example multi-agent graph, send a few queries, give feedback, read it all back.

    python examples/capture_quickstart.py [database-url]

Uses a SQLite file in a temporary folder unless a database URL is given.
"""

from __future__ import annotations

import sys
import tempfile
import uuid
from pathlib import Path

from cl_plugin.graphs.mcts_agents import build_mcts_agent_graph, new_thread_config

from cl_plugin import CaptureHandler


def main(url: str | None = None) -> None:
    url = url or f"sqlite:///{Path(tempfile.mkdtemp()) / 'capture.db'}"
    graph = build_mcts_agent_graph().compile()
    handler = CaptureHandler(url)

    queries = [
        "Which subset of 12, 7, 19, 3, 25, 8 and 14 has the largest sum that stays at or below 50?",
        "Compute the square root of 237 to 3 decimal places. Reach me at ana.lima@example.com.",
    ]
    run_ids = []
    for query in queries:
        run_id = uuid.uuid4()  # chosen up front, so feedback can be attached later
        config = {
            **new_thread_config(),  # every request gets its own checkpoint thread
            "callbacks": [handler],
            "run_id": run_id,
            "metadata": {"user_id": "user-1", "session_id": "session-1"},
        }
        result = graph.invoke({"query": query}, config=config)
        print(f"{result['agent_selected']:>5}: {result['response'].splitlines()[-1]}")
        run_ids.append(run_id)

    handler.record_feedback(run_ids[0], score=5, thumbs="up")
    handler.record_feedback(run_ids[1], score=2, comment="too slow; mail me at ana.lima@example.com")
    if not handler.flush(timeout=30):  # False while rows wait in the journal for the database
        print(f"not everything is stored yet: {handler.stats()}")

    store = handler.store
    for row in store.query_interactions(order="oldest"):
        print(f"\ninteraction {row['interaction_id']}")
        print(f"  query: {row['user_query']}")
        print(
            f"  agent {row['agent_selected']} ({row['agent_confidence']:.2f}), {row['latency_ms']:.1f} ms, "
            f"stars {row['user_feedback_score']}"
        )
        runs = store.node_runs(row["interaction_id"])
        nodes = [r["name"] for r in runs if r["kind"] == "node"]
        print(f"  {len(runs)} runs, nodes: {', '.join(nodes)}")
        for d in store.decisions(row["interaction_id"]):
            alternatives = d["alternatives"] if isinstance(d["alternatives"], dict) else {}
            shown = ", ".join(f"{k} {v:.2f}" for k, v in alternatives.items() if isinstance(v, int | float))
            print(f"  decision {d['kind']:<9} {d['chosen']:<12} {shown}")
        for f in store.feedback.history(row["interaction_id"]):
            print(
                f"  feedback {f['source']}: score {f['score']} thumbs {f['thumbs_up_down']} {f['comment'] or ''}"
            )
    handler.close()


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else None)
