"""The cl-plugin command."""

from __future__ import annotations

import sqlite3

import pytest

from cl_plugin.cli import main


def test_demo_runs_traffic_through_the_graph_into_sqlite_and_reports(tmp_path, capsys) -> None:
    assert main(["demo", "--interactions", "60", "--storage", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "ran 60 simulated production queries" in out
    assert "stored 60 interactions" in out
    with sqlite3.connect(tmp_path / "interactions.db") as conn:
        assert conn.execute("SELECT count(*) FROM interactions").fetchone()[0] == 60
        assert conn.execute("SELECT count(*) FROM node_runs").fetchone()[0] > 60 * 5
        kinds = dict(conn.execute("SELECT kind, count(*) FROM decisions GROUP BY kind").fetchall())
        assert kinds["route"] >= 60 and kinds["consensus"] >= 60
        assert conn.execute("SELECT count(*) FROM feedback").fetchone()[0] > 0
    assert "queries whose PII was redacted before storage" in out


def test_unknown_subcommand_exits_with_usage(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["nope"])
    assert exc.value.code == 2
    assert "invalid choice" in capsys.readouterr().err
