"""The cl-plugin command."""

from __future__ import annotations

import sqlite3

import pytest

from cl_plugin.cli import main


def test_demo_logs_the_stream_into_sqlite_and_prints_statistics(tmp_path, capsys) -> None:
    assert main(["demo", "--interactions", "400", "--storage", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "logged 400 interactions" in out
    assert "stored 400 (written 400" in out
    with sqlite3.connect(tmp_path / "interactions.db") as conn:
        assert conn.execute("SELECT count(*) FROM interactions").fetchone()[0] == 400
    assert list((tmp_path / "backups").glob("interactions-*.jsonl.gz"))
    assert "queries whose PII was redacted before storage" in out


def test_unknown_subcommand_exits_with_usage(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["nope"])
    assert exc.value.code == 2
    assert "invalid choice" in capsys.readouterr().err
