"""Every example script runs to the end from a clean working directory."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

# Each example runs in a fresh interpreter: long-running, so outside the quick loop.
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))


def test_there_are_examples() -> None:
    assert EXAMPLES


@pytest.mark.parametrize("script", EXAMPLES, ids=lambda p: p.name)
def test_example_runs(script: Path, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LANGSMITH_", "LANGCHAIN_"))}
    env["PYTHONPATH"] = str(ROOT)
    done = subprocess.run(
        [sys.executable, str(script), f"sqlite:///{tmp_path / 'example.db'}"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip()


def test_quickstart_stores_no_raw_pii(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LANGSMITH_", "LANGCHAIN_"))}
    env["PYTHONPATH"] = str(ROOT)
    db = tmp_path / "q.db"
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "capture_quickstart.py"), f"sqlite:///{db}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "[EMAIL]" in done.stdout and "ana.lima@example.com" not in done.stdout
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert db in files
    assert not any(b"ana.lima@example.com" in p.read_bytes() for p in files)


def test_learn_your_graph_serves_better_than_its_rule_after_maintenance(tmp_path: Path) -> None:
    sys.path.insert(0, str(ROOT / "examples"))
    try:
        from learn_your_graph import learn
    finally:
        sys.path.remove(str(ROOT / "examples"))
    outcome = learn(f"sqlite:///{tmp_path / 'desk.db'}", requests_per_phase=300, cycles=3)
    first, last = outcome.phases[0], outcome.phases[-1]
    assert first.by_model == 0  # no model yet: the rule decided (or exploration did)
    assert last.by_model > last.requests / 2
    # the same traffic routed by the rule alone would have been right less often
    assert last.accuracy > last.rule_accuracy and last.accuracy > first.accuracy
    promoted = [c["promoted"] for c in outcome.cycles if c["promoted"] and "router" in c["promoted"]]
    assert promoted and promoted[0]["router"] >= 1 and set(promoted[0]) == {"router", "replay"}
    assert outcome.production_version is not None
    assert outcome.decisions == sum(p.requests for p in outcome.phases) == outcome.decisions_with_propensity
    assert 0 < sum(p.explored for p in outcome.phases) < outcome.decisions / 5
