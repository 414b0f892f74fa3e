"""The distribution: every package folder ships, and the repository's graphs/ installs as cl_plugin.graphs,
so a user's project with its own ``graphs`` package imports both."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _declared() -> tuple[list[str], dict[str, str]]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    return config["packages"], config["package-dir"]


def test_every_package_folder_is_declared_and_graphs_installs_under_cl_plugin() -> None:
    packages, folders = _declared()
    assert folders == {"cl_plugin.graphs": "graphs"}
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "cl_plugin").rglob("__init__.py")}
    found |= {
        ".".join(("cl_plugin", *p.parent.relative_to(ROOT).parts))
        for p in (ROOT / "graphs").rglob("__init__.py")
    }
    assert set(packages) == found


def test_nothing_imports_the_repository_folder_as_a_top_level_graphs_package() -> None:
    offenders = []
    for path in [*ROOT.glob("cl_plugin/**/*.py"), *ROOT.glob("graphs/**/*.py"), *ROOT.glob("tests/**/*.py")]:
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            words = line.split()
            if words[:2] in (["import", "graphs"], ["from", "graphs"]) or (
                words[:1] in (["import"], ["from"]) and len(words) > 1 and words[1].startswith("graphs.")
            ):
                offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert offenders == []


@pytest.mark.slow
def test_the_wheel_imports_from_a_project_with_its_own_graphs_package(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(wheels),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = wheels.glob("cl_plugin-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q", str(wheel)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    # The dependencies come from this environment's site-packages, added as a plain path: its .pth files
    # (among them the editable install of this checkout) are not read, so cl_plugin comes from the wheel.
    site = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    project = tmp_path / "project"
    (project / "graphs").mkdir(parents=True)
    (project / "graphs" / "__init__.py").write_text("MINE = True\n")
    (project / "graphs" / "maintenance.py").write_text("OWN = 'the user graph package'\n")
    script = """
import graphs, graphs.maintenance, cl_plugin
from cl_plugin.maintenance import build_maintenance_graph, run_maintenance
from cl_plugin.graphs.mcts_agents import build_mcts_agent_graph
from cl_plugin.store import Store
assert graphs.MINE and graphs.maintenance.OWN == 'the user graph package'
assert 'site-packages' in cl_plugin.__file__, cl_plugin.__file__
build_mcts_agent_graph().compile()
store = Store.from_url('sqlite://').setup()
state = run_maintenance(store, config={'maintenance': {'min_interactions': 1}})
from starlette.testclient import TestClient
from cl_plugin.web import create_app
web = TestClient(create_app(store))  # the templates and the script ship in the wheel
assert web.get('/').status_code == 200 and web.get('/static/live.js').status_code == 200
print(state['status'])
"""
    done = subprocess.run(
        [str(python), "-c", script], cwd=project, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] in ("completed", "skipped")
    assert (venv / "bin" / "cl-plugin").exists()
